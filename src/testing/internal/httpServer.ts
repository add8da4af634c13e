/**
 * The `node:http` plumbing of the `MockMoonServer`: replies, one exchange per
 * request, reading a bounded body, timers and sockets that die with the
 * server. Nothing here knows about Moon; the routes and faults do.
 *
 * Not public API: the package's exports keep `internal/` private.
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as Http from "node:http"
import type * as Net from "node:net"
import type { Fault, Outcome } from "../MockMoonServer.js"

/** An answer to send whole. */
export interface Reply {
  readonly status: number
  readonly contentType: string
  readonly body: string
  readonly headers?: Readonly<Record<string, string>> | undefined
}

export const json = (status: number, body: unknown, headers?: Readonly<Record<string, string>>): Reply => ({
  status,
  contentType: "application/json; charset=utf-8",
  body: JSON.stringify(body),
  headers
})

/** The server's record of a request, filled in as it is handled. Never holds a token. */
export interface RequestRecord {
  method: string
  path: string
  at: number
  status: number | undefined
  outcome: Outcome
  fault: Fault["_tag"] | undefined
  bearer: boolean
}

/** One request and its response. */
export interface Exchange {
  readonly req: Http.IncomingMessage
  readonly res: Http.ServerResponse
  readonly record: RequestRecord
  /** Whether the connection closed (the client hung up, or the answer was sent). */
  readonly closed: () => boolean
  /** The value of the `Date` header of the answer. */
  readonly date: () => string
  /** Headers every answer to this request carries (CORS, for an allowed origin). */
  readonly headers: Readonly<Record<string, string>>
}

export const makeExchange = (
  req: Http.IncomingMessage,
  res: Http.ServerResponse,
  at: number,
  date: () => string,
  headers: Readonly<Record<string, string>> = {}
): Exchange => {
  const record: RequestRecord = {
    method: req.method ?? "GET",
    path: pathOf(req.url),
    at,
    status: undefined,
    outcome: "pending",
    fault: undefined,
    bearer: /^Bearer\s/i.test(req.headers.authorization ?? "")
  }
  let closed = false
  res.once("close", () => {
    closed = true
  })
  return { req, res, record, closed: () => closed, date, headers }
}

// The query string can carry a token; the record keeps the path only.
const pathOf = (url: string | undefined): string => {
  const raw = url ?? "/"
  const query = raw.search(/[?#]/)
  return query === -1 ? raw : raw.slice(0, query)
}

/** The one place a status line and headers are written, so every response gets the same treatment. */
export const writeHead = (exchange: Exchange, reply: Reply, length?: number): void => {
  exchange.record.status = reply.status
  exchange.res.writeHead(reply.status, {
    date: exchange.date(),
    "content-type": reply.contentType,
    ...(length === undefined ? {} : { "content-length": String(length) }),
    ...exchange.headers,
    ...reply.headers
  })
}

export const send = (exchange: Exchange, reply: Reply): void => {
  if (exchange.res.destroyed) return
  writeHead(exchange, reply, Buffer.byteLength(reply.body))
  exchange.res.end(reply.body)
}

/** An RST, not a FIN: what a crashed process or a dropped proxy connection looks like. */
export const reset = (exchange: Exchange): void => {
  const socket = exchange.req.socket
  if (typeof socket.resetAndDestroy === "function") socket.resetAndDestroy()
  else socket.destroy()
}

/** Reads the request body, giving up (and draining the rest) past `maxBytes`. */
export const readBody = (
  req: Http.IncomingMessage,
  maxBytes: number,
  onBody: (body: string, tooLarge: boolean) => void
): void => {
  const chunks: Array<Buffer> = []
  let size = 0
  req.on("data", (chunk: Buffer) => {
    size += chunk.length
    if (size <= maxBytes) chunks.push(chunk)
  })
  req.once("end", () => onBody(Buffer.concat(chunks).toString("utf8"), size > maxBytes))
  // The client went away mid-request: nothing to answer.
  req.once("error", () => {})
}

/** Real-time callbacks that are cancelled when the server stops. */
export interface Timers {
  readonly later: (millis: number, f: () => void) => void
  readonly clear: () => void
}

export const makeTimers = (): Timers => {
  const pending = new Set<ReturnType<typeof setTimeout>>()
  return {
    later: (millis, f) => {
      const timer = setTimeout(() => {
        pending.delete(timer)
        f()
      }, Math.max(0, millis))
      pending.add(timer)
    },
    clear: () => {
      for (const timer of pending) clearTimeout(timer)
      pending.clear()
    }
  }
}

/**
 * Listens on 127.0.0.1 until the scope closes; then stops accepting, cancels
 * `timers` and cuts every open connection. Gives the port.
 */
export const listen = (
  port: number,
  onRequest: Http.RequestListener,
  timers: Timers
): Effect.Effect<number, never, Scope.Scope> =>
  Effect.map(
    Effect.acquireRelease(
      Effect.callback<{ readonly server: Http.Server; readonly sockets: Set<Net.Socket> }>((resume) => {
        const sockets = new Set<Net.Socket>()
        const server = Http.createServer(onRequest)
        server.on("connection", (socket) => {
          sockets.add(socket)
          socket.once("close", () => sockets.delete(socket))
        })
        server.once("error", (error) => resume(Effect.die(error)))
        server.listen(port, "127.0.0.1", () => resume(Effect.succeed({ server, sockets })))
      }),
      ({ server, sockets }) =>
        Effect.callback<void>((resume) => {
          timers.clear()
          server.close(() => resume(Effect.void))
          // `close` only stops accepting; keep-alive and stalled connections must be cut.
          for (const socket of sockets) socket.destroy()
        })
    ),
    ({ server }) => {
      const address = server.address()
      return typeof address === "object" && address !== null ? address.port : 0
    }
  )

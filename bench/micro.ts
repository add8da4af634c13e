/**
 * The pieces of one refresh, each timed alone (CPU time of this process, no
 * network), to say what in `src/` costs what. Every iteration first waits one
 * `setImmediate`, as a real response would arrive in a later macrotask: without
 * it, a loop that never suspends hits Effect's scheduler yield (a
 * `setImmediate` every 2,048 operations, wherever each piece's count puts it)
 * and measures that too. The cost of that wait alone is measured and
 * subtracted. Two rows are whole refreshes over a transport in this process,
 * a bare POST and `RefreshClient.refresh`: their difference is our code's CPU
 * per refresh, without a socket's cost or noise. The section runs compiled,
 * as users run the library (see `compiled.ts`).
 */
import { Effect, Option, Redacted, Stream } from "effect"
import { HttpClient, HttpClientRequest, HttpClientResponse } from "effect/http"
import { retry, timeoutFail } from "../src/internal/attempt.js"
import { readBodyCapped } from "../src/internal/http.js"
import * as Moon from "../src/internal/moon.js"
import * as RefreshClient from "../src/RefreshClient.js"
import * as RefreshError from "../src/RefreshError.js"
import * as RefreshPolicy from "../src/RefreshPolicy.js"
import * as Session from "../src/Session.js"
import { median, rotate } from "./harness.js"

export interface MicroRow {
  readonly piece: string
  /** Where it is in `src/`. */
  readonly source: string
  /** CPU microseconds per call, the tick subtracted; median over rounds. */
  readonly cpuMicros: number
}

// The body the bench server sends (same sizes).
const pad = "x".repeat(640)
const body = JSON.stringify({
  access_token: `at.1.${pad}`,
  token_type: "bearer",
  expires_in: 3600,
  expires_at: Math.floor(Date.now() / 1000) + 3600,
  refresh_token: `rt.2.${pad}`,
  user: {
    id: "8d0e7a52-6f2a-4c1e-9a3b-4f5d6e7a8b9c",
    aud: "authenticated",
    role: "authenticated",
    email: "bench@example.com",
    app_metadata: { provider: "email", providers: ["email"] },
    user_metadata: {},
    identities: []
  }
})
const request = HttpClientRequest.post("http://127.0.0.1/auth/refresh")
// A chunked answer: one 2 KB chunk, no Content-Length.
const response = () =>
  HttpClientResponse.fromWeb(
    request,
    new Response(new Blob([body]).stream(), { headers: { "content-type": "application/json" } })
  )
// The same answer from a client whose web Response `HttpClientResponse.toWeb`
// does not give (NodeHttpClient, a test double, a user's own client): read
// through the public `stream`.
const unknownResponse = (): HttpClientResponse.HttpClientResponse => {
  const inner = response()
  return {
    ...Object.fromEntries(
      ["request", "status", "headers", "cookies", "remoteAddress"].map((k) => [k, inner[k as keyof typeof inner]])
    ),
    stream: inner.stream,
    text: inner.text
  } as unknown as HttpClientResponse.HttpClientResponse
}
const fields = {
  accessToken: Redacted.make(`at.1.${pad}`),
  refreshToken: Redacted.make(`rt.2.${pad}`),
  expiresAt: Session.unsafeMake({ accessToken: "a", refreshToken: "r", expiresAt: 0, user: { id: "u" } }).expiresAt,
  tokenType: "bearer",
  user: { id: "u", email: "bench@example.com" }
}
// A transport in this process: it reads the request's body, as a socket
// would, and answers with the bench server's body from a web `Response`, as
// `fetch` does. With it, a refresh and a bare POST differ by our code alone.
const readAll = async (stream: ReadableStream<Uint8Array>) => {
  const reader = stream.getReader()
  while (!(await reader.read()).done);
}
const inProcess = HttpClient.make((sent) => {
  const sending = sent.body
  return Effect.andThen(
    sending._tag === "Raw" && sending.body instanceof ReadableStream
      ? Effect.promise(() => readAll(sending.body as ReadableStream<Uint8Array>))
      : sending._tag === "Stream"
      ? Effect.orDie(Stream.runDrain(sending.stream))
      : Effect.void,
    Effect.sync(() =>
      HttpClientResponse.fromWeb(
        sent,
        new Response(body, { status: 200, headers: { "content-type": "application/json" } })
      )
    )
  )
})
const inProcessUrl = "http://127.0.0.1:1/auth/refresh"
// Built on first use: every isolated section's process loads this module.
let refreshClient: RefreshClient.Service | undefined
const refreshClientOnce = () =>
  refreshClient ??= Effect.runSync(
    RefreshClient.make({ baseUrl: "http://127.0.0.1:1" }).pipe(Effect.provideService(HttpClient.HttpClient, inProcess))
  )
const bareRequest = (token: string) =>
  HttpClientRequest.post(inProcessUrl).pipe(
    HttpClientRequest.acceptJson,
    HttpClientRequest.bodyUint8Array(
      new TextEncoder().encode(JSON.stringify({ refresh_token: token })),
      "application/json"
    )
  )
const timeoutError = () => new RefreshError.TransportError({ reason: "Timeout", message: "timeout" })

interface Piece {
  readonly piece: string
  readonly source: string
  readonly effect: () => Effect.Effect<unknown, unknown>
}

const pieces: ReadonlyArray<Piece> = [
  { piece: "(tick: one setImmediate wait)", source: "subtracted from every row", effect: () => Effect.void },
  { piece: "response.text", source: "(effect/http)", effect: () => response().text },
  {
    piece: "readBodyCapped: a fetch body (toWeb), a reader loop",
    source: "src/internal/http.ts readBodyCapped",
    effect: () => readBodyCapped(response())
  },
  {
    piece: "readBodyCapped: any other response, Stream.runForEachArray",
    source: "src/internal/http.ts readStream",
    effect: () => readBodyCapped(unknownResponse())
  },
  { piece: "JSON.parse of the body", source: "(floor)", effect: () => Effect.sync(() => JSON.parse(body)) },
  {
    piece: "decodeSuccess (JSON.parse + Schema + new Session)",
    source: "src/internal/moon.ts decodeSuccess",
    effect: () => Moon.decodeSuccess(200, body, Option.none(), (text) => text)
  },
  {
    piece: "new Session(fields), validating",
    source: "(what the checks would cost)",
    effect: () => Effect.sync(() => new Session.Session(fields))
  },
  {
    piece: "new Session(fields, { disableChecks: true })",
    source: "src/internal/wire.ts toSession, src/Session.ts make",
    effect: () => Effect.sync(() => new Session.Session(fields, { disableChecks: true }))
  },
  {
    piece: "Effect.timeoutOrElse around a succeeding effect",
    source: "(Effect's own: two forked fibers)",
    effect: () =>
      Effect.timeoutOrElse(Effect.void, {
        duration: RefreshClient.defaultTimeout,
        orElse: () => Effect.fail(timeoutError())
      })
  },
  {
    piece: "timeoutFail (one fork, a plain timer) around the same",
    source: "src/internal/attempt.ts timeoutFail",
    effect: () => timeoutFail({ duration: RefreshClient.defaultTimeout, onTimeout: timeoutError })(Effect.void)
  },
  {
    piece: "Effect.retry(defaultPolicy) around a succeeding effect",
    source: "(what RefreshClient used)",
    effect: () =>
      Effect.retry(Effect.void as Effect.Effect<void, RefreshError.RefreshError>, {
        schedule: RefreshPolicy.defaultPolicy,
        while: RefreshError.isRetryable
      })
  },
  {
    piece: "retry(defaultPolicy), started on the first failure, around the same",
    source: "src/internal/attempt.ts retry",
    effect: () =>
      retry({ schedule: RefreshPolicy.defaultPolicy, while: RefreshError.isRetryable })(
        Effect.void as Effect.Effect<void, RefreshError.RefreshError>
      )
  },
  {
    piece: "a bare POST + text + JSON.parse, over a transport in this process",
    source: "(the floor's work, without a socket)",
    effect: () =>
      Effect.flatMap(inProcess.execute(bareRequest("rt.1")), (answer) => Effect.map(answer.text, JSON.parse))
  },
  {
    piece: "RefreshClient.refresh, over the same transport",
    source: "src/RefreshClient.ts (less the row above: our code's CPU per refresh)",
    effect: () => refreshClientOnce().refresh(Redacted.make("rt.1"))
  },
  {
    piece: "Effect.withSpan (stack trace captured: default)",
    source: "(Effect's default)",
    effect: () => Effect.withSpan(Effect.void, "moon-refresh/refresh", { kind: "client", attributes: { url: "x" } })
  },
  {
    piece: "Effect.withSpan, captureStackTrace: false",
    source: "src/RefreshClient.ts, src/internal/session/cell.ts",
    effect: () =>
      Effect.withSpan(Effect.void, "moon-refresh/refresh", {
        kind: "client",
        attributes: { url: "x" },
        captureStackTrace: false
      })
  }
]

const tick = Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))

const cpuPerCall = async (piece: Piece, calls: number): Promise<number> => {
  const program = Effect.gen(function*() {
    for (let i = 0; i < calls; i++) {
      yield* tick
      yield* piece.effect()
    }
  })
  const before = process.cpuUsage()
  await Effect.runPromise(program)
  const used = process.cpuUsage(before)
  return (used.user + used.system) / calls
}

export const measureMicro = async (options: { readonly calls: number; readonly rounds: number }) => {
  const samples = new Map<string, Array<number>>(pieces.map((piece) => [piece.piece, []]))
  for (const piece of pieces) await cpuPerCall(piece, Math.min(500, options.calls))
  for (let round = 0; round < options.rounds; round++) {
    for (const piece of rotate(pieces, round)) samples.get(piece.piece)!.push(await cpuPerCall(piece, options.calls))
  }
  const tickMicros = median(samples.get(pieces[0]!.piece)!)
  return {
    tickMicros,
    rows: pieces.slice(1).map((piece): MicroRow => ({
      piece: piece.piece,
      source: piece.source,
      cpuMicros: Math.max(0, median(samples.get(piece.piece)!) - tickMicros)
    }))
  }
}

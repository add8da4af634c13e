/**
 * A Moon-compatible HTTP server for tests: a real `node:http` server on
 * 127.0.0.1 that speaks `POST /auth/refresh` the way Moon (Supabase behind it)
 * does, plus a `GET /protected` route that checks access tokens.
 *
 * - Access tokens live `accessTokenLifetime` seconds; the session body carries
 *   `expires_in` and `expires_at`, bare or wrapped in `{ token: … }`.
 * - Refresh tokens are one-time: a rotation spends the old one. Presenting a
 *   spent token again is reuse: it is rejected with
 *   `500 {"error_code":"refresh_token_already_used",…}` and, as Supabase does,
 *   the whole session (every token of the chain) is revoked. Within the
 *   optional `reuseWindow`, a reuse of the token spent last is instead answered
 *   with the same new refresh token (and a fresh access token).
 * - Each request to `/auth/refresh` can be scripted with a {@link Fault}.
 * - It counts and records requests without ever keeping a token in anything it
 *   returns, logs or prints.
 *
 * Its clock is `Date.now` unless `now` is given, so tests can drive token
 * expiry and the reuse window without waiting.
 *
 * @since 0.1.0
 */
import type { HttpClient } from "@effect/platform"
import type { Scope } from "effect"
import { Context, Data, DateTime, Duration, Effect, Layer, Redacted, Runtime } from "effect"
import { randomBytes, randomUUID } from "node:crypto"
import * as Http from "node:http"
import type * as Net from "node:net"
import * as RefreshClient from "../RefreshClient.js"
import type * as Session from "../Session.js"

// ---------------------------------------------------------------------------
// Models
// ---------------------------------------------------------------------------

/**
 * What to do to one request to `POST /auth/refresh`, instead of (or around)
 * answering it normally. Faults are queued with `script` and consumed one per
 * request, in order; a request with no fault queued is answered normally.
 *
 * "Rotates" below means the server spends the refresh token and issues a new
 * one, exactly as a normal answer would, whether or not the client gets to
 * read it.
 *
 * - `Status`: answer `status` with `body` (a string is sent as is, as HTML when
 *   it starts with `<`, else as plain text; anything else as JSON), without
 *   looking at the token. Does not rotate.
 * - `Delay`: wait `millis`, then answer normally. If the client hung up during
 *   the wait, nothing is processed: the token is not spent.
 * - `Reset`: read the request, then reset the connection without answering.
 *   Does not rotate.
 * - `ResetAfterRotate`: rotate, then reset the connection: the client never
 *   sees the new refresh token and its old one is spent.
 * - `SlowBody`: rotate, send the headers and half the body, then the rest
 *   `millis` later (unless the client hung up by then).
 * - `Truncated`: rotate, send the headers (with the full `Content-Length`) and
 *   half the body, then close the connection.
 * - `RetryAfter`: answer `status` (429 or 503, typically) with a
 *   `Retry-After: value` header and a Supabase rate-limit body. Does not rotate.
 * - `Oversized`: answer 200 with a JSON body of exactly `bytes` bytes that is
 *   not a session, with a `Content-Length` (or, with `chunked`, without one,
 *   streamed in 64 KiB chunks until the client stops reading). Does not rotate.
 * - `WrongContentType`: the normal answer (rotates) under another
 *   `Content-Type` (default `text/html; charset=utf-8`).
 *
 * @since 0.1.0
 * @category models
 */
export type Fault = Data.TaggedEnum<{
  Status: {
    readonly status: number
    readonly body?: unknown
    readonly contentType?: string | undefined
    readonly headers?: Readonly<Record<string, string>> | undefined
  }
  Delay: { readonly millis: number }
  Reset: {}
  ResetAfterRotate: {}
  SlowBody: { readonly millis: number }
  Truncated: {}
  RetryAfter: { readonly status: number; readonly value: string | number }
  Oversized: { readonly bytes: number; readonly chunked?: boolean | undefined }
  WrongContentType: { readonly contentType?: string | undefined }
}>

/**
 * Constructors and matchers for {@link Fault}: `Fault.Status({ status: 500 })`,
 * `Fault.Reset()`, `Fault.$is("Delay")`. Plain objects with a `_tag` work too.
 *
 * @since 0.1.0
 * @category constructors
 */
export const Fault = Data.taggedEnum<Fault>()

/**
 * The shape of a successful refresh body: a bare Supabase session, or one
 * wrapped in `{ token: … }` as Moon's sibling endpoints send it.
 *
 * @since 0.1.0
 * @category models
 */
export type BodyShape = "bare" | "wrapped"

/**
 * A user object for the sessions the server issues. Missing fields take the
 * defaults (`id` `"mock-user-1"`, `email` `"user@example.com"`); any other
 * field is sent as given. An `email` of `null` is sent as `null`, as Supabase
 * does for a user who signed in by phone.
 *
 * @since 0.1.0
 * @category models
 */
export interface UserInput {
  readonly id?: string | undefined
  readonly email?: string | null | undefined
  readonly [key: string]: unknown
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Default 0: an ephemeral port chosen by the OS. The server listens on 127.0.0.1 only. */
  readonly port?: number | undefined
  /** Lifetime of an access token, in whole seconds (the unit of `expires_in`). Default 3600. */
  readonly accessTokenLifetime?: number | undefined
  /** Default `"bare"`. */
  readonly bodyShape?: BodyShape | undefined
  /**
   * How long after a rotation the spent token may be presented again and get
   * the same new refresh token back, as Supabase's reuse interval (about 10 s
   * there). A number is milliseconds. Default 0: every reuse is rejected,
   * which is what a test that hunts for double refreshes wants.
   */
  readonly reuseWindow?: Duration.DurationInput | undefined
  /**
   * The server's clock, in epoch milliseconds. Default `Date.now`. It decides
   * `expires_at`, access-token expiry on `/protected`, the reuse window and the
   * `at` of recorded requests. (Delays of scripted faults are real time.)
   *
   * To follow Effect's `Clock` (a `TestClock` included), read it through the
   * test's runtime: `const runtime = yield* Effect.runtime<never>()`, then
   * `now: () => Runtime.runSync(runtime)(Clock.currentTimeMillis)`.
   */
  readonly now?: (() => number) | undefined
  /** The user of sessions issued without one. */
  readonly user?: UserInput | undefined
}

/**
 * A session seeded with {@link Service.issueSession}. It has the fields
 * `Session.make` takes, so `Session.unsafeMake(issued)` turns it into a `Session`.
 *
 * @since 0.1.0
 * @category models
 */
export interface IssuedSession {
  readonly accessToken: Redacted.Redacted<string>
  readonly refreshToken: Redacted.Redacted<string>
  readonly expiresAt: DateTime.Utc
  readonly tokenType: string
  readonly user: Session.User
}

/**
 * Counters since the server started.
 *
 * @since 0.1.0
 * @category models
 */
export interface Stats {
  /** Every request to `POST /auth/refresh`, scripted or not. */
  readonly refreshRequests: number
  /** Refresh tokens spent and replaced (including by `ResetAfterRotate`, `SlowBody`, …). */
  readonly rotations: number
  /** Spent or revoked refresh tokens presented again and rejected. */
  readonly reuseRejections: number
  /** Reuses inside the reuse window, answered with the existing new token. */
  readonly reusesTolerated: number
  /** Refresh tokens the server never issued, or whose session was revoked with `revokeSession`. */
  readonly unknownTokens: number
  /** Scripted faults applied. */
  readonly faults: number
  /** Every request to `GET /protected`. */
  readonly protectedRequests: number
  /** `/protected` requests answered 401. */
  readonly unauthorized: number
}

/**
 * What the server did with a request.
 *
 * @since 0.1.0
 * @category models
 */
export type Outcome =
  | "pending"
  | "rotated"
  | "reuse-tolerated"
  | "reuse-rejected"
  | "unknown-token"
  | "bad-request"
  | "scripted"
  | "client-gone"
  | "authorized"
  | "unauthorized"
  | "not-found"
  | "error"

/**
 * One request as the server saw it. Never holds a token: the path is kept
 * without its query string, and bodies and headers are not kept at all.
 *
 * @since 0.1.0
 * @category models
 */
export interface RecordedRequest {
  readonly method: string
  /** The path, without the query string. */
  readonly path: string
  /** When it arrived, by the server's clock (epoch milliseconds). */
  readonly at: number
  /** The status sent, or `undefined` when no status line was sent (a reset). */
  readonly status: number | undefined
  readonly outcome: Outcome
  /** The scripted fault applied to it, if any. */
  readonly fault: Fault["_tag"] | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Service {
  /** The base URL, `http://127.0.0.1:PORT`, without a trailing slash. */
  readonly url: string
  readonly port: number
  /** Starts a new session (a new chain of refresh tokens) and returns its first tokens. */
  readonly issueSession: (options?: { readonly user?: UserInput | undefined }) => Effect.Effect<IssuedSession>
  /** Queues faults for the next requests to `POST /auth/refresh`, one per request, in order. */
  readonly script: (...faults: ReadonlyArray<Fault>) => Effect.Effect<void>
  /** Faults queued and not yet applied. */
  readonly pendingFaults: Effect.Effect<number>
  readonly stats: Effect.Effect<Stats>
  /** Every request so far, oldest first. */
  readonly requests: Effect.Effect<ReadonlyArray<RecordedRequest>>
  /**
   * Whether this refresh token would rotate if presented now: it was issued
   * by this server, is the newest of its chain, and the chain is not revoked.
   */
  readonly isLive: (refreshToken: Redacted.Redacted<string> | string) => Effect.Effect<boolean>
  /**
   * Signs the session out server-side (as a sign-out elsewhere would): every
   * token of the chain this refresh token belongs to stops working, and
   * refreshing with any of them answers `refresh_token_not_found`.
   */
  readonly revokeSession: (refreshToken: Redacted.Redacted<string> | string) => Effect.Effect<void>
  /** Every access and refresh token issued so far, for tests that audit output for leaks. */
  readonly issuedTokens: Effect.Effect<ReadonlyArray<Redacted.Redacted<string>>>
}

/**
 * @since 0.1.0
 * @category tags
 */
export class MockMoonServer extends Context.Tag("moon-refresh/testing/MockMoonServer")<MockMoonServer, Service>() {}

// ---------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------

// The user as sent on the wire (`email` may be `null` there).
interface WireUser {
  readonly id: string
  readonly email: string | null
  readonly [key: string]: unknown
}

// The user as a decoded `Session` holds it: a `null` email is absent.
const toSessionUser = ({ email, ...rest }: WireUser): Session.User => (email === null ? rest : { ...rest, email })

interface Chain {
  readonly id: string
  readonly user: WireUser
  current: string
  // "reuse": Supabase's reuse detection revoked the family; "signout": `revokeSession`.
  revoked: "reuse" | "signout" | undefined
}

interface RefreshRecord {
  readonly chain: Chain
  usedAt: number | undefined
  successor: string | undefined
}

interface AccessRecord {
  readonly chain: Chain
  readonly expiresAtMillis: number
}

interface MutableRecord {
  method: string
  path: string
  at: number
  status: number | undefined
  outcome: Outcome
  fault: Fault["_tag"] | undefined
}

interface Reply {
  readonly status: number
  readonly contentType: string
  readonly body: string
  readonly headers?: Readonly<Record<string, string>> | undefined
}

const refreshPath = "/auth/refresh"
const protectedPath = "/protected"
// A refresh request is one short JSON field; anything much larger is not one.
const maxRequestBytes = 64 * 1024

const json = (status: number, body: unknown, headers?: Readonly<Record<string, string>>): Reply => ({
  status,
  contentType: "application/json; charset=utf-8",
  body: JSON.stringify(body),
  headers
})

// Moon answers a failed refresh with a 500 carrying Supabase's error.
const moonError = (code: string, msg: string): Reply => json(500, { error_code: code, msg })

const alreadyUsed = () => moonError("refresh_token_already_used", "Invalid Refresh Token: Already Used")
const notFound = () => moonError("refresh_token_not_found", "Invalid Refresh Token: Refresh Token Not Found")

// What Moon's request validation (NestJS) answers to a body without a refresh token.
const badRequest = (message: string): Reply => json(400, { statusCode: 400, message: [message], error: "Bad Request" })

const unauthorizedReply = (code: string, msg: string): Reply =>
  json(401, { code: 401, error_code: code, msg }, { "www-authenticate": `Bearer error="invalid_token"` })

const base64url = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString("base64url")

const newRefreshToken = (): string => randomBytes(18).toString("base64url")

// Shaped like Supabase's JWT (so code that peeks at `exp` works), but the
// signature is random: the server knows its tokens by lookup, not by verifying.
const newAccessToken = (chain: Chain, iat: number, exp: number): string =>
  [
    base64url({ alg: "HS256", typ: "JWT" }),
    base64url({
      aud: "authenticated",
      exp,
      iat,
      sub: chain.user.id,
      email: chain.user.email,
      role: "authenticated",
      session_id: chain.id
    }),
    randomBytes(32).toString("base64url")
  ].join(".")

const pathOf = (url: string | undefined): string => {
  const raw = url ?? "/"
  const query = raw.search(/[?#]/)
  return query === -1 ? raw : raw.slice(0, query)
}

const replyFor = (fault: Extract<Fault, { readonly _tag: "Status" }>): Reply => {
  const body = fault.body
  if (body === undefined) {
    return { status: fault.status, contentType: fault.contentType ?? "text/plain", body: "", headers: fault.headers }
  }
  if (typeof body === "string") {
    const contentType = fault.contentType ?? (/^\s*</.test(body) ? "text/html; charset=utf-8" : "text/plain")
    return { status: fault.status, contentType, body, headers: fault.headers }
  }
  return {
    status: fault.status,
    contentType: fault.contentType ?? "application/json; charset=utf-8",
    body: JSON.stringify(body),
    headers: fault.headers
  }
}

const validateOptions = (options: Options) => {
  const lifetime = options.accessTokenLifetime ?? 3600
  if (!Number.isInteger(lifetime) || lifetime < 1) {
    return Effect.dieMessage(`MockMoonServer: option "accessTokenLifetime" must be a whole number of seconds >= 1`)
  }
  const window = Duration.decodeUnknown(options.reuseWindow ?? 0)
  if (window._tag === "None" || !Duration.isFinite(window.value)) {
    return Effect.dieMessage(`MockMoonServer: option "reuseWindow" must be a finite duration`)
  }
  return Effect.succeed({ lifetime, reuseWindowMillis: Duration.toMillis(window.value) })
}

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------

/**
 * Starts a server on 127.0.0.1 and stops it when the scope closes: the
 * listener is closed, open connections are destroyed and pending scripted
 * delays are cancelled.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<Service, never, Scope.Scope> =>
  Effect.gen(function*() {
    const { lifetime, reuseWindowMillis } = yield* validateOptions(options)
    const now = options.now ?? Date.now
    const bodyShape = options.bodyShape ?? "bare"
    const defaultUser = options.user
    // Logs go through the caller's runtime, so its logger and log level apply.
    const runtime = yield* Effect.runtime<never>()

    const refreshTokens = new Map<string, RefreshRecord>()
    const accessTokens = new Map<string, AccessRecord>()
    const issued: Array<Redacted.Redacted<string>> = []
    const records: Array<MutableRecord> = []
    const faults: Array<Fault> = []
    const sockets = new Set<Net.Socket>()
    const timers = new Set<ReturnType<typeof setTimeout>>()
    const stats = {
      refreshRequests: 0,
      rotations: 0,
      reuseRejections: 0,
      reusesTolerated: 0,
      unknownTokens: 0,
      faults: 0,
      protectedRequests: 0,
      unauthorized: 0
    }

    const later = (millis: number, f: () => void) => {
      const timer = setTimeout(() => {
        timers.delete(timer)
        f()
      }, Math.max(0, millis))
      timers.add(timer)
    }

    const makeUser = (input: UserInput | undefined): WireUser => {
      const merged = { ...defaultUser, ...input }
      return {
        aud: "authenticated",
        role: "authenticated",
        app_metadata: { provider: "email", providers: ["email"] },
        user_metadata: {},
        ...merged,
        id: merged.id ?? "mock-user-1",
        email: merged.email === undefined ? "user@example.com" : merged.email
      }
    }

    const remember = (token: string) => {
      issued.push(Redacted.make(token))
      return token
    }

    const issueAccess = (chain: Chain) => {
      const iat = Math.floor(now() / 1000)
      const exp = iat + lifetime
      const token = remember(newAccessToken(chain, iat, exp))
      accessTokens.set(token, { chain, expiresAtMillis: exp * 1000 })
      return { token, exp }
    }

    const sessionReply = (chain: Chain, refreshToken: string): Reply => {
      const access = issueAccess(chain)
      const session = {
        access_token: access.token,
        token_type: "bearer",
        expires_in: lifetime,
        expires_at: access.exp,
        refresh_token: refreshToken,
        user: chain.user
      }
      return json(200, bodyShape === "wrapped" ? { token: session } : session)
    }

    // The refresh grant, as Supabase runs it with rotation and reuse detection on.
    const refresh = (body: string, contentType: string | undefined, record: MutableRecord): Reply => {
      // Like Moon's JSON body parser, ignore a body that is not declared as JSON.
      let parsed: unknown = undefined
      if (/^application\/json\b/i.test(contentType ?? "")) {
        try {
          parsed = JSON.parse(body)
        } catch {
          record.outcome = "bad-request"
          return badRequest("body is not valid JSON")
        }
      }
      const token = typeof parsed === "object" && parsed !== null
        ? (parsed as Record<string, unknown>).refresh_token
        : undefined
      if (typeof token !== "string" || token === "") {
        record.outcome = "bad-request"
        return badRequest("refresh_token must be a non-empty string")
      }
      const found = refreshTokens.get(token)
      if (found === undefined || found.chain.revoked === "signout") {
        stats.unknownTokens++
        record.outcome = "unknown-token"
        return notFound()
      }
      const chain = found.chain
      if (found.usedAt === undefined && chain.revoked === undefined) {
        const next = remember(newRefreshToken())
        refreshTokens.set(next, { chain, usedAt: undefined, successor: undefined })
        found.usedAt = now()
        found.successor = next
        chain.current = next
        stats.rotations++
        record.outcome = "rotated"
        return sessionReply(chain, next)
      }
      if (
        chain.revoked === undefined && found.usedAt !== undefined && found.successor === chain.current &&
        now() - found.usedAt <= reuseWindowMillis
      ) {
        // Supabase's reuse interval: a client that lost the answer gets the same new refresh token back.
        stats.reusesTolerated++
        record.outcome = "reuse-tolerated"
        return sessionReply(chain, chain.current)
      }
      // Reuse detected: the whole family is revoked, so even the newest token is dead now.
      chain.revoked = "reuse"
      stats.reuseRejections++
      record.outcome = "reuse-rejected"
      return alreadyUsed()
    }

    const authorize = (header: string | undefined, record: MutableRecord): Reply => {
      const token = /^Bearer\s+(\S+)\s*$/i.exec(header ?? "")?.[1]
      const access = token === undefined ? undefined : accessTokens.get(token)
      let reply: Reply
      if (token === undefined) {
        reply = unauthorizedReply("no_authorization", "This endpoint requires a Bearer token")
      } else if (access === undefined || access.chain.revoked !== undefined) {
        reply = unauthorizedReply("bad_jwt", "invalid JWT: unable to parse or verify signature")
      } else if (now() >= access.expiresAtMillis) {
        reply = unauthorizedReply("bad_jwt", "invalid JWT: token has invalid claims: token is expired")
      } else {
        record.outcome = "authorized"
        return json(200, { ok: true, user: { id: access.chain.user.id, email: access.chain.user.email } })
      }
      stats.unauthorized++
      record.outcome = "unauthorized"
      return reply
    }

    const writeHead = (res: Http.ServerResponse, record: MutableRecord, reply: Reply, length?: number) => {
      record.status = reply.status
      res.writeHead(reply.status, {
        "content-type": reply.contentType,
        ...(length === undefined ? {} : { "content-length": String(length) }),
        ...reply.headers
      })
    }

    const send = (res: Http.ServerResponse, record: MutableRecord, reply: Reply) => {
      if (res.destroyed) return
      writeHead(res, record, reply, Buffer.byteLength(reply.body))
      res.end(reply.body)
    }

    const reset = (socket: Net.Socket) => {
      // An RST, not a FIN: what a crashed process or a dropped proxy connection looks like.
      if (typeof socket.resetAndDestroy === "function") socket.resetAndDestroy()
      else socket.destroy()
    }

    const sendOversized = (res: Http.ServerResponse, record: MutableRecord, bytes: number, chunked: boolean) => {
      const size = Math.max(0, Math.floor(bytes))
      const prefix = size >= 14 ? `{"padding":"` : ""
      const suffix = size >= 14 ? `"}` : ""
      let remaining = size - prefix.length - suffix.length
      const block = Buffer.alloc(64 * 1024, "x")
      writeHead(res, record, json(200, null), chunked ? undefined : size)
      res.write(prefix)
      // Respect backpressure and stop once the client is gone: a client that
      // refuses a large body should not make the server buffer all of it.
      const pump = () => {
        while (remaining > 0) {
          if (res.destroyed) return
          const n = Math.min(block.length, remaining)
          remaining -= n
          if (!res.write(n === block.length ? block : block.subarray(0, n))) {
            res.once("drain", pump)
            return
          }
        }
        if (!res.destroyed) res.end(suffix)
      }
      pump()
    }

    const handleRefresh = (req: Http.IncomingMessage, res: Http.ServerResponse, record: MutableRecord) => {
      stats.refreshRequests++
      // Taken on arrival, so faults apply in the order requests arrive.
      const fault = faults.shift()
      if (fault !== undefined) {
        stats.faults++
        record.fault = fault._tag
      }
      let clientGone = false
      let delaying = false
      res.once("close", () => {
        clientGone = true
        // Said at once, so a test can see the hang-up without waiting for the delay to end.
        if (delaying) record.outcome = "client-gone"
      })
      readBody(req, (body, tooLarge) => {
        if (tooLarge) {
          record.outcome = "bad-request"
          return send(res, record, json(413, { statusCode: 413, message: "request entity too large" }))
        }
        const answer = () => refresh(body, req.headers["content-type"], record)
        if (fault === undefined) return send(res, record, answer())
        switch (fault._tag) {
          case "Status": {
            record.outcome = "scripted"
            return send(res, record, replyFor(fault))
          }
          case "Delay": {
            delaying = true
            return later(fault.millis, () => {
              delaying = false
              if (!clientGone) send(res, record, answer())
            })
          }
          case "Reset": {
            record.outcome = "scripted"
            return reset(req.socket)
          }
          case "ResetAfterRotate": {
            answer()
            return reset(req.socket)
          }
          case "SlowBody": {
            const reply = answer()
            const bytes = Buffer.from(reply.body)
            const half = Math.floor(bytes.length / 2)
            writeHead(res, record, reply, bytes.length)
            res.write(bytes.subarray(0, half))
            return later(fault.millis, () => {
              if (!res.destroyed) res.end(bytes.subarray(half))
            })
          }
          case "Truncated": {
            const reply = answer()
            const bytes = Buffer.from(reply.body)
            writeHead(res, record, reply, bytes.length)
            // A FIN after the data (not an RST), so the client reads the half it was sent.
            return res.write(bytes.subarray(0, Math.floor(bytes.length / 2)), () => req.socket.destroy())
          }
          case "RetryAfter": {
            record.outcome = "scripted"
            return send(
              res,
              record,
              json(fault.status, { error_code: "over_request_rate_limit", msg: "Request rate limit reached" }, {
                "retry-after": String(fault.value)
              })
            )
          }
          case "Oversized": {
            record.outcome = "scripted"
            return sendOversized(res, record, fault.bytes, fault.chunked === true)
          }
          case "WrongContentType": {
            return send(res, record, { ...answer(), contentType: fault.contentType ?? "text/html; charset=utf-8" })
          }
        }
      })
    }

    const log = (record: MutableRecord) =>
      Runtime.runFork(runtime)(
        Effect.logDebug("MockMoonServer: request").pipe(
          Effect.annotateLogs({
            method: record.method,
            path: record.path,
            status: record.status ?? "none",
            outcome: record.outcome,
            fault: record.fault ?? "none"
          })
        )
      )

    const onRequest = (req: Http.IncomingMessage, res: Http.ServerResponse) => {
      const record: MutableRecord = {
        method: req.method ?? "GET",
        path: pathOf(req.url),
        at: now(),
        status: undefined,
        outcome: "pending",
        fault: undefined
      }
      records.push(record)
      res.once("close", () => log(record))
      try {
        if (record.path === refreshPath && record.method === "POST") return handleRefresh(req, res, record)
        req.resume()
        if (record.path === protectedPath && record.method === "GET") {
          stats.protectedRequests++
          return send(res, record, authorize(req.headers.authorization, record))
        }
        record.outcome = "not-found"
        send(res, record, json(404, { statusCode: 404, message: "Not Found" }))
      } catch (cause) {
        // A bug here must fail the request, not crash the test process.
        record.outcome = "error"
        Runtime.runFork(runtime)(Effect.logError("MockMoonServer: handler failed", cause))
        if (!res.headersSent) send(res, record, json(500, { msg: "MockMoonServer internal error" }))
        else res.destroy()
      }
    }

    const server = yield* Effect.acquireRelease(
      Effect.async<Http.Server>((resume) => {
        const server = Http.createServer(onRequest)
        server.on("connection", (socket) => {
          sockets.add(socket)
          socket.once("close", () => sockets.delete(socket))
        })
        server.once("error", (error) => resume(Effect.die(error)))
        server.listen(options.port ?? 0, "127.0.0.1", () => resume(Effect.succeed(server)))
      }),
      (server) =>
        Effect.async<void>((resume) => {
          for (const timer of timers) clearTimeout(timer)
          timers.clear()
          server.close(() => resume(Effect.void))
          // `close` only stops accepting; keep-alive and stalled connections must be cut.
          for (const socket of sockets) socket.destroy()
        })
    )

    const address = server.address()
    const port = typeof address === "object" && address !== null ? address.port : 0
    const unwrap = (token: Redacted.Redacted<string> | string) =>
      Redacted.isRedacted(token) ? Redacted.value(token) : token

    return {
      url: `http://127.0.0.1:${port}`,
      port,
      issueSession: (issueOptions) =>
        Effect.sync(() => {
          const refreshToken = remember(newRefreshToken())
          const chain: Chain = {
            id: randomUUID(),
            user: makeUser(issueOptions?.user),
            current: refreshToken,
            revoked: undefined
          }
          refreshTokens.set(refreshToken, { chain, usedAt: undefined, successor: undefined })
          const access = issueAccess(chain)
          return {
            accessToken: Redacted.make(access.token),
            refreshToken: Redacted.make(refreshToken),
            expiresAt: DateTime.unsafeMake(access.exp * 1000),
            tokenType: "bearer",
            user: toSessionUser(chain.user)
          }
        }),
      script: (...more) =>
        Effect.sync(() => {
          faults.push(...more)
        }),
      pendingFaults: Effect.sync(() => faults.length),
      stats: Effect.sync(() => ({ ...stats })),
      requests: Effect.sync(() => records.map((record) => ({ ...record }))),
      isLive: (token) =>
        Effect.sync(() => {
          const value = unwrap(token)
          const found = refreshTokens.get(value)
          return found !== undefined && found.chain.revoked === undefined && found.chain.current === value
        }),
      revokeSession: (token) =>
        Effect.sync(() => {
          const found = refreshTokens.get(unwrap(token))
          if (found !== undefined) found.chain.revoked = "signout"
        }),
      issuedTokens: Effect.sync(() => issued.slice())
    } satisfies Service
  })

// Reads the request body, giving up (and draining the rest) past `maxRequestBytes`.
const readBody = (req: Http.IncomingMessage, onBody: (body: string, tooLarge: boolean) => void) => {
  const chunks: Array<Buffer> = []
  let size = 0
  req.on("data", (chunk: Buffer) => {
    size += chunk.length
    if (size <= maxRequestBytes) chunks.push(chunk)
  })
  req.once("end", () => onBody(Buffer.concat(chunks).toString("utf8"), size > maxRequestBytes))
  // The client went away mid-request: nothing to answer.
  req.once("error", () => {})
}

/**
 * A server in a layer, for tests that take their services from context. It
 * stops when the layer's scope closes.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<MockMoonServer> => Layer.scoped(MockMoonServer, make(options))

/**
 * A `RefreshClient` pointed at the `MockMoonServer` in context, with the given
 * options (the base URL is the server's).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerRefreshClient = (
  options: Omit<RefreshClient.Options, "baseUrl"> = {}
): Layer.Layer<RefreshClient.RefreshClient, never, MockMoonServer | HttpClient.HttpClient> =>
  Layer.unwrapEffect(Effect.map(MockMoonServer, (server) => RefreshClient.layer({ ...options, baseUrl: server.url })))

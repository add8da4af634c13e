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
 *   the whole session (every token of the chain) is revoked. Which reuses are
 *   forgiven instead (answered with the active refresh token and a fresh
 *   access token) is the `reuse` mode's choice: by default, a reuse of the
 *   token spent last within `reuseWindow` (0: none); with `reuse: "gotrue"`,
 *   what Supabase's auth server forgives (see {@link ReuseMode}).
 * - Each request to `/auth/refresh` can be scripted with a {@link Fault}.
 * - `GET /mock/stats` answers its {@link Stats} as JSON (at `statsUrl`), for
 *   a program or a person outside the test to check reuse with.
 * - It counts and records requests without ever keeping a token in anything it
 *   returns, logs or prints.
 *
 * Its clock is `Date.now` unless `now` is given, so tests can drive token
 * expiry and the reuse window without waiting.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import type * as DateTime from "effect/DateTime"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as HttpClient from "effect/http/HttpClient"
import * as Layer from "effect/Layer"
import type * as Redacted from "effect/Redacted"
import * as Result from "effect/Result"
import type * as Scope from "effect/Scope"
import * as Options_ from "../internal/options.js"
import * as RefreshClient from "../RefreshClient.js"
import type * as Session from "../Session.js"
import * as Cors from "./internal/cors.js"
import * as HttpServer from "./internal/httpServer.js"
import * as Routes from "./internal/routes.js"
import * as TokenFamily from "./internal/tokenFamily.js"

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
 * - `Redirect`: answer `status` (a 3xx) with `Location: location`, as a
 *   hostile or misconfigured proxy would. Does not rotate.
 * - `EndlessBody`: answer `status` and start a body that never ends (until
 *   the client hangs up). Does not rotate.
 * - `PatchedSession`: rotate, and answer the new session with the fields of
 *   `patch` merged in (for example `{ expires_in: 0 }`: a session that is
 *   expired on arrival, whose new refresh token must still be kept).
 *
 * On `GET /protected` (queued with `scriptProtected`), `Status`, `Redirect`,
 * `EndlessBody` and `Delay` apply the same way; other faults answer normally.
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
  Redirect: { readonly status: number; readonly location: string }
  EndlessBody: { readonly status: number }
  PatchedSession: { readonly patch: Readonly<Record<string, unknown>> }
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
 * Which reuses of a spent refresh token the server forgives, answering with
 * the active refresh token (and a new access token) without rotating again:
 *
 * - `"window"` (the default): the token spent last, within `reuseWindow`
 *   after its rotation. With the default window of 0, none: the strictest
 *   server, and what a test that hunts for double refreshes wants.
 * - `"gotrue"`: the rules of Supabase's auth server (GoTrue's refresh grant),
 *   which Moon's sessions come from. The parent of the active token is always
 *   forgiven, however late (a client that lost the answer can retry the same
 *   token, as long as nobody refreshed after it); an older spent token only
 *   within `reuseWindow` after it was spent (GoTrue's
 *   `RefreshTokenReuseInterval`, default 10 seconds here as there); anything
 *   else revokes the whole session (`refresh_token_already_used`).
 *
 * @since 0.3.0
 * @category models
 */
export type ReuseMode = "window" | "gotrue"

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
   * Which reuses are forgiven; see {@link ReuseMode}. Default `"window"`.
   *
   * @since 0.3.0
   */
  readonly reuse?: ReuseMode | undefined
  /**
   * In `"window"` mode, how long after a rotation the spent token may be
   * presented again and get the same new refresh token back (default 0: every
   * reuse is rejected). In `"gotrue"` mode, how long after it was spent a
   * token older than the active one's parent is still forgiven (default 10
   * seconds, GoTrue's). A number is milliseconds.
   */
  readonly reuseWindow?: Duration.Input | undefined
  /**
   * The server's clock, in epoch milliseconds. Default `Date.now`. It decides
   * `expires_at`, access-token expiry on `/protected`, the reuse window and the
   * `at` of recorded requests. (Delays of scripted faults are real time.)
   *
   * To follow Effect's `Clock` (a `TestClock` included), read it with the
   * test's services: `const services = yield* Effect.context<never>()`, then
   * `now: () => Effect.runSyncWith(services)(Clock.currentTimeMillis)`.
   */
  readonly now?: (() => number) | undefined
  /** The user of sessions issued without one. */
  readonly user?: UserInput | undefined
  /**
   * How far the `Date` header of every answer is from the server's clock, in
   * milliseconds (negative: behind), to test clients against a server whose
   * clock is wrong. Default 0: the `Date` header is `now()`.
   */
  readonly dateOffset?: number | undefined
  /**
   * Lets pages on other origins call the server from a browser (CORS):
   * `true` for any origin, or `{ origins: ["http://127.0.0.1:5173"] }` for
   * those only. Preflights from an allowed origin are answered 204 (methods
   * `GET` and `POST`; the headers `authorization`, `content-type`, `accept`
   * and the trace headers `traceparent`, `tracestate` and `b3`), from
   * another 403; answers to an allowed origin carry
   * `Access-Control-Allow-Origin` and expose `Date`, `Retry-After` and
   * `WWW-Authenticate`. Nothing else changes: tokens are checked as
   * always. Default: no CORS headers, and `OPTIONS` is answered 404.
   */
  readonly cors?: true | { readonly origins: ReadonlyArray<string> } | undefined
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
  /** Reuses forgiven (see `reuse`), answered with the active refresh token. */
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
  | "preflight"
  | "cross-origin-refused"
  | "stats"
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
  /** Whether it came with an `Authorization: Bearer …` header (the token itself is not kept). */
  readonly bearer: boolean
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Service {
  /** The base URL, `http://127.0.0.1:PORT`, without a trailing slash. */
  readonly url: string
  readonly port: number
  /**
   * Where `GET` answers {@link stats} as JSON: `<url>/mock/stats`.
   *
   * @since 0.3.0
   */
  readonly statsUrl: string
  /** Starts a new session (a new chain of refresh tokens) and returns its first tokens. */
  readonly issueSession: (options?: { readonly user?: UserInput | undefined }) => Effect.Effect<IssuedSession>
  /** Queues faults for the next requests to `POST /auth/refresh`, one per request, in order. */
  readonly script: (...faults: ReadonlyArray<Fault>) => Effect.Effect<void>
  /** Faults queued and not yet applied. */
  readonly pendingFaults: Effect.Effect<number>
  /** Queues faults for the next requests to `GET /protected`, one per request, in order. */
  readonly scriptProtected: (...faults: ReadonlyArray<Fault>) => Effect.Effect<void>
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
export class MockMoonServer extends Context.Service<MockMoonServer, Service>()("moon-refresh/testing/MockMoonServer") {}

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------

const owner = "MockMoonServer"

const settings = (options: Options): Result.Result<Routes.Settings, Options_.Invalid> =>
  Result.all({
    lifetime: Options_.integer(owner, "accessTokenLifetime", options.accessTokenLifetime ?? 3600, { min: 1 }),
    reuse: TokenFamily.checkReuse(owner, options.reuse, options.reuseWindow),
    dateOffset: Options_.integer(owner, "dateOffset", options.dateOffset ?? 0, { min: Number.MIN_SAFE_INTEGER }),
    cors: Cors.policy(owner, options.cors)
  }).pipe(Result.map(({ cors, dateOffset, lifetime, reuse: { reuse, reuseWindowMillis } }) => ({
    cors,
    lifetime,
    reuse,
    reuseWindowMillis,
    dateOffset,
    bodyShape: options.bodyShape ?? "bare",
    now: options.now ?? Date.now,
    user: options.user
  })))

/**
 * Starts a server on 127.0.0.1 and stops it when the scope closes: the
 * listener is closed, open connections are destroyed and pending scripted
 * delays are cancelled. Dies (a defect naming the option) when
 * `accessTokenLifetime` is not a whole number of seconds from 1,
 * `reuse` is not `"window"` or `"gotrue"`, `reuseWindow` is not a finite,
 * non-negative duration, or `cors` lists something that is not an origin.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<Service, never, Scope.Scope> =>
  Effect.gen(function*() {
    const state = Routes.makeState(yield* Options_.orDie(settings(options)), HttpServer.makeTimers())
    // Logs go through the caller's services, so its logger and log level apply.
    const services = yield* Effect.context<never>()
    const port = yield* HttpServer.listen(options.port ?? 0, Routes.onRequest(state, services), state.timers)
    return {
      url: `http://127.0.0.1:${port}`,
      port,
      statsUrl: `http://127.0.0.1:${port}${Routes.statsPath}`,
      issueSession: (issueOptions) => Effect.sync(() => Routes.issueSession(state, issueOptions?.user)),
      script: (...more) =>
        Effect.sync(() => {
          state.faults.push(...more)
        }),
      pendingFaults: Effect.sync(() => state.faults.length),
      scriptProtected: (...more) =>
        Effect.sync(() => {
          state.protectedFaults.push(...more)
        }),
      stats: Effect.sync(() => Routes.stats(state)),
      requests: Effect.sync(() => state.records.map((record) => ({ ...record }))),
      isLive: (token) => Effect.sync(() => state.families.isLive(token)),
      revokeSession: (token) => Effect.sync(() => state.families.revoke(token)),
      issuedTokens: Effect.sync(() => state.families.issued())
    } satisfies Service
  })

/**
 * A server in a layer, for tests that take their services from context. It
 * stops when the layer's scope closes.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<MockMoonServer> => Layer.effect(MockMoonServer, make(options))

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
  Layer.unwrap(Effect.map(MockMoonServer, (server) => RefreshClient.layer({ ...options, baseUrl: server.url })))

/**
 * What the `MockMoonServer` answers: its state, Moon's (Supabase's) replies,
 * and one handler per route. A new route is one more entry in {@link routes};
 * a new fault is a case in `faults.ts`.
 *
 * Not public API: the package's exports keep `internal/` private.
 */
import type * as Context from "effect/Context"
import * as DateTime from "effect/DateTime"
import * as Effect from "effect/Effect"
import * as Redacted from "effect/Redacted"
import { randomBytes, randomUUID } from "node:crypto"
import type * as Http from "node:http"
import type * as Session from "../../Session.js"
import type { BodyShape, Fault, IssuedSession, Stats, UserInput } from "../MockMoonServer.js"
import * as Cors from "./cors.js"
import * as Faults from "./faults.js"
import type { Exchange, Reply, RequestRecord, Timers } from "./httpServer.js"
import { json, makeExchange, readBody, send } from "./httpServer.js"
import * as TokenFamily from "./tokenFamily.js"

// ---------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------

/** The options, checked and with their defaults. */
export interface Settings {
  /** Whole seconds, the unit of `expires_in`. */
  readonly lifetime: number
  readonly bodyShape: BodyShape
  readonly reuse: TokenFamily.ReuseMode
  readonly reuseWindowMillis: number
  /** Added to `now()` for the `Date` header. */
  readonly dateOffset: number
  readonly now: () => number
  readonly user: UserInput | undefined
  /** Who may call from a browser page on another origin; `undefined`: nobody (no CORS headers). */
  readonly cors: Cors.Policy | undefined
}

// The user as sent on the wire (`email` may be `null` there).
interface WireUser {
  readonly id: string
  readonly email: string | null
  readonly [key: string]: unknown
}

/** What the server keeps about a sign-in: its session id (the JWT's `session_id`) and user. */
interface SignIn {
  readonly id: string
  readonly user: WireUser
}

/** The server's counters that are not the token model's. */
interface Counters {
  refreshRequests: number
  faults: number
  protectedRequests: number
  unauthorized: number
}

export interface State {
  readonly settings: Settings
  readonly families: TokenFamily.TokenFamilies<SignIn>
  readonly counters: Counters
  readonly faults: Array<Fault>
  /** Faults for `GET /protected`. */
  readonly protectedFaults: Array<Fault>
  readonly records: Array<RequestRecord>
  readonly timers: Timers
}

export const makeState = (settings: Settings, timers: Timers): State => ({
  settings,
  families: TokenFamily.make<SignIn>({
    reuseWindowMillis: settings.reuseWindowMillis,
    reuse: settings.reuse,
    newTokens: (family, now, expiresAt) => ({
      accessToken: newAccessToken(family.data, now, expiresAt),
      refreshToken: randomBytes(18).toString("base64url")
    })
  }),
  counters: { refreshRequests: 0, faults: 0, protectedRequests: 0, unauthorized: 0 },
  faults: [],
  protectedFaults: [],
  records: [],
  timers
})

export const stats = (state: State): Stats => {
  const { counters } = state
  return {
    refreshRequests: counters.refreshRequests,
    ...state.families.stats(),
    faults: counters.faults,
    protectedRequests: counters.protectedRequests,
    unauthorized: counters.unauthorized
  }
}

// ---------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------

const base64url = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString("base64url")

// Shaped like Supabase's JWT (so code that peeks at `exp` works), but the
// signature is random: the server knows its tokens by lookup, not by verifying.
const newAccessToken = (signIn: SignIn, now: number, expiresAt: number): string =>
  [
    base64url({ alg: "HS256", typ: "JWT" }),
    base64url({
      aud: "authenticated",
      exp: Math.floor(expiresAt / 1000),
      iat: Math.floor(now / 1000),
      sub: signIn.user.id,
      email: signIn.user.email,
      role: "authenticated",
      session_id: signIn.id
    }),
    randomBytes(32).toString("base64url")
  ].join(".")

// `expires_in` is whole seconds, so expiry falls on a whole second.
const expiresAt = (state: State, now: number): number => (Math.floor(now / 1000) + state.settings.lifetime) * 1000

const wireUser = (state: State, input: UserInput | undefined): WireUser => {
  const merged = { ...state.settings.user, ...input }
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

// The user as a decoded `Session` holds it: a `null` email is absent.
const toSessionUser = ({ email, ...rest }: WireUser): Session.User => (email === null ? rest : { ...rest, email })

export const issueSession = (state: State, user: UserInput | undefined): IssuedSession => {
  const now = state.settings.now()
  const grant = state.families.issue({ id: randomUUID(), user: wireUser(state, user) }, now, expiresAt(state, now))
  return {
    accessToken: Redacted.make(grant.accessToken),
    refreshToken: Redacted.make(grant.refreshToken),
    expiresAt: DateTime.makeUnsafe(grant.expiresAt),
    tokenType: "bearer",
    user: toSessionUser(grant.family.data.user)
  }
}

// ---------------------------------------------------------------------------
// Moon's answers
// ---------------------------------------------------------------------------

// Moon answers a failed refresh with a 500 carrying Supabase's error.
const moonError = (code: string, msg: string): Reply => json(500, { error_code: code, msg })

const refusals = {
  "reuse-rejected": () => moonError("refresh_token_already_used", "Invalid Refresh Token: Already Used"),
  "unknown-token": () => moonError("refresh_token_not_found", "Invalid Refresh Token: Refresh Token Not Found")
}

// What Moon's request validation (NestJS) answers to a body without a refresh token.
const badRequest = (message: string): Reply => json(400, { statusCode: 400, message: [message], error: "Bad Request" })

const unauthorized = (code: string, msg: string): Reply =>
  json(401, { code: 401, error_code: code, msg }, { "www-authenticate": `Bearer error="invalid_token"` })

const sessionReply = (state: State, grant: TokenFamily.Grant<SignIn>): Reply => {
  const session = {
    access_token: grant.accessToken,
    token_type: "bearer",
    expires_in: state.settings.lifetime,
    expires_at: Math.floor(grant.expiresAt / 1000),
    refresh_token: grant.refreshToken,
    user: grant.family.data.user
  }
  return json(200, state.settings.bodyShape === "wrapped" ? { token: session } : session)
}

// Like Moon's JSON body parser, a body not declared as JSON is ignored.
const refreshTokenOf = (body: string, contentType: string | undefined): string | Reply => {
  let parsed: unknown = undefined
  if (/^application\/json\b/i.test(contentType ?? "")) {
    try {
      parsed = JSON.parse(body)
    } catch {
      return badRequest("body is not valid JSON")
    }
  }
  const token = typeof parsed === "object" && parsed !== null
    ? (parsed as Record<string, unknown>).refresh_token
    : undefined
  return typeof token === "string" && token !== "" ? token : badRequest("refresh_token must be a non-empty string")
}

// The refresh grant, as Supabase runs it with rotation and reuse detection on.
const refreshGrant = (state: State, exchange: Exchange, body: string): Reply => {
  const token = refreshTokenOf(body, exchange.req.headers["content-type"])
  if (typeof token !== "string") {
    exchange.record.outcome = "bad-request"
    return token
  }
  const now = state.settings.now()
  const rotation = state.families.rotate(token, now, expiresAt(state, now))
  exchange.record.outcome = rotation.outcome
  return "grant" in rotation ? sessionReply(state, rotation.grant) : refusals[rotation.outcome]()
}

// ---------------------------------------------------------------------------
// Routes
// ---------------------------------------------------------------------------

// A refresh request is one short JSON field; anything much larger is not one.
const maxRequestBytes = 64 * 1024

const refreshRoute = (state: State, exchange: Exchange): void => {
  state.counters.refreshRequests++
  // Taken on arrival, so faults apply in the order requests arrive.
  const fault = state.faults.shift()
  if (fault !== undefined) {
    state.counters.faults++
    exchange.record.fault = fault._tag
  }
  // A client that hangs up before its body is complete (a process killed
  // between a chunked body's data and its last chunk) sent nothing the server
  // processed: it is gone, and so is said, not left pending for good.
  exchange.res.once("close", () => {
    if (exchange.record.outcome === "pending" && !exchange.req.complete) exchange.record.outcome = "client-gone"
  })
  readBody(exchange.req, maxRequestBytes, (body, tooLarge) => {
    if (tooLarge) {
      exchange.record.outcome = "bad-request"
      return send(exchange, json(413, { statusCode: 413, message: "request entity too large" }))
    }
    const answer = () => refreshGrant(state, exchange, body)
    if (fault === undefined) return send(exchange, answer())
    Faults.apply(fault, exchange, { answer, timers: state.timers })
  })
}

const protectedRoute = (state: State, exchange: Exchange): void => {
  state.counters.protectedRequests++
  exchange.req.resume()
  const fault = state.protectedFaults.shift()
  if (fault !== undefined && Faults.onProtected(fault)) {
    state.counters.faults++
    exchange.record.fault = fault._tag
    return Faults.apply(fault, exchange, { answer: () => authorize(state, exchange), timers: state.timers })
  }
  send(exchange, authorize(state, exchange))
}

// The answer of `/protected`: 200 for a valid access token, else Supabase's 401.
const authorize = (state: State, exchange: Exchange): Reply => {
  const { record } = exchange
  const token = /^Bearer\s+(\S+)\s*$/i.exec(exchange.req.headers.authorization ?? "")?.[1]
  const access = token === undefined ? undefined : state.families.checkAccess(token, state.settings.now())
  if (access?.status === "valid") {
    record.outcome = "authorized"
    const user = access.family.data.user
    return json(200, { ok: true, user: { id: user.id, email: user.email } })
  }
  state.counters.unauthorized++
  record.outcome = "unauthorized"
  return access === undefined
    ? unauthorized("no_authorization", "This endpoint requires a Bearer token")
    : access.status === "expired"
    ? unauthorized("bad_jwt", "invalid JWT: token has invalid claims: token is expired")
    : unauthorized("bad_jwt", "invalid JWT: unable to parse or verify signature")
}

// The counters as JSON, for a user of the server run by hand (`moon-mock-server`) to check reuse with.
const statsRoute = (state: State, exchange: Exchange): void => {
  exchange.req.resume()
  exchange.record.outcome = "stats"
  send(exchange, json(200, stats(state)))
}

const notFoundRoute = (_state: State, exchange: Exchange): void => {
  exchange.req.resume()
  exchange.record.outcome = "not-found"
  send(exchange, json(404, { statusCode: 404, message: "Not Found" }))
}

/** Where the server's counters are served. */
export const statsPath = "/mock/stats"

/** Handlers by `METHOD path`. */
export const routes: Readonly<Record<string, (state: State, exchange: Exchange) => void>> = {
  "POST /auth/refresh": refreshRoute,
  "GET /protected": protectedRoute,
  [`GET ${statsPath}`]: statsRoute
}

/**
 * The request listener: records the request, logs it at debug level with
 * `services` (the caller's, so its logger and log level apply) once its
 * connection closes, and dispatches it to its route.
 */
export const onRequest = (state: State, services: Context.Context<never>): Http.RequestListener => (req, res) => {
  const exchange = makeExchange(
    req,
    res,
    state.settings.now(),
    () => new Date(state.settings.now() + state.settings.dateOffset).toUTCString(),
    Cors.responseHeaders(state.settings.cors, req.headers.origin)
  )
  const { record } = exchange
  state.records.push(record)
  res.once("close", () => Effect.runForkWith(services)(logRequest(record)))
  try {
    if (Cors.preflight(state.settings.cors, exchange)) return
    const route = routes[`${record.method} ${record.path}`] ?? notFoundRoute
    route(state, exchange)
  } catch (cause) {
    // A bug here must fail the request, not crash the test process.
    record.outcome = "error"
    Effect.runForkWith(services)(Effect.logError("MockMoonServer: handler failed", cause))
    if (!res.headersSent) send(exchange, json(500, { msg: "MockMoonServer internal error" }))
    else res.destroy()
  }
}

const logRequest = (record: RequestRecord) =>
  Effect.logDebug("MockMoonServer: request").pipe(
    Effect.annotateLogs({
      method: record.method,
      path: record.path,
      status: record.status ?? "none",
      outcome: record.outcome,
      fault: record.fault ?? "none"
    })
  )

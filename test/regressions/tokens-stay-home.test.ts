/**
 * Regression cases: tokens go only where they belong. Each was reproduced
 * over real loopback HTTP before the fix (issue "Tokens go only where they
 * belong, and nothing makes the manager spin"). One case per bug, named by
 * what broke; add one per bug fixed.
 */
import { NodeHttpClient } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Clock, DateTime, Duration, Effect, Exit, Fiber, Layer, Option, Redacted, References, Tracer } from "effect"
import { FetchHttpClient, HttpClient, type HttpClientError } from "effect/http"
import { TestClock } from "effect/testing"
import {
  AuthHttpClient,
  RefreshClient,
  RefreshError,
  RefreshPolicy,
  Session,
  SessionManager,
  SessionStore
} from "moon-refresh"
import { MockMoonServer } from "moon-refresh/testing"
import * as Http from "node:http"
import * as Undici from "undici"
import { type BodyKind, drainTimeout, isWebBody, RefreshBody } from "../../src/internal/http.js"
import { failureOf } from "../support/Exits.js"
import { waitUntil } from "../support/RealTime.js"
import { tracked } from "../support/Sleeps.js"

const { Fault } = MockMoonServer

// The transports users provide: as they come, and wrapped in Effect's own redirect follower.
const followingNode = Layer.effect(
  HttpClient.HttpClient,
  Effect.map(HttpClient.HttpClient, HttpClient.followRedirects())
).pipe(Layer.provide(NodeHttpClient.layerNodeHttp))
const followingFetch = Layer.effect(
  HttpClient.HttpClient,
  Effect.map(HttpClient.HttpClient, HttpClient.followRedirects())
).pipe(Layer.provide(FetchHttpClient.layer))

const refreshVia = (
  httpLayer: Layer.Layer<HttpClient.HttpClient>,
  server: MockMoonServer.Service,
  token: Redacted.Redacted<string>
) =>
  RefreshClient.refresh(token).pipe(
    Effect.provide(RefreshClient.layer({
      baseUrl: server.url,
      policy: RefreshPolicy.exponential({
        base: "10 millis",
        maxRetries: 3,
        maxDelay: "10 millis",
        // A hang guard, not a budget under test: a retry must not be skipped because the machine is busy.
        maxElapsed: "1 minute"
      })
    })),
    Effect.provide(httpLayer),
    Effect.exit
  )

describe("the refresh token never leaves the configured endpoint", () => {
  for (
    const [name, httpLayer] of [
      ["NodeHttpClient + HttpClient.followRedirects()", followingNode],
      ["FetchHttpClient (fetch follows redirects by default)", FetchHttpClient.layer],
      ["FetchHttpClient + HttpClient.followRedirects()", followingFetch]
    ] as const
  ) {
    // Effect 4's followRedirects follows a 302 as a GET without a body, and
    // re-sends the POST on a 307 or 308: those two exercise what a 302 did
    // under Effect 3 (a POST re-sent to the other host, its body blanked).
    for (const status of [302, 307, 308] as const) {
      it.live(`${name}: a ${status} to another host is refused, and that host never gets the token`, () =>
        Effect.gen(function*() {
          const moon = yield* MockMoonServer.make()
          const attacker = yield* MockMoonServer.make()
          const issued = yield* moon.issueSession()
          yield* moon.script(Fault.Redirect({ status, location: `${attacker.url}/auth/refresh` }))

          const exit = yield* refreshVia(httpLayer, moon, issued.refreshToken)

          const error = failureOf(exit) as RefreshError.RefreshError
          expect(error._tag).toBe("ServerError")
          expect(error.message).toContain("redirect")
          expect(error.message).toContain("refused")
          expect(error.message).not.toContain(Redacted.value(issued.refreshToken))
          // Not retried: one POST to Moon, whose token is untouched.
          expect(RefreshError.isRetryable(error)).toBe(false)
          expect((yield* moon.stats).refreshRequests).toBe(1)
          expect(yield* moon.isLive(issued.refreshToken)).toBe(true)
          // The other host got no token: nothing at all, a POST whose body holds no token, or (a 302
          // followed by Effect 4) a GET without a body.
          const seen = yield* attacker.requests
          expect(
            seen.every((request) =>
              request.method === "GET"
                ? status === 302 && request.outcome === "not-found"
                : request.outcome === "bad-request"
            )
          ).toBe(true)
          expect((yield* attacker.stats).unknownTokens).toBe(0)
        }).pipe(Effect.provideService(References.MinimumLogLevel, "None")))
    }
  }

  it.live("a 307 seen directly names its status and that redirects are refused", () =>
    Effect.gen(function*() {
      const moon = yield* MockMoonServer.make()
      const issued = yield* moon.issueSession()
      yield* moon.script(Fault.Redirect({ status: 307, location: "https://elsewhere.example/auth/refresh" }))
      const error = failureOf(
        yield* refreshVia(FetchHttpClient.layer, moon, issued.refreshToken)
      ) as RefreshError.RefreshError
      expect(error).toMatchObject({ _tag: "ServerError", status: 307 })
      expect(error.message).toBe(
        `the refresh endpoint answered 307, a redirect to https://elsewhere.example; redirects are refused, the refresh token is only sent to ${moon.url}`
      )
    }))
})

/** `auth` over a manager holding `seeded`, refreshing against `moon`, over the transport `http`. */
const appOver = (
  auth: Layer.Layer<AuthHttpClient.AuthHttpClient, never, HttpClient.HttpClient | SessionManager.SessionManager>,
  moon: MockMoonServer.Service,
  seeded: Session.Session,
  http: Layer.Layer<HttpClient.HttpClient>
) =>
  auth.pipe(
    Layer.provideMerge(SessionManager.layer({ autoRefresh: false })),
    Layer.provide(SessionStore.layerMemory(seeded)),
    Layer.provide(RefreshClient.layer({ baseUrl: moon.url })),
    Layer.provide(http)
  )

describe("the bearer goes only to the origins the user names", () => {
  const appLayer = (moon: MockMoonServer.Service, seeded: Session.Session, http: Layer.Layer<HttpClient.HttpClient>) =>
    appOver(AuthHttpClient.layer({ origins: [moon.url] }), moon, seeded, http)

  it.live("a request to another origin is sent without the token, and its 401 causes no refresh", () =>
    Effect.gen(function*() {
      const moon = yield* MockMoonServer.make()
      const other = yield* MockMoonServer.make()
      const issued = yield* moon.issueSession()
      const { response } = yield* Effect.gen(function*() {
        const http = yield* AuthHttpClient.AuthHttpClient
        const response = yield* http.get(`${other.url}/protected`)
        yield* response.text
        return { response }
      }).pipe(Effect.provide(appLayer(moon, Session.unsafeMake(issued), NodeHttpClient.layerNodeHttp)))
      expect(response.status).toBe(401)
      expect((yield* other.requests).map((request) => request.bearer)).toStrictEqual([false])
      expect((yield* moon.stats).refreshRequests).toBe(0)
    }))

  it.live("a redirect that leaves the allowed origin drops the Authorization header", () =>
    Effect.gen(function*() {
      const moon = yield* MockMoonServer.make()
      const other = yield* MockMoonServer.make()
      const issued = yield* moon.issueSession()
      yield* moon.scriptProtected(Fault.Redirect({ status: 302, location: `${other.url}/protected` }))
      const status = yield* Effect.gen(function*() {
        const http = yield* AuthHttpClient.AuthHttpClient
        const response = yield* http.get(`${moon.url}/protected`)
        yield* response.text
        return response.status
      }).pipe(Effect.provide(appLayer(moon, Session.unsafeMake(issued), followingNode)))
      // The first hop was signed; the hop to the other origin was not, and its 401 refreshed nothing.
      expect((yield* moon.requests).map((request) => request.bearer)).toStrictEqual([true])
      expect((yield* other.requests).map((request) => request.bearer)).toStrictEqual([false])
      expect(status).toBe(401)
      expect((yield* moon.stats).refreshRequests).toBe(0)
    }))

  // On the TestClock: the drain's bound is a second of the clock, moved once the client is draining.
  it.effect("a 401 whose body never ends is drained for a second, then replayed", () =>
    tracked((sleeps) =>
      Effect.gen(function*() {
        const moon = yield* MockMoonServer.make()
        const issued = yield* moon.issueSession()
        yield* moon.scriptProtected(Fault.EndlessBody({ status: 401 }))
        const fiber = yield* Effect.gen(function*() {
          const http = yield* AuthHttpClient.AuthHttpClient
          const response = yield* http.get(`${moon.url}/protected`)
          return response.status
        }).pipe(
          Effect.provide(appLayer(moon, Session.unsafeMake(issued), NodeHttpClient.layerNodeHttp)),
          Effect.forkChild
        )
        // The 401's head came, and the client waits on the drain's bound.
        const drainEnds = (yield* Clock.currentTimeMillis) + Duration.toMillis(drainTimeout)
        yield* waitUntil("the drain wait", Effect.map(sleeps, (wakes) => wakes.some((at) => at === drainEnds)))
        yield* TestClock.adjust("999 millis")
        expect(fiber.pollUnsafe()).toBeUndefined()
        yield* TestClock.adjust("1 millis")
        expect(yield* Fiber.join(fiber)).toBe(200)
        expect((yield* moon.stats).refreshRequests).toBe(1)
      })
    ))

  it.effect("an origin that is not one is refused when the layer is built, naming the option", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(
        AuthHttpClient.make(HttpClient.make(() => Effect.never), { origins: ["https://api.example.com/v1"] }).pipe(
          Effect.provide(SessionManager.layer()),
          Effect.provide(SessionStore.layerMemory()),
          Effect.provide(Layer.succeed(RefreshClient.RefreshClient, { refresh: () => Effect.never }))
        )
      )
      expect(Exit.isFailure(exit) && String(exit.cause)).toContain(`AuthHttpClient: option "origins"`)
    }))
})

describe("the bearer never follows a redirect to another origin (issue 22)", () => {
  // Every request signed, as AuthHttpClient.layer() does; the transport is the user's.
  const signAll = (moon: MockMoonServer.Service, seeded: Session.Session, http: Layer.Layer<HttpClient.HttpClient>) =>
    appOver(AuthHttpClient.layer(), moon, seeded, http)

  const getProtected = <E>(url: string, app: Layer.Layer<AuthHttpClient.AuthHttpClient, E>) =>
    Effect.gen(function*() {
      const http = yield* AuthHttpClient.AuthHttpClient
      const response = yield* http.get(url)
      yield* response.text
      return response.status
    }).pipe(Effect.provide(app))

  // Whether each request to /protected carried a bearer, in order (the refresh POSTs left out).
  const bearers = (server: MockMoonServer.Service) =>
    Effect.map(
      server.requests,
      (requests) => requests.filter((request) => request.path === "/protected").map((request) => request.bearer)
    )

  const transports = [
    ["NodeHttpClient + HttpClient.followRedirects()", followingNode],
    ["FetchHttpClient (fetch follows redirects by default)", FetchHttpClient.layer],
    ["FetchHttpClient + HttpClient.followRedirects()", followingFetch]
  ] as const

  for (const [name, http] of transports) {
    // Before: with NodeHttpClient + followRedirects, the hop to the other
    // origin carried the bearer (no `origins`, no hop guard), and its 401
    // made AuthHttpClient refresh (one token spent) and replay.
    it.live(`${name}, AuthHttpClient.layer(): the other origin gets no bearer, and its 401 spends no token`, () =>
      Effect.gen(function*() {
        const moon = yield* MockMoonServer.make()
        const other = yield* MockMoonServer.make()
        const issued = yield* moon.issueSession()
        yield* moon.scriptProtected(Fault.Redirect({ status: 302, location: `${other.url}/protected` }))
        const status = yield* getProtected(`${moon.url}/protected`, signAll(moon, Session.unsafeMake(issued), http))
        expect(yield* bearers(other)).toStrictEqual([false])
        // The other origin's 401 comes back as it is: no refresh, no replay.
        expect((yield* moon.stats).refreshRequests).toBe(0)
        expect(status).toBe(401)
        expect(yield* bearers(moon)).toStrictEqual([true])
        expect(yield* moon.isLive(issued.refreshToken)).toBe(true)
      }))

    it.live(`${name}, AuthHttpClient.layer(): a redirect within the origin keeps the bearer`, () =>
      Effect.gen(function*() {
        const moon = yield* MockMoonServer.make()
        const issued = yield* moon.issueSession()
        yield* moon.scriptProtected(Fault.Redirect({ status: 307, location: `${moon.url}/protected` }))
        const status = yield* getProtected(`${moon.url}/protected`, signAll(moon, Session.unsafeMake(issued), http))
        expect(status).toBe(200)
        expect(yield* bearers(moon)).toStrictEqual([true, true])
      }))
  }

  // Before: under FetchHttpClient the origin check looked at the request
  // (Moon's), not at where fetch had ended up: the other origin's 401
  // refreshed (one token spent) and was replayed. Under followRedirects the
  // hop to another allowed origin kept the bearer.
  for (const [name, http] of transports) {
    it.live(`${name}, layer with two origins: a redirect between them drops the bearer, its 401 spends no token`, () =>
      Effect.gen(function*() {
        const moon = yield* MockMoonServer.make()
        const other = yield* MockMoonServer.make()
        const issued = yield* moon.issueSession()
        yield* moon.scriptProtected(Fault.Redirect({ status: 302, location: `${other.url}/protected` }))
        const app = appOver(
          AuthHttpClient.layer({ origins: [moon.url, other.url] }),
          moon,
          Session.unsafeMake(issued),
          http
        )
        const status = yield* getProtected(`${moon.url}/protected`, app)
        expect(status).toBe(401)
        expect(yield* bearers(other)).toStrictEqual([false])
        expect((yield* moon.stats).refreshRequests).toBe(0)
        expect(yield* moon.isLive(issued.refreshToken)).toBe(true)
      }))
  }
})

describe("expiry comes from the token, not from a Date header", () => {
  for (
    const [what, offset] of [["two hours behind", -2], ["two hours ahead", 2]] as const
  ) {
    it.live(`a Date header ${what}: a 60-minute token lives 60 minutes, and the rotation is kept`, () =>
      Effect.gen(function*() {
        const moon = yield* MockMoonServer.make({ dateOffset: offset * 3_600_000 })
        const issued = yield* moon.issueSession()
        const before = Date.now()
        const session = yield* refreshVia(FetchHttpClient.layer, moon, issued.refreshToken).pipe(Effect.flatten)
        const after = Date.now()
        // An hour from the moment the answer came, which lies between `before` and `after`, whatever the Date header.
        const expiresAt = DateTime.toEpochMillis(session.expiresAt)
        expect(expiresAt).toBeGreaterThanOrEqual(before + 3_600_000)
        expect(expiresAt).toBeLessThanOrEqual(after + 3_600_000)
        expect(yield* moon.isLive(session.refreshToken)).toBe(true)
      }))
  }
})

describe("a rotation is never dropped", () => {
  it.live("an answer whose access token expired on arrival keeps its new refresh token in the store", () =>
    Effect.gen(function*() {
      const moon = yield* MockMoonServer.make()
      const issued = yield* moon.issueSession()
      const store = yield* SessionStore.makeMemory(Session.unsafeMake(issued))
      yield* moon.script(Fault.PatchedSession({ patch: { expires_in: 0, expires_at: 0 } }))
      const manager = yield* SessionManager.make({ autoRefresh: false, cooldown: "100 millis" }).pipe(
        Effect.provide(RefreshClient.layer({ baseUrl: moon.url })),
        Effect.provide(FetchHttpClient.layer),
        Effect.provideService(SessionStore.SessionStore, store)
      )
      const error = yield* Effect.flip(manager.refresh)
      expect(error._tag).toBe("MalformedResponseError")
      expect(String(error)).not.toContain(Redacted.value(issued.refreshToken))
      // The server rotated: the store holds its live successor, and the old access token is still used.
      const stored = Option.getOrThrow(yield* store.load)
      expect(yield* moon.isLive(stored.refreshToken)).toBe(true)
      expect(Redacted.value(stored.accessToken)).toBe(Redacted.value(issued.accessToken))
      // After the cooldown, the next refresh spends the kept token: no reuse, the user stays signed in.
      yield* Effect.sleep("150 millis")
      const next = yield* manager.refresh
      expect(yield* moon.isLive(next.refreshToken)).toBe(true)
      expect(yield* moon.stats).toMatchObject({ rotations: 2, reuseRejections: 0 })
    }).pipe(Effect.provideService(References.MinimumLogLevel, "None")))

  it.live("a 403 page from a proxy is retried, not taken as a dead token", () =>
    Effect.gen(function*() {
      const moon = yield* MockMoonServer.make()
      const issued = yield* moon.issueSession()
      yield* moon.script(
        Fault.Status({ status: 403, body: "<html><head><title>403 Forbidden</title></head><body>WAF</body></html>" })
      )
      const session = yield* refreshVia(FetchHttpClient.layer, moon, issued.refreshToken).pipe(Effect.flatten)
      expect(yield* moon.isLive(session.refreshToken)).toBe(true)
      expect((yield* moon.stats).refreshRequests).toBe(2)
    }))

  it.live("a 403 with the auth server's JSON error is still a rejected token", () =>
    Effect.gen(function*() {
      const moon = yield* MockMoonServer.make()
      const issued = yield* moon.issueSession()
      yield* moon.script(Fault.Status({ status: 403, body: { error: "forbidden", message: "token revoked" } }))
      const error = failureOf(yield* refreshVia(FetchHttpClient.layer, moon, issued.refreshToken))
      expect(error).toMatchObject({ _tag: "TokenRejectedError", status: 403 })
    }))
})

/**
 * Review finding (HIGH): the guard that blanked the body of a redirect's hop
 * was a `HttpClient.TracerDisabledWhen` predicate, which the platform asks
 * only while tracing is on and propagation not disabled. A client that turned
 * either off, or put its own predicate in place, inside its `execute` was
 * never blanked, and a follower of a 307 re-sent the token to the other
 * origin. Each case below sent it there before the fix.
 */
describe("the refresh token goes once per attempt, to the first hop, whatever the client does inside execute", () => {
  /** A node:http server on 127.0.0.1 that records every body it gets and answers 200 with a session. */
  const elsewhere = Effect.acquireRelease(
    Effect.callback<{ url: string; bodies: Array<string>; server: Http.Server }>((resume) => {
      const bodies: Array<string> = []
      const server = Http.createServer((req, res) => {
        let body = ""
        req.setEncoding("utf8")
        req.on("data", (chunk: string) => body += chunk)
        // An aborted upload still counts: what arrived of it is what got out.
        req.on("close", () => bodies.push(body))
        req.on("end", () =>
          res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({
            access_token: "at-from-elsewhere",
            refresh_token: "rt-from-elsewhere",
            token_type: "bearer",
            expires_in: 3600,
            user: { id: "someone-else" }
          })))
        req.on("error", () => {})
      })
      server.listen(
        0,
        "127.0.0.1",
        () =>
          resume(
            Effect.succeed({ url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, bodies, server })
          )
      )
    }),
    ({ server }) =>
      Effect.callback<void>((resume) => {
        server.closeAllConnections()
        server.close(() => resume(Effect.void))
      })
  )

  const withinExecute =
    (f: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>) =>
    (client: HttpClient.HttpClient): HttpClient.HttpClient => HttpClient.transform(client, (effect) => f(effect))
  const tracingOff = withinExecute((effect) => Effect.withTracerEnabled(effect, false))
  const ownPredicate = withinExecute((effect) =>
    Effect.provideService(effect, HttpClient.TracerDisabledWhen, () => true)
  )
  const noPropagation = withinExecute((effect) => Effect.provideService(effect, Tracer.DisablePropagation, true))
  const fetchFollows = withinExecute((effect) =>
    Effect.provideService(effect, FetchHttpClient.RequestInit, { redirect: "follow" })
  )

  const following = (client: HttpClient.HttpClient) => HttpClient.followRedirects(client)
  const wrapped = (
    transport: Layer.Layer<HttpClient.HttpClient>,
    ...wrappers: ReadonlyArray<(client: HttpClient.HttpClient) => HttpClient.HttpClient>
  ) =>
    Layer.effect(
      HttpClient.HttpClient,
      Effect.map(HttpClient.HttpClient, (client) => wrappers.reduce((acc, wrap) => wrap(acc), client))
    ).pipe(Layer.provide(transport))

  // undici following redirects itself, below any hook of effect/http.
  const undiciFollowing = NodeHttpClient.layerUndiciNoDispatcher.pipe(
    Layer.provide(Layer.succeed(
      NodeHttpClient.Dispatcher,
      new Undici.Agent().compose(Undici.interceptors.redirect({ maxRedirections: 3 }))
    ))
  )

  const refreshOnce = (
    httpLayer: Layer.Layer<HttpClient.HttpClient>,
    moon: MockMoonServer.Service,
    token: Redacted.Redacted<string>,
    kind: BodyKind
  ) =>
    RefreshClient.refresh(token).pipe(
      Effect.provide(RefreshClient.layer({ baseUrl: moon.url, policy: RefreshPolicy.none })),
      Effect.provide(httpLayer),
      Effect.provideService(RefreshBody, kind),
      Effect.exit
    )

  // The client's own retry re-sends the request it was given after a 503: that
  // second send carries no token, and its answer is not taken for a verdict.
  const sentOnceUnderOwnRetry = (transport: Layer.Layer<HttpClient.HttpClient>, kind: BodyKind) =>
    Effect.gen(function*() {
      const moon = yield* MockMoonServer.make()
      const issued = yield* moon.issueSession()
      yield* moon.script(Fault.Status({ status: 503 }))
      const retrying = wrapped(transport, (client) => HttpClient.retry(HttpClient.filterStatusOk(client), { times: 1 }))
      const error = failureOf(yield* refreshOnce(retrying, moon, issued.refreshToken, kind))
      expect(error).toMatchObject({ _tag: "ServerError", status: 0 })
      expect(error.message).toContain("a second time")
      expect((yield* moon.stats).refreshRequests).toBe(1)
    }).pipe(Effect.provideService(References.MinimumLogLevel, "None"))

  const cases: ReadonlyArray<
    readonly [name: string, layer: Layer.Layer<HttpClient.HttpClient>, kind: BodyKind, status: 302 | 307 | 308]
  > = [
    [
      "node:http + followRedirects(), tracing turned off inside execute",
      wrapped(NodeHttpClient.layerNodeHttp, following, tracingOff),
      "stream",
      307
    ],
    [
      "node:http + followRedirects(), its own TracerDisabledWhen inside execute",
      wrapped(NodeHttpClient.layerNodeHttp, following, ownPredicate),
      "stream",
      308
    ],
    [
      "node:http + followRedirects(), propagation disabled inside execute",
      wrapped(NodeHttpClient.layerNodeHttp, following, noPropagation),
      "stream",
      307
    ],
    [
      "undici following redirects itself (its own TracerDisabledWhen)",
      wrapped(undiciFollowing, ownPredicate),
      "stream",
      307
    ],
    ["undici following redirects itself (the guard sees the first hop)", undiciFollowing, "stream", 308],
    [
      "FetchHttpClient, fetch told to follow inside execute",
      wrapped(FetchHttpClient.layer, fetchFollows),
      "stream",
      307
    ],
    [
      "FetchHttpClient, fetch told to follow and tracing off inside execute",
      wrapped(FetchHttpClient.layer, fetchFollows, tracingOff),
      "stream",
      307
    ],
    [
      "FetchHttpClient, fetch told to follow inside execute (a browser's bytes body)",
      wrapped(FetchHttpClient.layer, fetchFollows),
      "bytes",
      307
    ],
    [
      "FetchHttpClient, fetch told to follow and tracing off inside execute (bytes)",
      wrapped(FetchHttpClient.layer, fetchFollows, tracingOff),
      "bytes",
      308
    ],
    [
      "FetchHttpClient, fetch told to follow inside execute (fetch's own ReadableStream)",
      wrapped(FetchHttpClient.layer, fetchFollows),
      "web",
      307
    ],
    [
      "FetchHttpClient, fetch told to follow and tracing off inside execute (ReadableStream)",
      wrapped(FetchHttpClient.layer, fetchFollows, tracingOff),
      "web",
      308
    ],
    [
      "FetchHttpClient + followRedirects(), tracing turned off inside execute (ReadableStream)",
      wrapped(FetchHttpClient.layer, following, tracingOff),
      "web",
      307
    ],
    [
      "node:http + followRedirects(), tracing turned off inside execute (bytes)",
      wrapped(NodeHttpClient.layerNodeHttp, following, tracingOff),
      "bytes",
      307
    ],
    [
      "node:http + followRedirects(), the guard sees every hop (bytes)",
      wrapped(NodeHttpClient.layerNodeHttp, HttpClient.followRedirects()),
      "bytes",
      307
    ]
  ]

  for (const [name, httpLayer, kind, status] of cases) {
    it.live(`${name}: a ${status} to another origin never gets the token, and the refresh fails typed`, () =>
      Effect.gen(function*() {
        const moon = yield* MockMoonServer.make()
        const other = yield* elsewhere
        const issued = yield* moon.issueSession()
        yield* moon.script(Fault.Redirect({ status, location: `${other.url}/auth/refresh` }))

        const exit = yield* refreshOnce(httpLayer, moon, issued.refreshToken, kind)

        // Typed, not a defect, and not the other host's session.
        const error = failureOf(exit) as RefreshError.RefreshError
        expect(RefreshError.isRefreshError(error)).toBe(true)
        expect(error.message).not.toContain(Redacted.value(issued.refreshToken))
        // The other host got no token: nothing, blanks, or an upload cut before its body.
        yield* Effect.sleep("20 millis")
        expect(other.bodies.filter((body) => body.includes(Redacted.value(issued.refreshToken)))).toStrictEqual([])
        expect(other.bodies.every((body) => body.trim() === "")).toBe(true)
        expect(yield* moon.isLive(issued.refreshToken)).toBe(true)
      }).pipe(Effect.scoped, Effect.provideService(References.MinimumLogLevel, "None")))
  }

  it.live("fetch told to follow inside execute: the refresh says why the token was kept back", () =>
    Effect.gen(function*() {
      const moon = yield* MockMoonServer.make()
      const issued = yield* moon.issueSession()
      const error = failureOf(
        yield* refreshOnce(wrapped(FetchHttpClient.layer, fetchFollows), moon, issued.refreshToken, "stream")
      )
      expect(error).toMatchObject({ _tag: "ServerError", status: 0 })
      expect(error.message).toContain(`the refresh token was not sent: the client's fetch options`)
      expect(RefreshError.isRetryable(error as RefreshError.RefreshError)).toBe(false)
    }).pipe(Effect.provideService(References.MinimumLogLevel, "None")))

  // fetch fails a 307 or 308 of a stream body (and, by the Fetch standard, a 301 or 302 too); a 303 it follows as a GET.
  it.live("a 303 that fetch follows as a GET: the other origin's answer is refused by where it came from", () =>
    Effect.gen(function*() {
      const moon = yield* MockMoonServer.make()
      const other = yield* elsewhere
      const issued = yield* moon.issueSession()
      yield* moon.script(Fault.Redirect({ status: 303, location: `${other.url}/auth/refresh` }))
      const error = failureOf(
        yield* refreshOnce(
          wrapped(FetchHttpClient.layer, fetchFollows, tracingOff),
          moon,
          issued.refreshToken,
          "stream"
        )
      )
      expect(error).toMatchObject({ _tag: "ServerError", status: 200 })
      expect(error.message).toBe(
        `the answer came from ${other.url} after a redirect, which is refused (the refresh token was not sent there)`
      )
      expect(other.bodies).toStrictEqual([""])
    }).pipe(Effect.scoped, Effect.provideService(References.MinimumLogLevel, "None")))

  it.live("a bytes body the guard never saw carries blanks, and the answer to it is refused", () =>
    Effect.gen(function*() {
      const moon = yield* MockMoonServer.make()
      const issued = yield* moon.issueSession()
      const error = failureOf(
        yield* refreshOnce(wrapped(FetchHttpClient.layer, tracingOff), moon, issued.refreshToken, "bytes")
      )
      // The server's 400 to blanks is not taken for a verdict on the token.
      expect(error).toMatchObject({ _tag: "ServerError", status: 0 })
      expect(error.message).toContain("without this library's guard seeing it")
      expect(yield* moon.isLive(issued.refreshToken)).toBe(true)
    }).pipe(Effect.provideService(References.MinimumLogLevel, "None")))

  it.live("a fetch client that retries on its own does not send a ReadableStream body twice", () =>
    sentOnceUnderOwnRetry(FetchHttpClient.layer, "web"))

  /** Three refreshes through one RefreshClient over `http`, whose layer has `fetch` recording what it is handed. */
  const threeRefreshes = (
    moon: MockMoonServer.Service,
    wrap: (client: HttpClient.HttpClient) => HttpClient.HttpClient
  ) =>
    Effect.gen(function*() {
      let token = (yield* moon.issueSession()).refreshToken
      const bodies: Array<boolean> = []
      const recording: typeof globalThis.fetch = (input, init) => {
        bodies.push(isWebBody(init?.body))
        return globalThis.fetch(input, init)
      }
      // Given to the layer only, as the platform's docs show: the refresh must use it, not `globalThis.fetch`.
      const http = wrapped(
        FetchHttpClient.layer.pipe(Layer.provide(Layer.succeed(FetchHttpClient.Fetch, recording))),
        wrap
      )
      yield* Effect.gen(function*() {
        const client = yield* RefreshClient.RefreshClient
        for (let i = 0; i < 3; i++) token = (yield* client.refresh(token)).refreshToken
      }).pipe(
        Effect.provide(RefreshClient.layer({ baseUrl: moon.url, policy: RefreshPolicy.none })),
        Effect.provide(http)
      )
      expect(yield* moon.isLive(token)).toBe(true)
      expect(yield* moon.stats).toMatchObject({ refreshRequests: 3, rotations: 3, reuseRejections: 0 })
      return bodies
    })

  it.live("over fetch, refreshes after the first send the token as a ReadableStream of their own; each still once", () =>
    Effect.gen(function*() {
      const moon = yield* MockMoonServer.make()
      // The first learns that fetch answers under the guard; the others skip the Effect stream.
      expect(yield* threeRefreshes(moon, (client) => client)).toStrictEqual([false, true, true])
    }))

  it.live("a client that keeps its hops from the guard never gets the ReadableStream body", () =>
    Effect.gen(function*() {
      const moon = yield* MockMoonServer.make()
      // Only the guard sees a second send of that one stream: without it, the Effect stream.
      expect(yield* threeRefreshes(moon, tracingOff)).toStrictEqual([false, false, false])
    }))

  it.live("a ReadableStream body the guard does not see is not sent, and the refresh says why", () =>
    Effect.gen(function*() {
      const moon = yield* MockMoonServer.make()
      const other = yield* elsewhere
      const issued = yield* moon.issueSession()
      yield* moon.script(Fault.Redirect({ status: 307, location: `${other.url}/auth/refresh` }))
      // Retries allowed: none may send the token again.
      const exit = yield* refreshVia(wrapped(FetchHttpClient.layer, following, tracingOff), moon, issued.refreshToken)
        .pipe(Effect.provideService(RefreshBody, "web"))
      const error = failureOf(exit)
      expect(error).toMatchObject({ _tag: "ServerError", status: 0 })
      expect(error.message).toContain("the refresh token was not sent: the HTTP client sent the request without")
      expect(RefreshError.isRetryable(error as RefreshError.RefreshError)).toBe(false)
      yield* Effect.sleep("20 millis")
      expect(other.bodies.every((body) => body.trim() === "")).toBe(true)
      expect(yield* moon.isLive(issued.refreshToken)).toBe(true)
    }).pipe(Effect.scoped, Effect.provideService(References.MinimumLogLevel, "None")))

  it.live("a client whose transport stops being fetch gets the Effect stream back on the next refresh", () =>
    Effect.gen(function*() {
      const moon = yield* MockMoonServer.make()
      let token = (yield* moon.issueSession()).refreshToken
      const viaFetch = yield* Effect.provide(Effect.service(HttpClient.HttpClient), FetchHttpClient.layer)
      const viaNode = yield* Effect.provide(Effect.service(HttpClient.HttpClient), NodeHttpClient.layerNodeHttp)
      // Fetch, node:http, node:http, fetch: the second refresh carries a body of fetch's kind to node:http.
      const plan = [viaFetch, viaNode, viaNode, viaFetch]
      let calls = 0
      // A client over clients (`makeWith`: no hop of its own for the guard to see).
      const switching: HttpClient.HttpClient = HttpClient.makeWith<
        never,
        never,
        HttpClientError.HttpClientError,
        never
      >(
        (request) => Effect.flatMap(request, (sent) => plan[calls++]!.execute(sent)),
        Effect.succeed
      )
      const outcomes: Array<string> = []
      yield* Effect.gen(function*() {
        const client = yield* RefreshClient.RefreshClient
        for (let i = 0; i < 4; i++) {
          const exit = yield* Effect.exit(client.refresh(token))
          if (Exit.isSuccess(exit)) token = exit.value.refreshToken
          outcomes.push(Exit.isSuccess(exit) ? "rotated" : failureOf(exit)._tag)
        }
      }).pipe(
        Effect.provide(RefreshClient.layer({ baseUrl: moon.url, policy: RefreshPolicy.none })),
        Effect.provideService(HttpClient.HttpClient, switching)
      )
      // node:http cannot send the ReadableStream: that refresh fails, typed and retryable, with
      // nothing sent, and the next goes back to the Effect stream, which every transport sends.
      expect(outcomes).toStrictEqual(["rotated", "TransportError", "rotated", "rotated"])
      // The attempt node:http died on never reached the server.
      expect(yield* moon.stats).toMatchObject({ refreshRequests: 3, rotations: 3 })
      expect((yield* moon.stats).reuseRejections).toBe(0)
      expect(yield* moon.isLive(token)).toBe(true)
    }).pipe(Effect.provideService(References.MinimumLogLevel, "None")))

  it.live("a client that retries on its own does not send the token twice", () =>
    sentOnceUnderOwnRetry(NodeHttpClient.layerNodeHttp, "stream"))
})

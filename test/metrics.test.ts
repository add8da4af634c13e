// The moon_refresh_* metrics after scripted runs, each in a metric registry of
// its own, under the TestClock: every counter and histogram moves by exactly
// what happened, durations included.
import { describe, expect, it } from "@effect/vitest"
import { Context, Duration, Effect, Fiber, Layer, Metric, Option, type Scope } from "effect"
import { HttpClient } from "effect/http"
import { TestClock } from "effect/testing"
import {
  AuthHttpClient,
  Metrics,
  RefreshClient,
  RefreshError,
  RefreshPolicy,
  Session,
  SessionManager,
  SessionPool,
  SessionStore
} from "moon-refresh"
import { MockRefreshClient } from "moon-refresh/testing"
import * as MetricsInternal from "../src/internal/metrics.js"
import * as TestHttpClient from "./support/TestHttpClient.js"

/** Lets every fiber run until it waits on something, without moving the TestClock (see SessionManager.test.ts). */
const settle = Effect.repeat(
  Effect.andThen(
    Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, 0))),
    TestClock.adjust(Duration.zero)
  ),
  { times: 9 }
)

/** Moves the TestClock `step` at a time, `times` times: retries and answers scheduled on the way all run. */
const advance = (step: Duration.Input, times: number) =>
  Effect.repeat(Effect.andThen(TestClock.adjust(step), settle), { times: times - 1 })

/** `body` with a metric registry of its own: the services it builds record there. */
const isolated = <A, E>(body: Effect.Effect<A, E, Scope.Scope>) =>
  Effect.provideService(body, Metric.MetricRegistry, new Map())

const count = (metric: Metric.Counter<number>, labels: Record<string, string> = {}) =>
  Effect.map(Metric.value(Metric.withAttributes(metric, labels)), (state) => state.count)

const gauge = (metric: Metric.Gauge<number>, labels: Record<string, string>) =>
  Effect.map(Metric.value(Metric.withAttributes(metric, labels)), (state) => state.value)

const histogram = (metric: Metric.Histogram<number>, labels: Record<string, string>) =>
  Effect.map(Metric.value(Metric.withAttributes(metric, labels)), (state) => ({ count: state.count, sum: state.sum }))

/** A counter by every value of its one label: what did not move is there too, at 0. */
const byLabel = (metric: Metric.Counter<number>, label: string, values: ReadonlyArray<string>) =>
  Effect.map(
    Effect.forEach(values, (value) => count(metric, { [label]: value })),
    (counts) => Object.fromEntries(values.map((value, i) => [value, counts[i]]))
  )

const outcomes = ["succeeded", "rejected", "transient", "malformed"]
const refreshesByOutcome = byLabel(Metrics.refreshes, "outcome", outcomes)
const attemptsByOutcome = byLabel(Metrics.refreshAttempts, "outcome", outcomes)
const zeroOutcomes = { succeeded: 0, rejected: 0, transient: 0, malformed: 0 }

const sessionBody = {
  access_token: "access-token-secret-v2",
  refresh_token: "refresh-token-secret-v2",
  expires_in: 3600,
  // 2025, far ahead of the TestClock (the epoch).
  expires_at: 1764100000,
  token_type: "bearer",
  user: { id: "user-1" }
}

const reuseBody = { code: 400, error_code: "refresh_token_already_used", msg: "Invalid Refresh Token: Already Used" }

/** The double `server`, each answer `delay` after the request (on the TestClock). */
const slow = (server: TestHttpClient.TestHttpClient, delay: Duration.Input) =>
  Layer.succeed(HttpClient.HttpClient, HttpClient.tapRequest(server.client, () => Effect.sleep(delay)))

const refreshOver = (server: Layer.Layer<HttpClient.HttpClient>, policy: RefreshPolicy.RefreshPolicy) =>
  RefreshClient.refresh("refresh-token-secret-v1").pipe(
    Effect.provide(RefreshClient.layer({ policy })),
    Effect.provide(server)
  )

/** A session due for a refresh from the start (it expires 30 s after the epoch, within the margin). */
const expiring = Session.unsafeMake({
  accessToken: "access-token-secret-v1",
  refreshToken: "refresh-token-secret-v1",
  expiresAt: 30_000,
  user: { id: "user-1" }
})

/** A session fresh for an hour: read without a refresh. */
const fresh = Session.unsafeMake({
  accessToken: "access-token-secret-v1",
  refreshToken: "refresh-token-secret-v1",
  expiresAt: Duration.toMillis(Duration.hours(1)),
  user: { id: "user-1" }
})

/** A manager on `store`, refreshing through the real `RefreshClient` over `server`; no proactive refresh. */
const managerOn = (store: SessionStore.Service, server: Layer.Layer<HttpClient.HttpClient>) =>
  Effect.map(
    Layer.build(
      SessionManager.layer({ autoRefresh: false }).pipe(
        Layer.provide(RefreshClient.layer({ policy: RefreshPolicy.none })),
        Layer.provide(Layer.succeed(SessionStore.SessionStore, store)),
        Layer.provide(server)
      )
    ),
    (context) => Context.get(context, SessionManager.SessionManager)
  )

const storeOps = (store: string, operation: string) =>
  byLabel(Metrics.storeOperations.pipe(Metric.withAttributes({ store, operation })), "outcome", [
    "ok",
    "error",
    "timeout",
    "conflict"
  ])

describe("RefreshClient's metrics", () => {
  it.effect("a refresh that succeeds: one succeeded refresh and POST, its duration exact", () =>
    isolated(Effect.gen(function*() {
      const server = TestHttpClient.make(TestHttpClient.json(200, sessionBody))
      const fiber = yield* Effect.forkChild(refreshOver(slow(server, "250 millis"), RefreshPolicy.none))
      yield* TestClock.adjust("250 millis")
      yield* Fiber.join(fiber)
      expect(yield* refreshesByOutcome).toStrictEqual({ ...zeroOutcomes, succeeded: 1 })
      expect(yield* attemptsByOutcome).toStrictEqual({ ...zeroOutcomes, succeeded: 1 })
      expect(yield* histogram(Metrics.refreshDuration, { outcome: "succeeded" })).toStrictEqual({ count: 1, sum: 0.25 })
      expect(yield* count(Metrics.reuseRejections)).toBe(0)
    })))

  it.effect("a rejected refresh counts as rejected; one rejected as already used is a reuse rejection too", () =>
    isolated(Effect.gen(function*() {
      const notFound = { error: "invalid_grant", error_description: "Invalid Refresh Token: Refresh Token Not Found" }
      yield* Effect.flip(refreshOver(TestHttpClient.make(TestHttpClient.json(400, notFound)).layer, RefreshPolicy.none))
      expect(yield* refreshesByOutcome).toStrictEqual({ ...zeroOutcomes, rejected: 1 })
      expect(yield* count(Metrics.reuseRejections)).toBe(0)
      yield* Effect.flip(
        refreshOver(TestHttpClient.make(TestHttpClient.json(400, reuseBody)).layer, RefreshPolicy.none)
      )
      expect(yield* refreshesByOutcome).toStrictEqual({ ...zeroOutcomes, rejected: 2 })
      expect(yield* attemptsByOutcome).toStrictEqual({ ...zeroOutcomes, rejected: 2 })
      expect(yield* count(Metrics.reuseRejections)).toBe(1)
    })))

  it.effect("a 503 ridden out: a transient POST then a succeeded one, one succeeded refresh", () =>
    isolated(Effect.gen(function*() {
      const server = TestHttpClient.make(TestHttpClient.text(503, "down"), TestHttpClient.json(200, sessionBody))
      const policy = RefreshPolicy.exponential({
        base: "1 second",
        maxRetries: 3,
        maxDelay: "10 seconds",
        maxElapsed: "1 minute",
        jitter: false
      })
      const fiber = yield* Effect.forkChild(refreshOver(slow(server, "100 millis"), policy))
      yield* advance("100 millis", 20)
      yield* Fiber.join(fiber)
      // Recorded as they reach the double, after the delay: sent at 0 and at 1.1 s (0.1 s, then the 1 s back-off).
      expect(server.sentAt()).toStrictEqual([100, 1_200])
      expect(yield* refreshesByOutcome).toStrictEqual({ ...zeroOutcomes, succeeded: 1 })
      expect(yield* attemptsByOutcome).toStrictEqual({ ...zeroOutcomes, transient: 1, succeeded: 1 })
      expect(yield* histogram(Metrics.refreshDuration, { outcome: "transient" })).toStrictEqual({ count: 1, sum: 0.1 })
      expect(yield* histogram(Metrics.refreshDuration, { outcome: "succeeded" })).toStrictEqual({ count: 1, sum: 0.1 })
    })))

  it.effect("a 2xx whose body is not a session is malformed", () =>
    isolated(Effect.gen(function*() {
      const server = TestHttpClient.make(TestHttpClient.json(200, { hello: "world" }))
      const error = yield* Effect.flip(refreshOver(server.layer, RefreshPolicy.none))
      expect(error._tag).toBe("MalformedResponseError")
      expect(yield* refreshesByOutcome).toStrictEqual({ ...zeroOutcomes, malformed: 1 })
      expect(yield* attemptsByOutcome).toStrictEqual({ ...zeroOutcomes, malformed: 1 })
    })))
})

describe("the session engine's metrics", () => {
  it.effect("a lock wait: two holders of one store, the second waits exactly as long as the first's POST", () =>
    isolated(Effect.gen(function*() {
      const store = yield* SessionStore.makeMemory(expiring)
      const server = TestHttpClient.make(TestHttpClient.json(200, sessionBody))
      const first = yield* managerOn(store, slow(server, "2 seconds"))
      const second = yield* managerOn(store, slow(server, "2 seconds"))
      const refreshes = yield* Effect.forkChild(Effect.all([first.refresh, second.refresh], { concurrency: 2 }))
      yield* settle
      yield* advance("1 second", 2)
      yield* Fiber.join(refreshes)
      // One POST: the second holder found the first one's session under the lock.
      expect(server.requests).toHaveLength(1)
      expect(yield* histogram(Metrics.lockWait, { store: "memory" })).toStrictEqual({ count: 2, sum: 2 })
      expect(yield* histogram(Metrics.storeOperationDuration, { store: "memory", operation: "lock" }))
        .toStrictEqual({ count: 2, sum: 2 })
      expect(yield* storeOps("memory", "lock")).toStrictEqual({ ok: 2, error: 0, timeout: 0, conflict: 0 })
      // Each manager read the record when built and under the lock; the first saved its answer.
      expect(yield* storeOps("memory", "read")).toStrictEqual({ ok: 4, error: 0, timeout: 0, conflict: 0 })
      expect(yield* storeOps("memory", "write")).toStrictEqual({ ok: 1, error: 0, timeout: 0, conflict: 0 })
      expect(yield* refreshesByOutcome).toStrictEqual({ ...zeroOutcomes, succeeded: 1 })
    })))

  it.effect("a store write that fails, then one that never answers, by store kind custom", () =>
    isolated(Effect.gen(function*() {
      let saves = 0
      const store = SessionStore.make({
        load: Effect.succeed(Option.none()),
        save: () =>
          ++saves === 1
            ? Effect.fail(new SessionStore.StoreError({ operation: "save", message: "disk full" }))
            : Effect.never,
        clear: Effect.void
      })
      const manager = Context.get(
        yield* Layer.build(
          SessionManager.layer({ storeTimeout: "5 seconds" }).pipe(
            Layer.provide(MockRefreshClient.layer()),
            Layer.provide(Layer.succeed(SessionStore.SessionStore, store))
          )
        ),
        SessionManager.SessionManager
      )
      expect((yield* Effect.flip(manager.signIn(expiring)))._tag).toBe("StoreError")
      const second = yield* Effect.forkChild(Effect.flip(manager.signIn(expiring)))
      yield* advance("1 second", 5)
      expect((yield* Fiber.join(second)).message).toContain("did not answer within 5s")
      expect(yield* storeOps("custom", "write")).toStrictEqual({ ok: 0, error: 1, timeout: 1, conflict: 0 })
      expect(yield* histogram(Metrics.storeOperationDuration, { store: "custom", operation: "write" }))
        .toStrictEqual({ count: 2, sum: 5 })
      expect(yield* storeOps("custom", "read")).toStrictEqual({ ok: 1, error: 0, timeout: 0, conflict: 0 })
    })))

  it.effect("sign-outs by reason: a reuse rejection here, its sign-out seen by another holder, a user's", () =>
    isolated(Effect.gen(function*() {
      const store = yield* SessionStore.makeMemory(expiring)
      const server = TestHttpClient.make(TestHttpClient.json(400, reuseBody))
      const first = yield* managerOn(store, server.layer)
      const second = yield* managerOn(store, server.layer)
      expect((yield* Effect.flip(first.refresh))._tag).toBe("TokenRejectedError")
      yield* settle
      expect(Option.isNone(yield* second.current)).toBe(true)
      yield* first.signIn(expiring)
      yield* first.signOut
      yield* settle
      const reasons = yield* byLabel(Metrics.signOuts, "reason", ["user", "rejected", "reused", "elsewhere"])
      // The second holder took the first one's sign-in, then its sign-out: elsewhere, twice.
      expect(reasons).toStrictEqual({ user: 1, rejected: 0, reused: 1, elsewhere: 2 })
      expect(yield* count(Metrics.reuseRejections)).toBe(1)
    })))

  it.effect("goes to the registry the manager was built with, not the caller's", () =>
    Effect.gen(function*() {
      const built = new Map()
      const callers = new Map()
      const server = TestHttpClient.make(TestHttpClient.json(200, sessionBody))
      const manager = yield* Effect.provideService(
        Effect.flatMap(SessionStore.makeMemory(expiring), (store) => managerOn(store, server.layer)),
        Metric.MetricRegistry,
        built
      )
      yield* manager.refresh.pipe(Effect.provideService(Metric.MetricRegistry, callers))
      const refreshes = Metric.withAttributes(Metrics.refreshes, { outcome: "succeeded" })
      expect((yield* Effect.provideService(Metric.value(refreshes), Metric.MetricRegistry, built)).count).toBe(1)
      expect([...callers.keys()]).toStrictEqual([])
    }))

  it.effect("the hot path records nothing: 1,000 reads of a fresh token leave every series as it was", () =>
    isolated(Effect.gen(function*() {
      const server = TestHttpClient.make(TestHttpClient.json(200, sessionBody))
      const manager = yield* managerOn(yield* SessionStore.makeMemory(fresh), server.layer)
      const pool = yield* poolOf({ name: "hot" })
      yield* pool.signIn("ada", fresh)
      const before = JSON.stringify(yield* Metrics.snapshot)
      for (let i = 0; i < 1_000; i++) {
        yield* manager.accessToken
        yield* pool.accessToken("ada")
      }
      expect(JSON.stringify(yield* Metrics.snapshot)).toBe(before)
      // The reads happened, and the registry holds the library's series (the check above is not of nothing).
      expect(server.requests).toHaveLength(0)
      expect((yield* Metrics.snapshot).length).toBeGreaterThan(0)
    })))
})

describe("AuthHttpClient's metrics", () => {
  it.effect("a 401 replay: one signed request, one refresh, one succeeded replay", () =>
    isolated(Effect.gen(function*() {
      const api = TestHttpClient.make(TestHttpClient.json(401, { error: "expired" }), TestHttpClient.json(200, {}))
      const refresh = TestHttpClient.make(TestHttpClient.json(200, sessionBody))
      const manager = yield* managerOn(yield* SessionStore.makeMemory(fresh), refresh.layer)
      const client = yield* AuthHttpClient.make(api.client).pipe(
        Effect.provideService(SessionManager.SessionManager, manager)
      )
      const response = yield* client.get("https://api.example.com/accounts")
      expect(response.status).toBe(200)
      expect(api.requests.map((request) => request.headers["authorization"])).toStrictEqual([
        "Bearer access-token-secret-v1",
        "Bearer access-token-secret-v2"
      ])
      expect(yield* count(Metrics.requestsSigned)).toBe(1)
      expect(yield* byLabel(Metrics.replays, "outcome", ["succeeded", "failed"])).toStrictEqual({
        succeeded: 1,
        failed: 0
      })
      expect(yield* refreshesByOutcome).toStrictEqual({ ...zeroOutcomes, succeeded: 1 })
    })))

  it.effect("a replay whose refresh fails is a failed replay", () =>
    isolated(Effect.gen(function*() {
      const api = TestHttpClient.make(TestHttpClient.json(401, { error: "expired" }))
      const refresh = TestHttpClient.make(TestHttpClient.json(400, reuseBody))
      const manager = yield* managerOn(yield* SessionStore.makeMemory(fresh), refresh.layer)
      const client = yield* AuthHttpClient.make(api.client).pipe(
        Effect.provideService(SessionManager.SessionManager, manager)
      )
      expect((yield* Effect.flip(client.get("https://api.example.com/accounts")))._tag).toBe("TokenRejectedError")
      expect(yield* byLabel(Metrics.replays, "outcome", ["succeeded", "failed"])).toStrictEqual({
        succeeded: 0,
        failed: 1
      })
    })))

  it.effect("a request to an origin not allowed goes unsigned, and is counted so", () =>
    isolated(Effect.gen(function*() {
      const api = TestHttpClient.make(TestHttpClient.json(200, {}))
      const manager = yield* managerOn(yield* SessionStore.makeMemory(expiring), api.layer)
      const client = yield* AuthHttpClient.make(api.client, { origins: ["https://api.example.com"] }).pipe(
        Effect.provideService(SessionManager.SessionManager, manager)
      )
      yield* client.get("https://elsewhere.example.com/")
      yield* client.get("https://elsewhere.example.com/")
      expect(api.requests.map((request) => request.headers["authorization"])).toStrictEqual([undefined, undefined])
      expect(yield* count(Metrics.requestsUnsigned, { reason: "origin_not_allowed" })).toBe(2)
      expect(yield* count(Metrics.requestsSigned)).toBe(0)
    })))
})

/** A pool over a `MockRefreshClient` and a keyed memory store, in the current registry. */
const poolWithMock = (options: SessionPool.Options, mock: MockRefreshClient.Options = {}) =>
  Effect.map(
    Layer.build(
      SessionPool.layer({ ...options, session: { autoRefresh: false } }).pipe(
        Layer.provideMerge(MockRefreshClient.layer(mock)),
        Layer.provide(SessionStore.layerMemoryKeyed)
      )
    ),
    (context) => ({
      pool: Context.get(context, SessionPool.SessionPool),
      mock: Context.get(context, MockRefreshClient.MockRefreshClient)
    })
  )

const poolOf = (options: SessionPool.Options, mock: MockRefreshClient.Options = {}) =>
  Effect.map(poolWithMock(options, mock), ({ pool }) => pool)

const poolGauges = (pool: string) =>
  Effect.all({
    live: gauge(Metrics.poolSessions, { pool, state: "live" }),
    idle: gauge(Metrics.poolSessions, { pool, state: "idle" }),
    inFlight: gauge(Metrics.poolRefreshesInFlight, { pool }),
    queued: gauge(Metrics.poolRefreshesQueued, { pool }),
    circuit: gauge(Metrics.poolCircuitState, { pool })
  })

describe("SessionPool's metrics", () => {
  it.effect("a pool at its refresh cap: in flight at the cap, the rest queued, then both back to 0", () =>
    isolated(Effect.gen(function*() {
      const { mock, pool } = yield* poolWithMock({ name: "api", maxConcurrentRefreshes: 2 }, {
        whenEmpty: MockRefreshClient.succeed({ delay: "1 second" })
      })
      const keys = ["a", "b", "c", "d", "e"]
      yield* Effect.forEach(
        keys,
        (key) => Effect.flatMap(mock.issueSession({ name: key }), (session) => pool.signIn(key, session)),
        {
          discard: true
        }
      )
      const refreshes = yield* Effect.forkChild(Effect.forEach(keys, pool.refresh, { concurrency: "unbounded" }))
      yield* settle
      expect(yield* poolGauges("api")).toStrictEqual({ live: 5, idle: 0, inFlight: 2, queued: 3, circuit: 0 })
      yield* advance("1 second", 3)
      yield* Fiber.join(refreshes)
      expect(yield* poolGauges("api")).toStrictEqual({ live: 5, idle: 5, inFlight: 0, queued: 0, circuit: 0 })
      // Another pool's name is another series.
      expect(yield* gauge(Metrics.poolSessions, { pool: "default", state: "live" })).toBe(0)
    })))

  it.effect("the circuit opens after 5 transient failures in a row: one trip, open, then half-open, then closed", () =>
    isolated(Effect.gen(function*() {
      const down = new RefreshError.ServerError({ status: 503, message: "down" })
      const { mock, pool } = yield* poolWithMock({ name: "api" }, { whenEmpty: MockRefreshClient.fail(down) })
      const keys = Array.from({ length: 7 }, (_, i) => `user-${i}`)
      yield* Effect.forEach(
        keys,
        (key) => Effect.flatMap(mock.issueSession({ name: key }), (session) => pool.signIn(key, session)),
        {
          discard: true
        }
      )
      yield* Effect.forEach(keys, (key) => Effect.result(pool.refresh(key)), { discard: true })
      expect(yield* count(Metrics.poolCircuitTrips, { pool: "api" })).toBe(1)
      expect(yield* gauge(Metrics.poolCircuitState, { pool: "api" })).toBe(2)
      yield* TestClock.adjust("1 second")
      expect(yield* gauge(Metrics.poolCircuitState, { pool: "api" })).toBe(1)
      // Past the key's own cooldown, a refresh that succeeds closes it.
      yield* TestClock.adjust("10 seconds")
      yield* mock.script(MockRefreshClient.succeed())
      yield* pool.refresh("user-0")
      expect(yield* gauge(Metrics.poolCircuitState, { pool: "api" })).toBe(0)
      expect(yield* count(Metrics.poolCircuitTrips, { pool: "api" })).toBe(1)
    })))
})

describe("what counts as a reuse", () => {
  it("GoTrue's and Moon's \"Already Used\", not a token revoked by a newer login or an expired session", () => {
    const rejected = (message: string) => new RefreshError.TokenRejectedError({ status: 400, message })
    expect(MetricsInternal.isReuse(rejected("Invalid Refresh Token: Already Used"))).toBe(true)
    expect(MetricsInternal.isReuse(rejected("refresh_token_already_used"))).toBe(true)
    expect(MetricsInternal.isReuse(rejected("Invalid Refresh Token: Revoked by Newer Login"))).toBe(false)
    expect(MetricsInternal.isReuse(rejected("Invalid Refresh Token: Session Expired (Inactivity)"))).toBe(false)
  })
})

// SessionPool under TestClock, over MockRefreshClient: sessions per key,
// created on first use, dropped when idle or past capacity, refreshes capped
// and spread, one key's failure kept to that key.
import { describe, expect, it } from "@effect/vitest"
import { Cause, Context, Duration, Effect, Exit, Fiber, Layer, Option, Redacted, Scope, Stream } from "effect"
import { TestClock } from "effect/testing"
import { RefreshError, SessionPool, SessionStore } from "moon-refresh"
import { MockRefreshClient } from "moon-refresh/testing"
import { fifoLimiter } from "../src/internal/pool.js"

/**
 * Lets every fiber run until it waits on something, without moving the
 * TestClock: what Effect 3's `TestClock.adjust(Duration.zero)` did (it waited
 * real timer turns, in which every fiber ran until suspended). Effect 4's
 * `adjust(0)` yields to the fiber scheduler once, so a chain of forks and
 * wake-ups may still be running after it, and a check that something did not
 * happen would prove nothing. Ten turns, each a real `setTimeout(0)` and
 * `TestClock.adjust(0)`: nothing here waits on real I/O, so that does not
 * depend on the machine's load.
 */
const settle = Effect.repeat(
  Effect.andThen(
    Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, 0))),
    TestClock.adjust(Duration.zero)
  ),
  { times: 9 }
)

/** A pool over a mock and a keyed memory store; `seed(key, lifetime)` stores a session the mock issued for a key. */
const world = (options: SessionPool.Options = {}, mockOptions: MockRefreshClient.Options = {}) =>
  Effect.gen(function*() {
    const mockContext = yield* Layer.build(MockRefreshClient.layer(mockOptions))
    const mock = Context.get(mockContext, MockRefreshClient.MockRefreshClient)
    const keyed = yield* SessionStore.makeMemoryKeyed
    const pool = Context.get(
      yield* Layer.build(
        SessionPool.layer(options).pipe(
          Layer.provide(Layer.succeedContext(mockContext)),
          Layer.provide(Layer.succeed(SessionStore.KeyedSessionStore, keyed))
        )
      ),
      SessionPool.SessionPool
    )
    const seed = (key: string, lifetime: Duration.Input = "1 hour") =>
      Effect.gen(function*() {
        const session = yield* mock.issueSession({ lifetime, name: key })
        const store = yield* keyed.forKey(key)
        yield* store.save(session)
        return session
      })
    return { mock, keyed, pool, seed }
  })

const tokenOf = (token: Redacted.Redacted<string>) => Redacted.value(token)

/** Moves the TestClock a second at a time until `fiber` is done: its work needs many sleeps in turn. */
const joinAdvancing = <A, E>(fiber: Fiber.Fiber<A, E>) =>
  Effect.gen(function*() {
    for (let i = 0; i < 600 && fiber.pollUnsafe() === undefined; i++) yield* TestClock.adjust("1 second")
    return yield* Fiber.join(fiber)
  })

describe("SessionPool", () => {
  it.effect("loads a key's session from its store on first use, and serves it without a request", () =>
    Effect.gen(function*() {
      const { mock, pool, seed } = yield* world()
      yield* seed("ada")
      expect(tokenOf(yield* pool.accessToken("ada"))).toBe("mock-access-token-ada")
      expect((yield* pool.stats).live).toBe(1)
      expect((yield* mock.stats).calls).toBe(0)
    }))

  it.effect("a key with nothing stored fails with NoSessionError, without a request", () =>
    Effect.gen(function*() {
      const { mock, pool } = yield* world()
      expect((yield* Effect.flip(pool.accessToken("nobody")))._tag).toBe("NoSessionError")
      expect((yield* mock.stats).calls).toBe(0)
    }))

  it.effect("keys are independent: signing one in or out leaves the others alone", () =>
    Effect.gen(function*() {
      const { mock, pool, seed } = yield* world()
      yield* seed("ada")
      yield* seed("bob")
      yield* pool.signOut("ada")
      expect(Option.isNone(yield* pool.current("ada"))).toBe(true)
      expect(tokenOf(yield* pool.accessToken("bob"))).toBe("mock-access-token-bob")
      const carol = yield* mock.issueSession({ name: "carol-login" })
      yield* pool.signIn("carol", carol)
      expect(tokenOf(yield* pool.accessToken("carol"))).toBe("mock-access-token-carol-login")
    }))

  it.effect("refreshes each key ahead of expiry, once per expiry, with no reuse", () =>
    Effect.gen(function*() {
      const { mock, pool, seed } = yield* world({ session: { margin: "1 minute" }, idleTimeToLive: "1 hour" }, {
        lifetime: "10 minutes"
      })
      const keys = Array.from({ length: 50 }, (_, i) => `user-${i}`)
      yield* Effect.forEach(keys, (key) => seed(key, "10 minutes"), { discard: true })
      yield* Effect.forEach(keys, pool.accessToken, { discard: true })
      // 35 minutes: each 10-minute token is refreshed 9 to 9.5 minutes after it was issued: 3 refreshes a key.
      // (A minute at a time: a refresh re-arms the pool's timer a few fibers later than a single jump would wait.)
      for (let minute = 0; minute < 35; minute++) yield* TestClock.adjust(Duration.minutes(1))
      const stats = yield* mock.stats
      expect(stats).toMatchObject({ calls: 150, rotations: 150, reuseRejections: 0 })
      for (const key of keys) expect(yield* mock.isLive((yield* pool.session(key)).refreshToken)).toBe(true)
    }))

  it.effect("proactive refreshes of sessions stored together are spread, not all at one instant", () =>
    Effect.gen(function*() {
      const { mock, pool, seed } = yield* world({ session: { margin: "1 minute" }, idleTimeToLive: "1 hour" })
      const keys = Array.from({ length: 200 }, (_, i) => `user-${i}`)
      yield* Effect.forEach(keys, (key) => seed(key, "10 minutes"), { discard: true })
      yield* Effect.forEach(keys, pool.accessToken, { discard: true })
      for (let minute = 0; minute < 10; minute++) yield* TestClock.adjust(Duration.minutes(1))
      const starts = new Set((yield* mock.calls).map((call) => call.startedAt))
      // Over the first half of the margin (30 s): hundreds of distinct instants, not one.
      expect(starts.size).toBeGreaterThan(150)
      expect(Math.max(...starts) - Math.min(...starts)).toBeLessThanOrEqual(30_000)
    }))

  it.effect("never more refresh POSTs in flight than the cap, when 300 sessions expire together", () =>
    Effect.gen(function*() {
      const { mock, pool, seed } = yield* world({ maxConcurrentRefreshes: 8, session: { autoRefresh: false } }, {
        whenEmpty: MockRefreshClient.succeed({ delay: "100 millis" })
      })
      const keys = Array.from({ length: 300 }, (_, i) => `user-${i}`)
      yield* Effect.forEach(keys, (key) => seed(key, "2 minutes"), { discard: true })
      yield* Effect.forEach(keys, pool.accessToken, { discard: true })
      // Everyone's token has expired: every read needs a refresh at once.
      yield* TestClock.adjust(Duration.minutes(3))
      const reads = yield* Effect.forkChild(Effect.forEach(keys, pool.accessToken, { concurrency: "unbounded" }))
      yield* joinAdvancing(reads)
      const stats = yield* pool.stats
      expect(stats.maxRefreshesInFlight).toBe(8)
      expect(yield* mock.stats).toMatchObject({ rotations: 300, reuseRejections: 0 })
    }))

  it.effect("a rejected token signs out that key only", () =>
    Effect.gen(function*() {
      const { mock, pool, seed } = yield* world({ session: { autoRefresh: false } })
      const ada = yield* seed("ada", "30 seconds")
      yield* seed("bob", "30 seconds")
      yield* mock.revokeSession(ada.refreshToken)
      yield* TestClock.adjust(Duration.seconds(31))
      expect((yield* Effect.flip(pool.accessToken("ada")))._tag).toBe("TokenRejectedError")
      expect((yield* Effect.flip(pool.accessToken("ada")))._tag).toBe("NoSessionError")
      expect(yield* mock.isLive((yield* pool.session("bob")).refreshToken)).toBe(true)
    }))

  it.effect("an outage backs the whole pool off: after 5 failures in a row, refreshes fail at once without a POST", () =>
    Effect.gen(function*() {
      const down = new RefreshError.ServerError({ status: 503, message: "down" })
      const { mock, pool, seed } = yield* world({ session: { autoRefresh: false } }, {
        whenEmpty: MockRefreshClient.fail(down)
      })
      const keys = Array.from({ length: 20 }, (_, i) => `user-${i}`)
      yield* Effect.forEach(keys, (key) => seed(key, "30 seconds"), { discard: true })
      yield* TestClock.adjust(Duration.seconds(31))
      const results = yield* Effect.forEach(keys, (key) => Effect.result(pool.refresh(key)))
      expect(results.every((result) => result._tag === "Failure")).toBe(true)
      // Five POSTs failed; the other fifteen keys were refused by the circuit, with no request.
      expect((yield* mock.stats).calls).toBe(5)
      // A second later the circuit lets one through again.
      yield* TestClock.adjust(Duration.seconds(1))
      yield* mock.script(MockRefreshClient.succeed())
      // Each key is in its own cooldown now: this one is past it.
      yield* TestClock.adjust(Duration.seconds(10))
      expect(tokenOf(yield* pool.accessToken("user-0"))).toMatch(/^mock-access-token-/)
    }))

  it.effect("a session idle past idleTimeToLive is dropped, and comes back from its store without a request", () =>
    Effect.gen(function*() {
      const { mock, pool, seed } = yield* world({ idleTimeToLive: "5 minutes" })
      yield* seed("ada")
      yield* pool.accessToken("ada")
      yield* TestClock.adjust(Duration.minutes(7))
      expect((yield* pool.stats).live).toBe(0)
      expect(tokenOf(yield* pool.accessToken("ada"))).toBe("mock-access-token-ada")
      expect((yield* pool.stats).live).toBe(1)
      expect((yield* mock.stats).calls).toBe(0)
    }))

  it.effect("past capacity, the least recently used session is dropped first", () =>
    Effect.gen(function*() {
      const { pool, seed } = yield* world({ capacity: 2 })
      for (const key of ["a", "b", "c"]) yield* seed(key)
      yield* pool.accessToken("a")
      yield* TestClock.adjust("2 seconds")
      yield* pool.accessToken("b")
      yield* TestClock.adjust("2 seconds")
      // "a" is used again: "b" is now the least recent.
      yield* pool.accessToken("a")
      yield* TestClock.adjust("2 seconds")
      yield* pool.accessToken("c")
      expect((yield* pool.stats).live).toBe(2)
      // Both survivors are served; b comes back from its store.
      expect(tokenOf(yield* pool.accessToken("b"))).toBe("mock-access-token-b")
    }))

  it.effect("events carry their key", () =>
    Effect.gen(function*() {
      const { mock, pool } = yield* world()
      const seen: Array<SessionPool.KeyedEvent> = []
      yield* Effect.forkScoped(Stream.runForEach(pool.events, (event) => Effect.sync(() => seen.push(event))))
      yield* settle
      yield* pool.signIn("ada", yield* mock.issueSession({ name: "ada" }))
      yield* pool.signOut("ada")
      yield* settle
      expect(seen.map(({ event, key }) => `${key}:${event._tag}`)).toStrictEqual(["ada:SignedIn", "ada:SignedOut"])
    }))

  it.effect("httpClient(key) signs requests with that key's token", () =>
    Effect.gen(function*() {
      const { pool, seed } = yield* world()
      yield* seed("ada")
      const manager = pool.manager("ada")
      expect(tokenOf(yield* manager.accessToken)).toBe("mock-access-token-ada")
    }))

  it.effect("an invalid option is a defect naming it", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(
        Effect.scoped(SessionPool.make({ capacity: 0 })).pipe(
          Effect.provide(MockRefreshClient.layer()),
          Effect.provide(SessionStore.layerMemoryKeyed)
        )
      )
      expect(Exit.isFailure(exit) && Cause.pretty(exit.cause)).toContain(
        `SessionPool: option "capacity" must be a whole number >= 1`
      )
    }))
})

describe("the pool's limiter", () => {
  it.effect("runs at most N at once, the others in arrival order, and a waiter that gives up loses no permit", () =>
    Effect.gen(function*() {
      const limit = fifoLimiter(2)
      const started: Array<number> = []
      const job = (n: number) => limit(Effect.andThen(Effect.sync(() => started.push(n)), Effect.sleep("1 second")))
      const fibers = yield* Effect.forEach([1, 2, 3, 4, 5], (n) => Effect.forkChild(job(n)))
      yield* settle
      expect(started).toStrictEqual([1, 2])
      // 3 gives up while waiting: 4 and 5 still get their turn, in order.
      yield* Fiber.interrupt(fibers[2]!)
      yield* TestClock.adjust("1 second")
      expect(started).toStrictEqual([1, 2, 4, 5])
      yield* TestClock.adjust("1 second")
      yield* Fiber.join(fibers[4]!)
      // Both permits are free again.
      const after: Array<number> = []
      yield* Effect.all([limit(Effect.sync(() => after.push(1))), limit(Effect.sync(() => after.push(2)))], {
        concurrency: 2
      })
      expect(after).toStrictEqual([1, 2])
    }))
})

describe("closing a pool", () => {
  // Review finding: the pool's timer wheel forked its due runs into the pool's scope, which
  // forks nothing once it is closing, so a save retried on a timer never ran while the pool's
  // close waited for it: the rotation was lost though the store came back at once.
  it.effect("waits for a rotation whose save failed, retrying it on its timer until the store is back", () =>
    Effect.gen(function*() {
      const mockContext = yield* Layer.build(MockRefreshClient.layer())
      const mock = Context.get(mockContext, MockRefreshClient.MockRefreshClient)
      const memory = yield* SessionStore.makeMemoryKeyed
      const control = { down: false }
      const keyed: SessionStore.Keyed = {
        forKey: (key) =>
          Effect.map(memory.forKey(key), (store) => ({
            ...store,
            write: (record, expected) =>
              Effect.suspend(() =>
                control.down
                  ? Effect.fail(new SessionStore.StoreError({ operation: "save", message: "disk full" }))
                  : store.write(record, expected)
              )
          }))
      }
      const scope = yield* Scope.make()
      const pool = Context.get(
        yield* Layer.buildWithScope(
          SessionPool.layer().pipe(
            Layer.provide(Layer.succeedContext(mockContext)),
            Layer.provide(Layer.succeed(SessionStore.KeyedSessionStore, keyed))
          ),
          scope
        ),
        SessionPool.SessionPool
      )
      const seeded = yield* mock.issueSession({ lifetime: "1 hour", name: "u" })
      const store = yield* memory.forKey("u")
      yield* store.save(seeded)
      control.down = true
      const refreshed = yield* pool.refresh("u")
      const closing = yield* Effect.forkChild(Scope.close(scope, Exit.void))
      yield* settle
      expect(closing.pollUnsafe(), "closing waits for the owed save").toBeUndefined()
      control.down = false
      yield* TestClock.adjust("5 seconds")
      yield* settle
      const stored = yield* store.load
      expect(Option.map(stored, (s) => tokenOf(s.refreshToken)), "the retried save landed").toStrictEqual(
        Option.some(tokenOf(refreshed.refreshToken))
      )
      expect(closing.pollUnsafe(), "and closing ended with it").toBeDefined()
      // (Past its bound, closing ends whatever the store does.)
      yield* joinAdvancing(closing)
    }))
})

/**
 * A `SessionPool` over a keyed store with real I/O (files, Redis), under
 * TestClock: the clock moves only while no store operation is in flight, so a
 * store's answer never races the time the test makes pass (a store timeout
 * firing because the test jumped ahead while a file was being renamed).
 */
import { expect } from "@effect/vitest"
import { Context, Deferred, Duration, Effect, Layer, Redacted, Stream } from "effect"
import { TestClock } from "effect/testing"
import { SessionPool, SessionStore } from "moon-refresh"
import { MockRefreshClient } from "moon-refresh/testing"

/** The keyed store, and how many of its operations are in flight. */
export interface Tracked {
  readonly keyed: SessionStore.Keyed
  readonly inFlight: () => number
}

export const tracked = (keyed: SessionStore.Keyed): Tracked => {
  let inFlight = 0
  const track = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
    Effect.acquireUseRelease(Effect.sync(() => inFlight++), () => effect, () => Effect.sync(() => inFlight--))
  return {
    inFlight: () => inFlight,
    keyed: {
      forKey: (key) =>
        track(Effect.map(keyed.forKey(key), (store): SessionStore.Service => ({
          ...store,
          load: track(store.load),
          read: track(store.read),
          save: (session) => track(store.save(session)),
          clear: track(store.clear),
          write: (session, expected) => track(store.write(session, expected)),
          withLock: (critical) => track(store.withLock(critical)),
          withLease: (use) => track(store.withLease(use))
        })))
    }
  }
}

/** One turn of the real event loop: file and socket I/O get to complete. */
const realTurn = Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, 1)))

/** Waits (in real time, at most 10 s) until `condition` holds. */
export const eventually = (what: string, condition: () => boolean) =>
  Effect.gen(function*() {
    const deadline = Date.now() + 10_000
    while (!condition()) {
      if (Date.now() > deadline) return yield* Effect.die(new Error(`still not true after 10 s: ${what}`))
      yield* realTurn
    }
  })

/** Waits until no store operation and no refresh has been in flight for a few turns of the event loop. */
export const settle = (store: Tracked, pool: SessionPool.Service) =>
  Effect.gen(function*() {
    const deadline = Date.now() + 10_000
    for (let quiet = 0; quiet < 3;) {
      if (Date.now() > deadline) {
        return yield* Effect.die(new Error("the pool's store operations did not settle in 10 s"))
      }
      yield* realTurn
      const busy = store.inFlight() > 0 || (yield* pool.stats).refreshesInFlight > 0
      quiet = busy ? 0 : quiet + 1
    }
  })

/** Moves the TestClock by `total`, `step` at a time, settling before each step. */
export const advance = (store: Tracked, pool: SessionPool.Service, total: Duration.Input) =>
  Effect.gen(function*() {
    const steps = Math.ceil(Duration.toMillis(total) / 5_000)
    for (let i = 0; i < steps; i++) {
      yield* settle(store, pool)
      yield* TestClock.adjust("5 seconds")
    }
    yield* settle(store, pool)
  })

export interface Scenario {
  readonly keyed: SessionStore.Keyed
  /** Whether the store holds anything for the keys' change feeds (a watcher, a subscription). */
  readonly following: () => boolean
  readonly keys?: number | undefined
}

/**
 * 50 keys with 10-minute sessions in the store, read once, then left alone:
 * each is refreshed once before its first expiry (9 to 9.5 minutes), dropped
 * for being idle at 12 minutes (its feed's resources released with it), read
 * again at 16 minutes from the store without a request, and refreshed once
 * more before its second expiry. Two POSTs a key, no reuse.
 */
export const acrossExpiries = (scenario: Scenario) =>
  Effect.gen(function*() {
    const store = tracked(scenario.keyed)
    const mockContext = yield* Layer.build(MockRefreshClient.layer({ lifetime: "10 minutes" }))
    const mock = Context.get(mockContext, MockRefreshClient.MockRefreshClient)
    const pool = Context.get(
      yield* Layer.build(
        SessionPool.layer({ session: { margin: "1 minute" }, idleTimeToLive: "12 minutes" }).pipe(
          Layer.provide(Layer.succeedContext(mockContext)),
          Layer.provide(Layer.succeed(SessionStore.KeyedSessionStore, store.keyed))
        )
      ),
      SessionPool.SessionPool
    )
    const refreshed = new Map<string, number>()
    yield* Effect.forkScoped(Stream.runForEach(pool.events, ({ event, key }) =>
      Effect.sync(() => {
        if (event._tag === "Refreshed") refreshed.set(key, (refreshed.get(key) ?? 0) + 1)
      })))
    const keys = Array.from({ length: scenario.keys ?? 50 }, (_, i) => `user-${i}`)
    for (const key of keys) {
      const session = yield* mock.issueSession({ name: key })
      yield* (yield* scenario.keyed.forKey(key)).save(session)
    }
    const storedToken = (key: string) =>
      Effect.map(
        Effect.flatMap(scenario.keyed.forKey(key), (s) => s.read),
        (stored) => stored.session._tag === "Some" ? Redacted.value(stored.session.value.refreshToken) : "none"
      )
    yield* Effect.forEach(keys, pool.accessToken, { discard: true })
    expect((yield* pool.stats).live).toBe(keys.length)
    yield* eventually("the feeds run", scenario.following)

    // Past the first expiry: one refresh a key, written to the store.
    yield* advance(store, pool, "11 minutes")
    expect(yield* mock.stats).toMatchObject({ calls: keys.length, rotations: keys.length, reuseRejections: 0 })
    expect([...refreshed.values()]).toStrictEqual(keys.map(() => 1))

    // Idle past idleTimeToLive: every session is dropped, and with it what its feed held.
    yield* advance(store, pool, "5 minutes")
    expect((yield* pool.stats).live).toBe(0)
    yield* eventually("nothing is followed once every session is dropped", () => !scenario.following())

    // Back from the store, as rotated at the first refresh, without a request.
    for (const key of keys) {
      const token = yield* storedToken(key)
      expect(Redacted.value((yield* pool.session(key)).refreshToken)).toBe(token)
      expect(yield* mock.isLive(token)).toBe(true)
    }
    expect((yield* mock.stats).calls).toBe(keys.length)
    expect((yield* pool.stats).live).toBe(keys.length)

    // Past the second expiry: one more refresh a key.
    yield* advance(store, pool, "5 minutes")
    expect(yield* mock.stats).toMatchObject({
      calls: 2 * keys.length,
      rotations: 2 * keys.length,
      reuseRejections: 0
    })
    expect([...refreshed.values()]).toStrictEqual(keys.map(() => 2))
    for (const key of keys) {
      const held = Redacted.value((yield* pool.session(key)).refreshToken)
      expect(yield* storedToken(key)).toBe(held)
      expect(yield* mock.isLive(held)).toBe(true)
    }
  })

/**
 * Follows the change feed of each store in a fiber of its own; `received`
 * completes when one of them sees a first write (revision 1).
 */
export const followFeeds = (stores: ReadonlyArray<SessionStore.Service>) =>
  Effect.gen(function*() {
    const received = yield* Deferred.make<void>()
    const feeds = yield* Effect.forEach(stores, (store) =>
      Effect.forkChild(
        Stream.runForEach(
          store.changes,
          (stored) => stored.revision === 1 ? Deferred.succeed(received, undefined) : Effect.void
        )
      ))
    return { received, feeds }
  })

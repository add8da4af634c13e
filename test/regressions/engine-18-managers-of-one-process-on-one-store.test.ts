// Lead's finding (engine-fixes.md): on a store no other process holds
// (`shared: false`: `SessionStore.layerMemory`, `layerKeyValueStore`, a plain
// `make`), the engine let the store's lock go once a refresh's callers had
// their answer, before its rotation was saved: right for a manager that is
// its store's only holder, wrong for the several managers of one process that
// docs/05 says such a store coordinates. Another manager on the same store
// object then took the lock while the store still held the spent token:
// it sent it again (the session revoked), or refreshed the old family over a
// `signInWithRefreshToken` whose save had failed (the sign-in lost). The lock
// now goes early only while a manager is its store object's only holder.
// The store here is `makeKeyValueStore` over a `KeyValueStore` whose writes
// fail or lag on demand: a store in memory never fails nor delays a write.
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Fiber, Layer, Option, Redacted } from "effect"
import { KeyValueStore } from "effect/persistence"
import type { Session } from "moon-refresh"
import { SessionManager, SessionStore } from "moon-refresh"
import { MockRefreshClient } from "moon-refresh/testing"
import { adjust, seed, settle, storedRefreshToken } from "./harness.js"

const second = 1_000

/**
 * `SessionStore.layerKeyValueStore` over a `KeyValueStore` in memory whose
 * writes can be made to fail (`down`) or to take `slowRemove` ms (a clear).
 */
const flakyKeyValueStore = () => {
  const values = new Map<string, string>()
  const control = { down: false, slowRemove: 0 }
  const unavailable = (method: string) => new KeyValueStore.KeyValueStoreError({ method, message: "disk full" })
  const kv = KeyValueStore.makeStringOnly({
    get: (key) => Effect.sync(() => values.get(key)),
    set: (key, value) =>
      Effect.suspend(() =>
        control.down ? Effect.fail(unavailable("set")) : Effect.sync(() => void values.set(key, value))
      ),
    // (Built once by the store, run at each clear: read `control` when it runs.)
    remove: (key) =>
      Effect.andThen(
        Effect.suspend(() => control.slowRemove > 0 ? Effect.sleep(control.slowRemove) : Effect.void),
        Effect.suspend(() =>
          control.down ? Effect.fail(unavailable("remove")) : Effect.sync(() => void values.delete(key))
        )
      ),
    clear: Effect.sync(() => values.clear()),
    size: Effect.sync(() => values.size),
    keys: Effect.sync(() => [...values.keys()])
  })
  const store = (seeded: Session.Session) =>
    Effect.tap(
      Effect.provideService(SessionStore.makeKeyValueStore({ key: "moon-session" }), KeyValueStore.KeyValueStore, kv),
      (store) => Effect.orDie(SessionStore.save(store, seeded))
    )
  return { control, store }
}

/** Two managers of one process on one store object (the harness's), each built by `SessionManager.layer`. */
const twoManagers = (mock: MockRefreshClient.Options = {}) =>
  Effect.gen(function*() {
    const flaky = flakyKeyValueStore()
    const seeded = yield* seed({ mock, store: flaky.store })
    const build = Effect.map(
      Layer.build(seeded.managerLayer({ autoRefresh: false })),
      (context) => Context.get(context, SessionManager.SessionManager)
    )
    const a = yield* build
    const b = yield* build
    return { ...seeded, control: flaky.control, a, b }
  })

const tokenOf = (session: Option.Option<Session.Session>): string =>
  Option.match(session, { onNone: () => "none", onSome: (s) => Redacted.value(s.refreshToken) })

describe("engine 18: managers of one process on one unshared store object", () => {
  it.effect("a refresh whose save fails: the other manager never sends the spent token", () =>
    Effect.gen(function*() {
      const { a, b, control, mock, seeded, store } = yield* twoManagers()
      // A refreshes; the store cannot be written: A keeps the new session in memory, the store the spent token.
      control.down = true
      const rotated = yield* a.refresh
      expect(yield* storedRefreshToken(store)).toBe(Redacted.value(seeded.refreshToken))
      // B refreshes meanwhile; the store comes back a second later.
      const refreshing = yield* Effect.forkChild(b.refresh)
      yield* adjust(second)
      control.down = false
      yield* adjust(5 * second)
      const taken = yield* Fiber.join(refreshing)
      expect(yield* mock.stats).toMatchObject({ calls: 1, reuseRejections: 0, unknownTokens: 0 })
      const newest = Redacted.value(rotated.refreshToken)
      expect([Redacted.value(taken.refreshToken), tokenOf(yield* b.current), yield* storedRefreshToken(store)])
        .toStrictEqual([newest, newest, newest])
    }))

  it.effect("a sign-out during a refresh, its tombstone slow: the other manager never sends the spent token", () =>
    Effect.gen(function*() {
      const { a, b, control, mock, store } = yield* twoManagers({
        whenEmpty: MockRefreshClient.succeed({ delay: "1 second" })
      })
      control.slowRemove = 5 * second
      const refreshing = yield* Effect.forkChild(a.refresh)
      yield* settle
      const signingOut = yield* Effect.forkChild(a.signOut)
      // The refresh is answered (and dropped: the user signed out) while the tombstone is on its way.
      yield* adjust(second)
      yield* Fiber.await(refreshing)
      const other = yield* Effect.forkChild(Effect.exit(b.refresh))
      yield* adjust(5 * second)
      yield* Fiber.join(signingOut)
      yield* Fiber.join(other)
      expect(yield* mock.stats).toMatchObject({ calls: 1, reuseRejections: 0, unknownTokens: 0 })
      expect([tokenOf(yield* a.current), tokenOf(yield* b.current), yield* storedRefreshToken(store)])
        .toStrictEqual(["none", "none", "none"])
    }))

  it.effect("a signInWithRefreshToken whose save failed is not undone by the other manager's refresh", () =>
    Effect.gen(function*() {
      const { a, b, control, mock, seeded, store } = yield* twoManagers()
      const fresh = yield* mock.issueSession()
      control.down = true
      const signedIn = yield* a.signInWithRefreshToken(fresh.refreshToken)
      // B, still holding the old session, refreshes meanwhile; the store comes back a second later.
      const refreshing = yield* Effect.forkChild(b.refresh)
      yield* adjust(second)
      control.down = false
      yield* adjust(5 * second)
      const taken = Redacted.value((yield* Fiber.join(refreshing)).refreshToken)
      expect(yield* mock.stats).toMatchObject({ reuseRejections: 0, unknownTokens: 0 })
      // B refreshed the signed-in session (or took it), never the old one over it.
      const sent = (yield* mock.tokens).map(Redacted.value)
      expect(sent).not.toContain(Redacted.value(seeded.refreshToken))
      const [started, rotated] = [fresh, signedIn].map((s) => Redacted.value(s.refreshToken))
      expect([[started], [started, rotated]]).toContainEqual(sent)
      expect([tokenOf(yield* a.current), tokenOf(yield* b.current), yield* storedRefreshToken(store)])
        .toStrictEqual([taken, taken, taken])
      expect(yield* mock.isLive(taken)).toBe(true)
    }))

  it.effect("once the other manager closed, a sole holder's lock goes with the answer again", () =>
    Effect.gen(function*() {
      const flaky = flakyKeyValueStore()
      const { managerLayer, mock, store } = yield* seed({ store: flaky.store })
      const a = Context.get(yield* Layer.build(managerLayer({ autoRefresh: false })), SessionManager.SessionManager)
      // A second manager comes and goes.
      yield* Effect.scoped(Layer.build(managerLayer({ autoRefresh: false })))
      flaky.control.down = true
      const first = yield* a.refresh
      // The save is still failing: the next refresh does not wait for it (nor for the save's bound).
      const next = yield* Effect.forkChild(a.refresh)
      yield* adjust(second)
      expect(next.pollUnsafe(), "the next refresh ended without waiting for the failing save").toBeDefined()
      const then = yield* Fiber.join(next)
      const sent = (yield* mock.tokens).map(Redacted.value)
      expect(sent.slice(1)).toStrictEqual([Redacted.value(first.refreshToken)])
      expect(Redacted.value(then.refreshToken)).not.toBe(Redacted.value(first.refreshToken))
      expect(yield* mock.stats).toMatchObject({ calls: 2, reuseRejections: 0, unknownTokens: 0 })
      // The store comes back before the test's scope closes: closing waits (on the TestClock,
      // which only the test moves) for what the store is owed, here the first rotation.
      flaky.control.down = false
      yield* adjust(60 * second)
      expect(yield* storedRefreshToken(store)).toBe(Redacted.value(then.refreshToken))
    }))
})

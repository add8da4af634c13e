/**
 * The store contract as a test suite, for every store: give it a way to open
 * two handles on one backing store (as two processes, tabs or replicas would)
 * and it checks fenced writes, tombstones, the lock and the change feed.
 *
 * Live time (`it.live`, which gives each test its own scope): stores talk to
 * real files, Redis or a browser. Each check bounds its waits.
 */
import { describe, expect, it } from "@effect/vitest"
import type { Scope } from "effect"
import { DateTime, Deferred, Duration, Effect, Fiber, Option, Redacted, Result, Stream } from "effect"
import type { SessionStore } from "moon-refresh"
import { Session } from "moon-refresh"

/** Opens one handle on a backing store that is fresh for each test; call it twice for two holders. */
export type OpenStore = Effect.Effect<
  { readonly open: Effect.Effect<SessionStore.Service, unknown, Scope.Scope> },
  unknown,
  Scope.Scope
>

export const session = (name: string): Session.Session =>
  Session.unsafeMake({
    accessToken: `access-${name}`,
    refreshToken: `refresh-${name}`,
    expiresAt: Date.UTC(2030, 0, 1),
    user: { id: "user-1", email: "ada@example.com" }
  })

const tokenOf = (stored: SessionStore.Stored) =>
  Option.match(stored.session, { onNone: () => "none", onSome: (s) => Redacted.value(s.refreshToken) })

/** How long a change may take to reach another holder. */
export interface ContractOptions {
  readonly feedWithin?: Duration.Input | undefined
  /** Whether the lock reaches other handles (false for in-process-only stores). */
  readonly sharedLock?: boolean | undefined
}

export const storeContract = (name: string, backing: OpenStore, options: ContractOptions = {}) => {
  // A hang guard: a feed that works delivers in milliseconds, on any machine.
  const feedWithin = options.feedWithin ?? Duration.seconds(15)
  describe(`${name}: the store contract`, () => {
    it.live("an empty store reads as revision 0 with no session", () =>
      Effect.gen(function*() {
        const { open } = yield* backing
        const store = yield* open
        const stored = yield* store.read
        expect(stored.revision).toBe(0)
        expect(Option.isNone(stored.session)).toBe(true)
        expect(Option.isNone(yield* store.load)).toBe(true)
      }))

    it.live("a write at the revision read succeeds and bumps it; the other holder reads it", () =>
      Effect.gen(function*() {
        const { open } = yield* backing
        const [a, b] = [yield* open, yield* open]
        const written = yield* a.write(Option.some(session("1")), 0)
        expect(written.revision).toBe(1)
        const seen = yield* b.read
        expect(seen.revision).toBe(1)
        expect(tokenOf(seen)).toBe("refresh-1")
        // The session comes back whole: both tokens, the expiry to the millisecond, the user.
        const back = Option.getOrThrow(seen.session)
        expect(Redacted.value(back.accessToken)).toBe("access-1")
        expect(DateTime.toEpochMillis(back.expiresAt)).toBe(Date.UTC(2030, 0, 1))
        expect(back.user).toStrictEqual({ id: "user-1", email: "ada@example.com" })
      }))

    it.live("a write at a stale revision is refused with a conflict and changes nothing", () =>
      Effect.gen(function*() {
        const { open } = yield* backing
        const [a, b] = [yield* open, yield* open]
        yield* a.write(Option.some(session("1")), 0)
        const conflict = yield* Effect.flip(b.write(Option.some(session("stale")), 0))
        expect(conflict).toMatchObject({ _tag: "StoreConflictError", expected: 0, actual: 1 })
        expect(tokenOf(yield* a.read)).toBe("refresh-1")
      }))

    it.live("a sign-out is a record: it has a revision and a holder of the old session cannot write over it", () =>
      Effect.gen(function*() {
        const { open } = yield* backing
        const [a, b] = [yield* open, yield* open]
        yield* a.write(Option.some(session("1")), 0)
        const signedOut = yield* a.write(Option.none(), 1)
        expect(signedOut.revision).toBe(2)
        // b still holds revision 1: its write would resurrect the session.
        expect((yield* Effect.flip(b.write(Option.some(session("1b")), 1)))._tag).toBe("StoreConflictError")
        const seen = yield* b.read
        expect(seen.revision).toBe(2)
        expect(Option.isNone(seen.session)).toBe(true)
      }))

    it.live("save and clear write over whatever is stored", () =>
      Effect.gen(function*() {
        const { open } = yield* backing
        const [a, b] = [yield* open, yield* open]
        yield* a.save(session("1"))
        yield* b.save(session("2"))
        expect(tokenOf(yield* a.read)).toBe("refresh-2")
        yield* a.clear
        const cleared = yield* b.read
        expect(Option.isNone(cleared.session)).toBe(true)
        expect(cleared.revision).toBe(3)
      }))

    it.live("of concurrent fenced writes at one revision exactly one succeeds", () =>
      Effect.gen(function*() {
        const { open } = yield* backing
        const holders = yield* Effect.all(Array.from({ length: 4 }, () => open))
        const results = yield* Effect.all(
          holders.map((store, i) => Effect.result(store.write(Option.some(session(`w${i}`)), 0))),
          { concurrency: "unbounded" }
        )
        expect(results.filter(Result.isSuccess)).toHaveLength(1)
        expect((yield* holders[0]!.read).revision).toBe(1)
      }))

    it.live("the change feed brings another holder's write", () =>
      Effect.gen(function*() {
        const { open } = yield* backing
        const [a, b] = [yield* open, yield* open]
        const seen = yield* Deferred.make<SessionStore.Stored>()
        yield* Effect.forkScoped(
          Stream.runForEach(
            b.changes,
            (stored) => stored.revision >= 1 ? Deferred.succeed(seen, stored) : Effect.void
          )
        )
        // Let the subscription start: a feed may need a moment to connect.
        yield* Effect.sleep("200 millis")
        yield* a.write(Option.some(session("1")), 0)
        const stored = yield* Deferred.await(seen).pipe(Effect.timeout(feedWithin))
        expect(tokenOf(stored)).toBe("refresh-1")
      }))

    if (options.sharedLock !== false) {
      it.live("the lock is held by one holder at a time", () =>
        Effect.gen(function*() {
          const { open } = yield* backing
          const [a, b] = [yield* open, yield* open]
          const inside = yield* Deferred.make<void>()
          const release = yield* Deferred.make<void>()
          const first = yield* Effect.forkChild(a.withLock(Effect.andThen(
            Deferred.succeed(inside, undefined),
            Deferred.await(release)
          )))
          yield* Deferred.await(inside)
          let entered = false
          const second = yield* Effect.forkChild(b.withLock(Effect.sync(() => {
            entered = true
          })))
          yield* Effect.sleep("300 millis")
          expect(entered).toBe(false)
          yield* Deferred.succeed(release, undefined)
          yield* Fiber.join(first)
          yield* Fiber.join(second).pipe(Effect.timeout("10 seconds"))
          expect(entered).toBe(true)
        }))
    }
  })
}

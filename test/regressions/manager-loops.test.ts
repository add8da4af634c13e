/**
 * Regression cases: nothing makes the manager spin, stall or lose a change.
 * Each broke before the fix (issue "Tokens go only where they belong, and
 * nothing makes the manager spin"), under TestClock (moved by the harness's
 * `adjust`, which lets every fiber reach its wait first, as Effect 3's
 * `TestClock.adjust` did). One case per bug, named by what broke; add one
 * per bug fixed.
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Fiber, Option, Redacted, Stream } from "effect"
import { RefreshError, type SessionManager, SessionStore } from "moon-refresh"
import { MockRefreshClient } from "moon-refresh/testing"
import { adjust, buildManager, settle } from "./harness.js"

describe("the proactive refresh never loops", () => {
  it.effect("an hour of 30-second tokens under the default options costs about 120 refreshes, not thousands", () =>
    Effect.gen(function*() {
      // Before: a token arriving inside the 60 s margin re-armed the timer at
      // delay 0 (239 rotations in one second were seen).
      const { mock } = yield* buildManager({ mock: { lifetime: "30 seconds" }, lifetime: "30 seconds" })
      yield* adjust(Duration.hours(1))
      const { calls, reuseRejections } = yield* mock.stats
      expect(calls).toBeGreaterThanOrEqual(118)
      expect(calls).toBeLessThanOrEqual(125)
      expect(reuseRejections).toBe(0)
    }))

  it.effect("a margin larger than the token's lifetime does not refresh at once after each refresh", () =>
    Effect.gen(function*() {
      const { manager, mock } = yield* buildManager({
        mock: { lifetime: "10 seconds" },
        lifetime: "10 seconds",
        manager: { margin: "1 hour", minInterval: 0 }
      })
      yield* adjust(Duration.minutes(1))
      // At most one refresh per half lifetime (5 s), plus the first: never hundreds.
      expect((yield* mock.stats).calls).toBeLessThanOrEqual(13)
      expect(Option.isSome(yield* manager.current)).toBe(true)
    }))

  it.effect("after a 429 with Retry-After: 3600, the next attempt waits the hour, not 10 s", () =>
    Effect.gen(function*() {
      const limited = new RefreshError.RateLimitedError({
        status: 429,
        retryAfter: Option.some(Duration.hours(1)),
        message: "Request rate limit reached"
      })
      const { mock } = yield* buildManager({
        mock: { script: [MockRefreshClient.fail(limited)] },
        lifetime: "2 hours"
      })
      // Due at 2 h - 60 s; the 429 asks for an hour.
      yield* adjust(Duration.hours(2).pipe(Duration.subtract(Duration.seconds(60))))
      expect((yield* mock.stats).calls).toBe(1)
      yield* adjust(Duration.minutes(59))
      expect((yield* mock.stats).calls).toBe(1)
      yield* adjust(Duration.minutes(2))
      const calls = yield* mock.calls
      expect(calls.map((call) => call.startedAt - calls[0]!.startedAt)).toStrictEqual([0, 3_600_000])
    }))
})

describe("a store that hangs does not hang the manager", () => {
  const hanging = (seeded: Parameters<typeof SessionStore.makeMemory>[0]) =>
    Effect.map(SessionStore.makeMemory(seeded), (memory) =>
      SessionStore.make({
        load: memory.load,
        save: () => Effect.never,
        clear: Effect.never
      }))

  it.effect("a save that never returns fails signIn, signOut and a refresh's save with a StoreError after storeTimeout", () =>
    Effect.gen(function*() {
      const { manager, mock } = yield* buildManager({
        store: hanging,
        manager: { autoRefresh: false, storeTimeout: "5 seconds" }
      })
      const other = yield* mock.issueSession()
      const signingIn = yield* Effect.forkChild(Effect.flip(manager.signIn(other)))
      yield* adjust("5 seconds")
      const signInError = yield* Fiber.join(signingIn)
      expect(signInError).toMatchObject({ _tag: "StoreError", operation: "save" })
      expect(signInError.message).toBe("the store did not answer within 5s")

      // A refresh succeeds; its save is given up after 5 s, reported, and retried in the background.
      const events: Array<SessionManager.SessionEvent> = []
      yield* Effect.forkScoped(Stream.runForEach(manager.events, (event) => Effect.sync(() => events.push(event))))
      yield* settle
      const refreshing = yield* Effect.forkChild(manager.refresh)
      yield* settle
      yield* adjust("5 seconds")
      yield* Fiber.join(refreshing)
      expect(events.map((event) => event._tag)).toStrictEqual(["Initial", "Refreshed", "SaveFailed"])

      // Sign-out waits at most for one bounded save attempt, then its own clear gives up.
      const signingOut = yield* Effect.forkChild(Effect.flip(manager.signOut))
      yield* settle
      yield* adjust("15 seconds")
      expect(yield* Fiber.join(signingOut)).toMatchObject({ _tag: "StoreError", operation: "clear" })
      expect(Option.isNone(yield* manager.current)).toBe(true)
    }))

  it.effect("a lock that is never granted fails the refresh after lockTimeout, with a cooldown", () =>
    Effect.gen(function*() {
      const { manager, mock } = yield* buildManager({
        store: (seeded) =>
          Effect.map(
            SessionStore.makeMemory(seeded),
            (memory) => SessionStore.make({ ...memory, withLock: () => Effect.never })
          ),
        manager: { autoRefresh: false, lockTimeout: "30 seconds" }
      })
      const refreshing = yield* Effect.forkChild(Effect.flip(manager.refresh))
      yield* adjust("30 seconds")
      expect(yield* Fiber.join(refreshing)).toMatchObject({ _tag: "StoreError", operation: "lock" })
      expect((yield* mock.stats).calls).toBe(0)
    }))
})

describe("signing in with the session already held", () => {
  it.effect("while a refresh is in flight changes nothing: no second POST of the same token", () =>
    Effect.gen(function*() {
      const { manager, mock, seeded } = yield* buildManager({
        mock: { script: [MockRefreshClient.succeed({ delay: "1 second" })] },
        manager: { autoRefresh: false }
      })
      const first = yield* Effect.forkChild(manager.refresh)
      yield* settle
      yield* manager.signIn(seeded)
      const second = yield* Effect.forkChild(manager.refresh)
      yield* adjust("1 second")
      const [a, b] = [yield* Fiber.join(first), yield* Fiber.join(second)]
      expect(Redacted.value(a.accessToken)).toBe(Redacted.value(b.accessToken))
      expect(yield* mock.stats).toMatchObject({ calls: 1, rotations: 1, reuseRejections: 0 })
    }))
})

describe("events no one can miss", () => {
  it.effect("a subscriber forked just before signIn sees the sign-in, in Initial or as SignedIn", () =>
    Effect.gen(function*() {
      const { manager, mock } = yield* buildManager({ manager: { autoRefresh: false } })
      yield* manager.signOut
      const next = yield* mock.issueSession()
      // Before: the stream subscribed when its fiber first ran, after the sign-in.
      const seen: Array<SessionManager.SessionEvent> = []
      const subscriber = yield* Effect.forkChild(
        Stream.runForEach(manager.events, (event) => Effect.sync(() => seen.push(event)))
      )
      yield* manager.signIn(next)
      yield* settle
      yield* Fiber.interrupt(subscriber)
      expect(seen[0]?._tag).toBe("Initial")
      // The subscriber knows the current session, whichever side of the sign-in it subscribed on.
      const last = seen[seen.length - 1]
      const held = last?._tag === "SignedIn"
        ? Option.some(last.session)
        : last?._tag === "Initial"
        ? last.session
        : Option.none()
      expect(Option.map(held, (s) => Redacted.value(s.accessToken))).toStrictEqual(
        Option.some(Redacted.value(next.accessToken))
      )
    }))

  it.effect("every subscription opens with Initial carrying the session held, or none", () =>
    Effect.gen(function*() {
      const { manager, seeded } = yield* buildManager({ manager: { autoRefresh: false } })
      const [first] = yield* Stream.runCollect(Stream.take(manager.events, 1))
      expect(first?._tag === "Initial" && Option.map(first.session, (s) => Redacted.value(s.accessToken)))
        .toStrictEqual(Option.some(Redacted.value(seeded.accessToken)))
      yield* manager.signOut
      const [after] = yield* Stream.runCollect(Stream.take(manager.events, 1))
      expect(after?._tag === "Initial" && Option.isNone(after.session)).toBe(true)
    }))
})

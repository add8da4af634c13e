/**
 * Regressions: a SessionManager that refreshed at the wrong time, could not
 * be stopped, or lost the rotated refresh token.
 *
 * One case per bug that was found and fixed, named by what broke, with the
 * commit that fixed it. Each case fails if its bug comes back. When you fix
 * a bug, add its case to the file of its area (test/regressions/*.test.ts).
 *
 * The seeded session expires at 10:00 by the TestClock and the margin is the
 * default 60 s, so the manager refreshes it by itself at 9:00.
 */
import { describe, expect, it } from "@effect/vitest"
import { Clock, Context, Effect, Exit, Fiber, Layer, Option, Redacted, Scope } from "effect"
import { RefreshClient, RefreshError, Session, SessionManager, SessionStore } from "moon-refresh"
import { MockRefreshClient } from "moon-refresh/testing"
import * as TestHttpClient from "../support/TestHttpClient.js"
import { adjust, buildManager, seed, sessionBody, setTime, settle, storedRefreshToken } from "./harness.js"

const second = 1_000
const minute = 60 * second

const serverDown = () =>
  MockRefreshClient.fail(new RefreshError.ServerError({ status: 503, message: "service unavailable" }))

const outcomes = (mock: MockRefreshClient.Service) => Effect.map(mock.calls, (calls) => calls.map((c) => c.outcome))

describe("stopping a refresh", () => {
  // cb58af9: the refresh fiber was forked inside uninterruptibleMask and
  // inherited it: closing the scope waited for the request, however long.
  it.effect("closing the manager's scope interrupts a refresh in flight instead of waiting for it", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const { mock, seeded, store } = yield* buildManager({ mock: { script: [MockRefreshClient.hang] } }).pipe(
        Scope.provide(scope)
      )
      yield* setTime(9 * minute)
      expect(yield* outcomes(mock)).toStrictEqual(["pending"])
      // In a daemon, so that a close that waits for the request cannot hang the test.
      const closing = yield* Effect.forkDetach(Scope.close(scope, Exit.void))
      yield* settle
      expect(closing.pollUnsafe()).toBeDefined()
      expect(yield* outcomes(mock)).toStrictEqual(["interrupted"])
      expect(yield* storedRefreshToken(store)).toBe(Redacted.value(seeded.refreshToken))
    }))

  // cb58af9: the same inherited uninterruptibility kept the client's per-attempt
  // timeout from cutting off a request that never answered: no retry, ever.
  it.effect("a refresh request that never answers is cut off by the client's timeout and retried", () =>
    Effect.gen(function*() {
      const server = TestHttpClient.make(TestHttpClient.hang, TestHttpClient.json(200, sessionBody))
      const stored = Session.unsafeMake({
        accessToken: "access-token-secret-v1",
        refreshToken: "refresh-token-secret-v1",
        expiresAt: 10 * minute,
        user: { id: "user-1" }
      })
      const context = yield* Layer.build(
        SessionManager.layer().pipe(
          Layer.provide(RefreshClient.layer().pipe(Layer.provide(server.layer))),
          Layer.provide(SessionStore.layerMemory(stored))
        )
      )
      const manager = Context.get(context, SessionManager.SessionManager)
      // 9:00 the request; 9:10 its timeout; the default policy's first retry within 240 ms.
      yield* setTime(9 * minute + 11 * second)
      expect(server.requests).toHaveLength(2)
      expect(server.requests[0]!.signal.aborted).toBe(true)
      const current = yield* manager.current
      expect(Option.map(current, (s) => Redacted.value(s.accessToken))).toStrictEqual(
        Option.some(sessionBody.access_token)
      )
    }))
})

describe("when the manager refreshes", () => {
  // cb58af9: a failure to take the store's lock escaped without being
  // committed: no cooldown, so every read tried the lock (and the server) again.
  it.effect("a store lock that cannot be taken starts a cooldown like any failed refresh", () =>
    Effect.gen(function*() {
      let locks = 0
      const { manager, mock, seeded } = yield* buildManager({
        store: (session) =>
          Effect.map(SessionStore.makeMemory(session), (memory) =>
            SessionStore.make({
              ...memory,
              withLock: <A, E, R>(critical: Effect.Effect<A, E, R>) =>
                Effect.suspend((): Effect.Effect<A, E | SessionStore.StoreError, R> =>
                  ++locks === 1
                    ? Effect.fail(new SessionStore.StoreError({ operation: "lock", message: "lock timed out" }))
                    : memory.withLock(critical)
                )
            }))
      })
      yield* setTime(9 * minute)
      // Within the cooldown a reader gets the still-valid token, without the lock or the server.
      expect(Redacted.value(yield* manager.accessToken)).toBe(Redacted.value(seeded.accessToken))
      expect({ locks, calls: (yield* mock.stats).calls }).toStrictEqual({ locks: 1, calls: 0 })
      yield* setTime(9 * minute + 10 * second)
      expect((yield* mock.calls).map((call) => call.startedAt)).toStrictEqual([9 * minute + 10 * second])
    }))

  // eea944b: after a failed refresh the next proactive one was planned at the
  // end of the cooldown, even for a session with an hour left.
  it.effect("after a failed refresh, the next proactive one still waits for expiresAt - margin", () =>
    Effect.gen(function*() {
      const { manager, mock } = yield* buildManager({ lifetime: "1 hour", mock: { script: [serverDown()] } })
      expect((yield* Effect.flip(manager.refresh))._tag).toBe("ServerError")
      yield* adjust("1 minute")
      expect((yield* mock.stats).calls).toBe(1)
      yield* setTime(59 * minute)
      expect((yield* mock.calls).map((call) => call.startedAt)).toStrictEqual([0, 59 * minute])
    }))

  // e21ab8f: the slow path read the caller's Clock while the hot path and the
  // cooldown used the manager's: a caller under another clock skipped the cooldown.
  it.effect("a reader running under another Clock does not bypass the manager's cooldown", () =>
    Effect.gen(function*() {
      const { manager, mock, seeded } = yield* buildManager({ mock: { script: [serverDown()] } })
      yield* setTime(9 * minute)
      expect((yield* mock.stats).calls).toBe(1)
      // 9:20 by this clock: past the cooldown (until 9:10 by the manager's), the session still valid.
      const testClock = yield* Clock.Clock
      const later = 9 * minute + 20 * second
      const otherClock: Clock.Clock = {
        ...testClock,
        currentTimeMillisUnsafe: () => later,
        currentTimeMillis: Effect.succeed(later),
        currentTimeNanosUnsafe: () => BigInt(later) * 1_000_000n,
        currentTimeNanos: Effect.succeed(BigInt(later) * 1_000_000n),
        monotonicTimeNanosUnsafe: () => BigInt(later) * 1_000_000n,
        monotonicTimeNanos: Effect.succeed(BigInt(later) * 1_000_000n),
        sleep: (duration) => testClock.sleep(duration)
      }
      const token = yield* manager.accessToken.pipe(Effect.provideService(Clock.Clock, otherClock))
      expect(Redacted.value(token)).toBe(Redacted.value(seeded.accessToken))
      expect((yield* mock.stats).calls).toBe(1)
    }))
})

describe("sessions changing under a refresh", () => {
  // cb58af9: a new session kept the old one's in-flight refresh, so a refresh
  // asked for after signIn joined it and never refreshed the signed-in session.
  it.effect("a refresh asked for after signIn refreshes the signed-in session, not the one in flight", () =>
    Effect.gen(function*() {
      const { manager, mock, seeded } = yield* buildManager({
        mock: { script: [MockRefreshClient.succeed({ delay: "1 second" })] },
        manager: { autoRefresh: false }
      })
      yield* setTime(9 * minute + 30 * second)
      const first = yield* Effect.forkChild(manager.refresh)
      yield* settle
      const signedIn = yield* mock.issueSession({ lifetime: "10 minutes" })
      yield* manager.signIn(signedIn)
      const after = yield* Effect.forkChild(manager.refresh)
      yield* adjust("1 second")
      const refreshed = yield* Fiber.join(after)
      expect((yield* mock.tokens).map(Redacted.value)).toStrictEqual(
        [seeded.refreshToken, signedIn.refreshToken].map(Redacted.value)
      )
      expect(yield* mock.isLive(refreshed.refreshToken)).toBe(true)
      // The refresh of the old session ended, and its result was not kept.
      yield* Fiber.join(first)
      const current = yield* manager.current
      expect(Option.map(current, (s) => Redacted.value(s.refreshToken))).toStrictEqual(
        Option.some(Redacted.value(refreshed.refreshToken))
      )
    }))

  // 269c509: once the refresh fiber could be interrupted, a scope closing while
  // the new session was being saved cut the save short: the server had spent
  // the old token, and the store kept it.
  it.effect("a scope closing while the new session is saved lets the save finish", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const { mock, store } = yield* buildManager({
        store: (session) =>
          Effect.map(SessionStore.makeMemory(session), (memory) =>
            SessionStore.make({
              ...memory,
              save: (next) => Effect.andThen(Effect.sleep("1 second"), memory.save(next))
            }))
      }).pipe(Scope.provide(scope))
      yield* setTime(9 * minute)
      expect(yield* outcomes(mock)).toStrictEqual(["rotated"])
      const closing = yield* Effect.forkDetach(Scope.close(scope, Exit.void))
      yield* settle
      yield* adjust("1 second")
      yield* Fiber.join(closing)
      expect(yield* mock.isLive(yield* storedRefreshToken(store))).toBe(true)
    }))

  // e6db21e: a store without a lock of its own ran refreshes unlocked, so two
  // managers of one process sharing it spent the same refresh token: reuse,
  // and the whole session revoked.
  it.effect("two managers sharing one store refresh once, not twice with the same token", () =>
    Effect.gen(function*() {
      const { managerLayer, mock } = yield* seed({
        mock: { script: [MockRefreshClient.succeed({ delay: "1 second" })] }
      })
      const build = Effect.map(
        Layer.build(managerLayer({ autoRefresh: false })),
        Context.get(SessionManager.SessionManager)
      )
      const [a, b] = [yield* build, yield* build]
      yield* setTime(9 * minute + 30 * second)
      const both = yield* Effect.forkChild(Effect.all([a.accessToken, b.accessToken], { concurrency: "unbounded" }))
      yield* settle
      yield* adjust("1 second")
      const [tokenA, tokenB] = yield* Fiber.join(both)
      expect(Redacted.value(tokenA)).toBe(Redacted.value(tokenB))
      expect(yield* mock.stats).toMatchObject({ calls: 1, rotations: 1, reuseRejections: 0 })
    }))
})

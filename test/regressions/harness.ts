/**
 * What the regression files share: one refresh against a scripted answer, and
 * a SessionManager over a MockRefreshClient that holds a session the mock issued.
 * Only the public API and test/support are used.
 */
import { Cause, Context, Duration, Effect, Exit, Layer, Option, Redacted } from "effect"
import type { HttpClient } from "effect/http"
import { TestClock } from "effect/testing"
import type { Session } from "moon-refresh"
import { RefreshClient, RefreshError, RefreshPolicy, SessionManager, SessionStore } from "moon-refresh"
import { MockRefreshClient } from "moon-refresh/testing"
import { maxMessageLength } from "../../src/internal/message.js"
import { failureOf } from "../support/Exits.js"
import * as TestHttpClient from "../support/TestHttpClient.js"

/** The refresh token every RefreshClient case sends. */
export const refreshToken = "refresh-token-secret-v1"

/** A valid answer: a one-hour session whose tokens are unlike the request's. */
export const sessionBody = {
  access_token: "access-token-secret-v2",
  refresh_token: "refresh-token-secret-v2",
  expires_in: 3600,
  token_type: "bearer",
  user: { id: "user-1", email: "ada@example.com" }
}

/** How many real timer turns {@link settle} takes. */
const settleTurns = 20

/**
 * Lets every fiber run until it waits on something, without moving the TestClock.
 * Effect 3's `TestClock.adjust` did this itself: it waited, a real timer turn
 * at a time, until every fiber of the test was suspended. Effect 4's yields to
 * the fiber scheduler once, so a fiber a few scheduler turns from its next
 * wait (the manager's command fibers start one turn late, a body is read
 * through promises) has not reached it yet. Here: {@link settleTurns} turns of
 * the event loop, each a `setTimeout(0)` (every fiber task and promise queued
 * before it runs first) followed by `TestClock.adjust(0)`. Nothing here waits
 * on real I/O, so the number of turns needed does not depend on the
 * machine's load.
 */
export const settle: Effect.Effect<void> = Effect.repeat(
  Effect.andThen(
    Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, 0))),
    TestClock.adjust(Duration.zero)
  ),
  { times: settleTurns - 1 }
)

/**
 * `TestClock.adjust` as Effect 3 ran it: every fiber runs until it waits
 * ({@link settle}) before the clock moves, so a sleep a forked fiber is about
 * to start is on the clock; and again once it moved, so what the sleeps that
 * fell due started (a response body read through promises) is done.
 */
export const adjust = (duration: Duration.Input): Effect.Effect<void> =>
  settle.pipe(Effect.andThen(TestClock.adjust(duration)), Effect.andThen(settle))

/** `TestClock.setTime` as Effect 3 ran it (see {@link adjust}). */
export const setTime = (millis: number): Effect.Effect<void> =>
  settle.pipe(Effect.andThen(TestClock.setTime(millis)), Effect.andThen(settle))

/**
 * Builds `layer` over a double answering `replies` in turn, and refreshes
 * once; the exit, and the requests the double received.
 */
export const refreshThrough = <E>(
  layer: Layer.Layer<RefreshClient.RefreshClient, E, HttpClient.HttpClient>,
  replies: ReadonlyArray<TestHttpClient.Reply>,
  token: string = refreshToken
) => {
  const server = TestHttpClient.make(...replies)
  return RefreshClient.refresh(token).pipe(
    Effect.provide(layer),
    Effect.provide(server.layer),
    Effect.exit,
    Effect.map((exit) => ({ exit, requests: server.requests }))
  )
}

/** {@link refreshThrough} `RefreshClient.layer`, with no retries. */
export const refreshAgainst = (replies: ReadonlyArray<TestHttpClient.Reply>, token: string = refreshToken) =>
  refreshThrough(RefreshClient.layer({ policy: RefreshPolicy.none }), replies, token)

/** The session an exit succeeded with; throws (failing the test) otherwise. */
export const sessionOf = (exit: Exit.Exit<Session.Session, RefreshError.RefreshError>): Session.Session => {
  if (Exit.isFailure(exit)) throw new Error(`expected a session, got ${Cause.pretty(exit.cause)}`)
  return exit.value
}

/** A typed refresh error, not a defect, whose message is capped. */
export const expectRefreshError = (exit: Exit.Exit<unknown, RefreshError.RefreshError>): RefreshError.RefreshError => {
  const error = failureOf(exit)
  // Nothing beside the typed failure either.
  if (Exit.isFailure(exit) && (Cause.hasDies(exit.cause) || Cause.hasInterrupts(exit.cause))) {
    throw new Error(`a defect or an interruption beside the error: ${Cause.pretty(exit.cause)}`)
  }
  if (!RefreshError.isRefreshError(error)) throw new Error(`not a RefreshError: ${String(error)}`)
  if (error.message.length > maxMessageLength) throw new Error("message longer than the cap")
  return error
}

export interface ManagerSetup {
  readonly mock?: MockRefreshClient.Options | undefined
  /** Lifetime of the session the mock issues and the store starts with. Default 10 minutes. */
  readonly lifetime?: Duration.Input | undefined
  readonly manager?: SessionManager.Options | undefined
  /** Builds the store from the seeded session. Default `SessionStore.makeMemory`. */
  readonly store?: ((seeded: Session.Session) => Effect.Effect<SessionStore.Service>) | undefined
}

/**
 * A MockRefreshClient (from `MockRefreshClient.layer`), a session it issued,
 * and a store holding that session; `managerLayer` builds a SessionManager
 * over both through `SessionManager.layer`.
 */
export const seed = (setup: ManagerSetup = {}) =>
  Effect.gen(function*() {
    const mockContext = yield* Layer.build(MockRefreshClient.layer(setup.mock))
    const mock = Context.get(mockContext, MockRefreshClient.MockRefreshClient)
    const seeded = yield* mock.issueSession({ lifetime: setup.lifetime ?? Duration.minutes(10) })
    const store = yield* (setup.store ?? SessionStore.makeMemory)(seeded)
    const managerLayer = (options?: SessionManager.Options) =>
      SessionManager.layer(options).pipe(
        Layer.provide(Layer.succeedContext(mockContext)),
        Layer.provide(Layer.succeed(SessionStore.SessionStore, store))
      )
    return { mock, seeded, store, managerLayer }
  })

/** {@link seed} and one SessionManager; its background fibers live in the scope in context. */
export const buildManager = (setup: ManagerSetup = {}) =>
  Effect.gen(function*() {
    const seeded = yield* seed(setup)
    const context = yield* Layer.build(seeded.managerLayer(setup.manager))
    return { ...seeded, manager: Context.get(context, SessionManager.SessionManager) }
  })

/** The refresh token a store holds, revealed ("none" when empty). */
export const storedRefreshToken = (store: SessionStore.Service): Effect.Effect<string, SessionStore.StoreError> =>
  Effect.map(store.load, Option.match({ onNone: () => "none", onSome: (s) => Redacted.value(s.refreshToken) }))

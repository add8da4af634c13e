import { describe, expect, it } from "@effect/vitest"
import {
  Cause,
  Clock,
  Context,
  Duration,
  Effect,
  Exit,
  Fiber,
  Layer,
  Logger,
  type LogLevel,
  Option,
  Random,
  Redacted,
  References,
  Scope,
  Stream
} from "effect"
import { HttpClient, HttpClientResponse } from "effect/http"
import { TestClock } from "effect/testing"
import type { Session } from "moon-refresh"
import { RefreshClient, RefreshError, SessionManager, SessionStore } from "moon-refresh"
import { MockRefreshClient } from "moon-refresh/testing"
import * as TestHttpClient from "./support/TestHttpClient.js"

const second = 1_000
const minute = 60 * second
const hour = 60 * minute

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

const tokenOf = (session: Session.Session) => Redacted.value(session.accessToken)

/** What a read returns without the clock moving: the token, the failure, or "still waiting". */
const readAtOnce = (manager: SessionManager.Service) =>
  Effect.gen(function*() {
    const reader = yield* Effect.forkChild(manager.accessToken)
    yield* settle
    const exit = reader.pollUnsafe()
    return exit === undefined
      ? "still waiting"
      : Exit.match(exit, { onSuccess: Redacted.value, onFailure: (cause) => Cause.pretty(cause) })
  })

const currentToken = (manager: SessionManager.Service) =>
  Effect.map(manager.current, Option.match({ onNone: () => "none", onSome: tokenOf }))

// What the refresh client saw: how many calls, when each started, the refresh tokens they were given.
const callCount = (mock: MockRefreshClient.Service) => Effect.map(mock.stats, (stats) => stats.calls)
const startTimes = (mock: MockRefreshClient.Service) =>
  Effect.map(mock.calls, (calls) => calls.map((call) => call.startedAt))
const tokensGiven = (mock: MockRefreshClient.Service) => Effect.map(mock.tokens, (tokens) => tokens.map(Redacted.value))

/** Every refresh fails with a 503 after `delay`. */
const serverDown = (delay: Duration.Input) =>
  MockRefreshClient.fail(new RefreshError.ServerError({ status: 503, message: "service unavailable" }), { delay })

/** A session the mock issues at time 0: `mock-access-token-<name>`, expiring at `lifetime`. */
interface Stored {
  readonly name: string
  readonly lifetime: Duration.Input
}
const stored = (name: string, lifetime: Duration.Input): Stored => ({ name, lifetime })

/**
 * A Moon refresh endpoint whose `n`th answer takes `delays[n]` (the last delay
 * repeats) and is a fresh one-hour session `access-http-<n>`. Records when each
 * request arrived and whether its abort signal fired.
 */
const slowMoonServer = (...delays: ReadonlyArray<Duration.Input>) => {
  const requests: Array<{ readonly at: number; readonly signal: AbortSignal }> = []
  const client = HttpClient.make((request, _url, signal) =>
    Effect.gen(function*() {
      requests.push({ at: yield* Clock.currentTimeMillis, signal })
      const n = requests.length
      yield* Effect.sleep(delays[Math.min(n, delays.length) - 1]!)
      const body = {
        access_token: `access-http-${n}`,
        refresh_token: `refresh-http-${n}`,
        expires_in: 3600,
        token_type: "bearer",
        user: { id: "user-1" }
      }
      return HttpClientResponse.fromWeb(
        request,
        new Response(JSON.stringify(body), { status: 200, headers: { "content-type": "application/json" } })
      )
    })
  )
  return { requests, layer: RefreshClient.layer().pipe(Layer.provide(Layer.succeed(HttpClient.HttpClient, client))) }
}

// ---------------------------------------------------------------------------
// A store double: records what happens to it, fails on demand.
// ---------------------------------------------------------------------------

interface TestStore {
  readonly service: SessionStore.Service
  readonly layer: Layer.Layer<SessionStore.SessionStore>
  /** "load", "save:<access token>", "save-failed:<access token>", "clear", "clear-failed"; tests may append. */
  readonly log: Array<string>
  /** Every save attempt with its TestClock time. */
  readonly saves: Array<{ readonly token: string; readonly at: number; readonly ok: boolean }>
  /** The stored access token, or "none". */
  readonly storedToken: () => string
  /** Writes the store directly, as another process sharing it would. */
  readonly setByAnotherProcess: (session: Session.Session) => void
  /** How many of the next saves fail. */
  failNextSaves: number
  /** Every save of the session with this access token fails. */
  failSavesOf: string | undefined
  failClear: boolean
  failLoad: boolean
  /** How many of the next `withLock` calls fail to take the lock. */
  failNextLocks: number
}

const makeStore = (initial?: Session.Session): TestStore => {
  let stored = Option.fromNullishOr(initial)
  const store: TestStore = {
    log: [],
    saves: [],
    storedToken: () => Option.match(stored, { onNone: () => "none", onSome: tokenOf }),
    setByAnotherProcess: (session) => {
      stored = Option.some(session)
    },
    failNextSaves: 0,
    failSavesOf: undefined,
    failClear: false,
    failLoad: false,
    failNextLocks: 0,
    service: SessionStore.make({
      load: Effect.suspend(() => {
        store.log.push("load")
        return store.failLoad
          ? Effect.fail(new SessionStore.StoreError({ operation: "load", message: "disk unavailable" }))
          : Effect.succeed(stored)
      }),
      save: (session) =>
        Effect.flatMap(Clock.currentTimeMillis, (at) => {
          const token = tokenOf(session)
          const fails = store.failSavesOf === token || store.failNextSaves > 0
          if (store.failNextSaves > 0) store.failNextSaves--
          store.saves.push({ token, at, ok: !fails })
          store.log.push(`${fails ? "save-failed" : "save"}:${token}`)
          if (fails) return Effect.fail(new SessionStore.StoreError({ operation: "save", message: "disk full" }))
          stored = Option.some(session)
          return Effect.void
        }),
      // Fails only when told to: a store shared by several processes would take a lock here.
      withLock: <A, E, R>(critical: Effect.Effect<A, E, R>) =>
        Effect.suspend((): Effect.Effect<A, E | SessionStore.StoreError, R> => {
          if (store.failNextLocks === 0) return critical
          store.failNextLocks--
          store.log.push("lock-failed")
          return Effect.fail(new SessionStore.StoreError({ operation: "load", message: "lock timed out" }))
        }),
      clear: Effect.suspend(() => {
        store.log.push(store.failClear ? "clear-failed" : "clear")
        if (store.failClear) {
          return Effect.fail(new SessionStore.StoreError({ operation: "clear", message: "read-only file system" }))
        }
        stored = Option.none()
        return Effect.void
      })
    }),
    get layer() {
      return Layer.succeed(SessionStore.SessionStore, store.service)
    }
  }
  return store
}

// ---------------------------------------------------------------------------
// The harness: a manager built in the test's scope, with its events and logs recorded.
// ---------------------------------------------------------------------------

interface CapturedLog {
  readonly level: LogLevel.LogLevel
  readonly line: string
}

interface Setup {
  /** The stored session the manager starts from, issued by the mock. */
  readonly session?: Stored
  /** The mock's options. Default: every call issues a one-hour session after 1 s. */
  readonly mock?: MockRefreshClient.Options
  /** Replaces the mock (e.g. the real `RefreshClient.layer`). */
  readonly refreshLayer?: Layer.Layer<RefreshClient.RefreshClient>
  readonly options?: SessionManager.Options
}

interface Harness {
  readonly manager: SessionManager.Service
  readonly context: Context.Context<SessionManager.SessionManager>
  readonly mock: MockRefreshClient.Service
  readonly store: TestStore
  readonly events: Array<SessionManager.SessionEvent>
  readonly logs: Array<CapturedLog>
}

const withManager = <A, E>(setup: Setup, body: (harness: Harness) => Effect.Effect<A, E, Scope.Scope>) => {
  const logs: Array<CapturedLog> = []
  const capture = Logger.make((options) => {
    logs.push({ level: options.logLevel, line: Logger.formatLogFmt.log(options) })
  })
  return Effect.gen(function*() {
    const mock = yield* MockRefreshClient.make(
      setup.mock ?? { whenEmpty: MockRefreshClient.succeed({ delay: "1 second" }) }
    )
    const store = makeStore(setup.session && (yield* mock.issueSession(setup.session)))
    const context = yield* Layer.build(
      SessionManager.layer(setup.options).pipe(
        Layer.provide(Layer.merge(setup.refreshLayer ?? Layer.succeed(RefreshClient.RefreshClient, mock), store.layer))
      )
    )
    const manager = Context.get(context, SessionManager.SessionManager)
    const events: Array<SessionManager.SessionEvent> = []
    // The changes only: every subscription opens with `Initial` (its own tests are in "events").
    yield* Effect.forkScoped(
      Stream.runForEach(manager.events.pipe(Stream.drop(1)), (event) => Effect.sync(() => events.push(event)))
    )
    yield* settle
    const result = yield* body({ manager, context, mock, store, events, logs })
    // Refresh tokens are one-time: whatever a test does, the manager never spends one twice.
    expect(yield* mock.stats).toMatchObject({ reuseRejections: 0, unknownTokens: 0 })
    return result
  }).pipe(
    Effect.scoped,
    Effect.provide(Logger.layer([capture])),
    Effect.provideService(References.MinimumLogLevel, "All")
  )
}

const tags = (events: ReadonlyArray<SessionManager.SessionEvent>) => events.map((event) => event._tag)

// ---------------------------------------------------------------------------

describe("reading the token", () => {
  it.effect("loads the stored session when the layer is built", () =>
    withManager({ session: stored("0", 10 * minute) }, ({ manager, store }) =>
      Effect.gen(function*() {
        expect(yield* currentToken(manager)).toBe("mock-access-token-0")
        expect(store.log).toStrictEqual(["load"])
      })))

  it.effect("hands out a token with more than the margin left at once: no refresh, no store access", () =>
    withManager(
      { session: stored("0", 10 * minute) },
      ({ mock, context, manager, store }) =>
        Effect.gen(function*() {
          for (let i = 0; i < 100; i++) {
            expect(Redacted.value(yield* manager.accessToken)).toBe("mock-access-token-0")
          }
          expect(tokenOf(yield* manager.session)).toBe("mock-access-token-0")
          // The module's accessors read the same service.
          expect(Redacted.value(yield* Effect.provide(SessionManager.accessToken, context))).toBe("mock-access-token-0")
          expect(yield* callCount(mock)).toBe(0)
          expect(store.log).toStrictEqual(["load"])
        })
    ))

  it.effect("fails with NoSessionError, without a refresh call, when nobody has signed in", () =>
    withManager({}, ({ mock, manager }) =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(manager.accessToken)
        expect(error._tag).toBe("NoSessionError")
        expect((yield* Effect.flip(manager.refresh))._tag).toBe("NoSessionError")
        expect(yield* manager.current).toStrictEqual(Option.none())
        expect(yield* callCount(mock)).toBe(0)
      })))

  it.effect("fails to build with the StoreError when the store cannot be read", () =>
    Effect.gen(function*() {
      const mock = yield* MockRefreshClient.make()
      const store = makeStore(yield* mock.issueSession({ name: "0" }))
      store.failLoad = true
      const exit = yield* Layer.build(
        SessionManager.layer().pipe(
          Layer.provide(Layer.merge(Layer.succeed(RefreshClient.RefreshClient, mock), store.layer))
        )
      ).pipe(Effect.scoped, Effect.exit)
      expect(Exit.isFailure(exit)).toBe(true)
      const error = Exit.isFailure(exit) ? Cause.findErrorOption(exit.cause) : Option.none()
      expect(Option.map(error, (e) => [e._tag, e.operation])).toStrictEqual(Option.some(["StoreError", "load"]))
    }))

  it.effect("refuses an infinite margin when the layer is built (a defect, not a StoreError)", () =>
    Effect.gen(function*() {
      const exit = yield* Layer.build(
        SessionManager.layer({ margin: Duration.infinity }).pipe(
          Layer.provide(Layer.merge(MockRefreshClient.layer(), makeStore().layer))
        )
      ).pipe(Effect.scoped, Effect.exit)
      expect(Exit.isFailure(exit) && Cause.hasDies(exit.cause)).toBe(true)
    }))

  for (const [option, value] of [["margin", -1], ["cooldown", -1000], ["maxCooldown", -5]] as const) {
    it.effect(`refuses a negative ${option} (${value}) instead of clamping it, naming the option`, () =>
      Effect.gen(function*() {
        const exit = yield* Layer.build(
          SessionManager.layer({ [option]: value }).pipe(
            Layer.provide(Layer.merge(MockRefreshClient.layer(), makeStore().layer))
          )
        ).pipe(Effect.scoped, Effect.exit)
        expect(Exit.isFailure(exit) && Cause.hasDies(exit.cause)).toBe(true)
        expect(Exit.isFailure(exit) ? Cause.pretty(exit.cause) : "").toContain(`option "${option}"`)
      }))
  }
})

describe("single flight", () => {
  it.effect("1,000 concurrent accessToken calls on an expired session make exactly one refresh call; all get the new token", () =>
    withManager(
      { session: stored("0", 0), options: { autoRefresh: false } },
      ({ mock, manager, store }) =>
        Effect.gen(function*() {
          const readers = yield* Effect.forkChild(
            Effect.all(Array.from({ length: 1_000 }, () => manager.accessToken), { concurrency: "unbounded" })
          )
          yield* settle
          expect(yield* callCount(mock)).toBe(1)
          yield* TestClock.adjust("1 second")
          const tokens = (yield* Fiber.join(readers)).map(Redacted.value)
          expect(tokens).toHaveLength(1_000)
          expect(new Set(tokens)).toStrictEqual(new Set(["mock-access-token-1"]))
          expect(yield* callCount(mock)).toBe(1)
          expect(yield* tokensGiven(mock)).toStrictEqual(["mock-refresh-token-0"])
          expect(store.storedToken()).toBe("mock-access-token-1")
        })
    ))

  it.effect("refresh called while a refresh is in flight joins it instead of starting a second one", () =>
    withManager(
      { session: stored("0", 0), options: { autoRefresh: false } },
      ({ mock, manager }) =>
        Effect.gen(function*() {
          const reader = yield* Effect.forkChild(manager.accessToken)
          yield* settle
          const refresher = yield* Effect.forkChild(manager.refresh)
          yield* settle
          expect(yield* callCount(mock)).toBe(1)
          yield* TestClock.adjust("1 second")
          expect(Redacted.value(yield* Fiber.join(reader))).toBe("mock-access-token-1")
          expect(tokenOf(yield* Fiber.join(refresher))).toBe("mock-access-token-1")
          expect(yield* callCount(mock)).toBe(1)

          // With nothing in flight, refresh does refresh, with the rotated token.
          const again = yield* Effect.forkChild(manager.refresh)
          yield* TestClock.adjust("1 second")
          expect(tokenOf(yield* Fiber.join(again))).toBe("mock-access-token-2")
          expect(yield* tokensGiven(mock)).toStrictEqual(["mock-refresh-token-0", "mock-refresh-token-1"])
        })
    ))

  it.effect("a waiting caller that is interrupted does not abort the refresh the others rely on", () =>
    withManager(
      { session: stored("0", 0), options: { autoRefresh: false } },
      ({ mock, manager, store }) =>
        Effect.gen(function*() {
          const impatient = yield* Effect.forkChild(manager.accessToken)
          const patient = yield* Effect.forkChild(manager.accessToken)
          yield* settle
          yield* Fiber.interrupt(impatient)
          yield* TestClock.adjust("1 second")
          expect(Redacted.value(yield* Fiber.join(patient))).toBe("mock-access-token-1")
          expect((yield* mock.stats).interruptions).toBe(0)
          expect((yield* mock.calls)[0]!.outcome).toBe("rotated")
          expect(yield* currentToken(manager)).toBe("mock-access-token-1")
          expect(store.storedToken()).toBe("mock-access-token-1")
        })
    ))
})

describe("proactive refresh", () => {
  it.effect("refreshes at expiresAt - margin with no caller, then again ahead of the new expiry", () =>
    withManager(
      {
        session: stored("0", 10 * minute),
        mock: { whenEmpty: MockRefreshClient.succeed({ lifetime: "10 minutes", delay: "1 second" }) }
      },
      ({ mock, manager }) =>
        Effect.gen(function*() {
          yield* TestClock.setTime(9 * minute - 1)
          expect(yield* callCount(mock)).toBe(0)
          yield* TestClock.adjust(1)
          expect(yield* startTimes(mock)).toStrictEqual([9 * minute])
          yield* TestClock.adjust("1 second")
          expect(yield* currentToken(manager)).toBe("mock-access-token-1")
          // mock-access-token-1 was issued at 9:01 for 10 minutes: the next refresh is due at 18:01.
          yield* TestClock.setTime(18 * minute + second - 1)
          expect(yield* callCount(mock)).toBe(1)
          yield* TestClock.adjust(1)
          expect(yield* startTimes(mock)).toStrictEqual([9 * minute, 18 * minute + second])
          expect(yield* tokensGiven(mock)).toStrictEqual(["mock-refresh-token-0", "mock-refresh-token-1"])
          yield* TestClock.adjust("1 second")
          expect(yield* currentToken(manager)).toBe("mock-access-token-2")
        })
    ))

  it.effect("a reader during the proactive refresh gets the old, still-valid token without waiting", () =>
    withManager(
      {
        session: stored("0", 10 * minute),
        mock: { whenEmpty: MockRefreshClient.succeed({ delay: "5 seconds" }) }
      },
      ({ mock, manager }) =>
        Effect.gen(function*() {
          yield* TestClock.setTime(9 * minute)
          expect(yield* callCount(mock)).toBe(1)
          const reader = yield* Effect.forkChild(manager.accessToken)
          yield* settle
          const read = reader.pollUnsafe()
          expect(read && Exit.map(read, Redacted.value)).toStrictEqual(Exit.succeed("mock-access-token-0"))
          expect(yield* Clock.currentTimeMillis).toBe(9 * minute)

          yield* TestClock.adjust("5 seconds")
          expect(Redacted.value(yield* manager.accessToken)).toBe("mock-access-token-1")
          expect(yield* callCount(mock)).toBe(1)
        })
    ))

  it.effect("with autoRefresh off, the first read after the clock jumps far past expiry refreshes at once", () =>
    withManager(
      { session: stored("0", 10 * minute), options: { autoRefresh: false } },
      ({ mock, manager }) =>
        Effect.gen(function*() {
          yield* TestClock.adjust("1 day")
          expect(yield* callCount(mock)).toBe(0)
          const reader = yield* Effect.forkChild(manager.accessToken)
          yield* settle
          expect(yield* startTimes(mock)).toStrictEqual([24 * hour])
          yield* TestClock.adjust("1 second")
          expect(Redacted.value(yield* Fiber.join(reader))).toBe("mock-access-token-1")
        })
    ))
})

describe("rotation", () => {
  it.effect("saves the new session to the store before any reader is handed the new token", () =>
    withManager(
      { session: stored("0", 0), options: { autoRefresh: false } },
      ({ manager, store }) =>
        Effect.gen(function*() {
          const read = Effect.flatMap(manager.accessToken, (token) =>
            Effect.sync(() => {
              // Runs in the reader's continuation: the store must already hold the new session.
              store.log.push(`read:${Redacted.value(token)} (stored: ${store.storedToken()})`)
            }))
          const readers = yield* Effect.forkChild(Effect.all([read, read, read], { concurrency: "unbounded" }))
          yield* settle
          yield* TestClock.adjust("1 second")
          yield* Fiber.join(readers)
          yield* read
          expect(store.log.filter((entry) => entry !== "load")).toStrictEqual([
            "save:mock-access-token-1",
            "read:mock-access-token-1 (stored: mock-access-token-1)",
            "read:mock-access-token-1 (stored: mock-access-token-1)",
            "read:mock-access-token-1 (stored: mock-access-token-1)",
            "read:mock-access-token-1 (stored: mock-access-token-1)"
          ])
        })
    ))

  it.effect("a failed save keeps the new session in memory, emits SaveFailed, logs an error and retries until saved", () =>
    withManager(
      { session: stored("0", 0), options: { autoRefresh: false } },
      ({ events, logs, manager, store }) =>
        Effect.gen(function*() {
          store.failNextSaves = 4
          const reader = yield* Effect.forkChild(manager.accessToken)
          yield* settle
          yield* TestClock.adjust("1 second")
          // The refresh succeeded: the caller gets the new token although the save failed.
          expect(Redacted.value(yield* Fiber.join(reader))).toBe("mock-access-token-1")
          expect(yield* currentToken(manager)).toBe("mock-access-token-1")
          expect(store.storedToken()).toBe("mock-access-token-0")
          yield* settle
          expect(tags(events)).toStrictEqual(["Refreshed", "SaveFailed"])
          const saveFailed = events[1]!
          expect(saveFailed._tag === "SaveFailed" && saveFailed.error.operation).toBe("save")
          const errors = logs.filter((log) => log.level === "Error")
          expect(errors).toHaveLength(1)
          expect(errors[0]!.line).toContain("could not be saved")
          expect(errors[0]!.line).not.toContain("mock-access-token-1")

          yield* TestClock.adjust("1 hour")
          // In the background: at once, then 1 s, 2 s and 4 s apart; the fifth attempt succeeds.
          expect(store.saves).toStrictEqual([
            { token: "mock-access-token-1", at: 1_000, ok: false },
            { token: "mock-access-token-1", at: 1_000, ok: false },
            { token: "mock-access-token-1", at: 2_000, ok: false },
            { token: "mock-access-token-1", at: 4_000, ok: false },
            { token: "mock-access-token-1", at: 8_000, ok: true }
          ])
          expect(store.storedToken()).toBe("mock-access-token-1")
          expect(yield* currentToken(manager)).toBe("mock-access-token-1")
        })
    ))

  it.effect("stops retrying the save of a session once a newer session replaced it", () =>
    withManager(
      { session: stored("0", 0), options: { autoRefresh: false } },
      ({ mock, manager, store }) =>
        Effect.gen(function*() {
          store.failSavesOf = "mock-access-token-1"
          const reader = yield* Effect.forkChild(manager.accessToken)
          yield* settle
          yield* TestClock.adjust("1 second")
          yield* Fiber.join(reader)
          yield* TestClock.setTime(5 * second)
          // The unsaved refresh token is in memory: the next refresh spends it, not the old one.
          const refresher = yield* Effect.forkChild(manager.refresh)
          yield* TestClock.adjust("1 second")
          expect(tokenOf(yield* Fiber.join(refresher))).toBe("mock-access-token-2")
          yield* TestClock.adjust("1 hour")
          expect(yield* tokensGiven(mock)).toStrictEqual(["mock-refresh-token-0", "mock-refresh-token-1"])
          expect(store.saves.filter((save) => save.token === "mock-access-token-1").map((save) => save.at))
            .toStrictEqual([
              1_000,
              1_000,
              2_000,
              4_000
            ])
          expect(store.storedToken()).toBe("mock-access-token-2")
        })
    ))
})

describe("transient failures", () => {
  it.effect("keeps a still-valid session through a transient failure, emits RefreshFailed, and retries after the cooldown", () =>
    withManager(
      {
        session: stored("0", 10 * minute),
        mock: { whenEmpty: serverDown("100 millis") }
      },
      ({ mock, events, manager, store }) =>
        Effect.gen(function*() {
          yield* TestClock.setTime(9 * minute)
          yield* TestClock.adjust("100 millis")
          expect(yield* callCount(mock)).toBe(1)
          expect(yield* currentToken(manager)).toBe("mock-access-token-0")
          expect(store.storedToken()).toBe("mock-access-token-0")
          yield* settle
          expect(events).toHaveLength(1)
          const failed = events[0]!
          expect(failed._tag).toBe("RefreshFailed")
          if (failed._tag === "RefreshFailed") {
            expect(failed.willRetry).toBe(true)
            expect(failed.error._tag).toBe("ServerError")
          }

          // Within the cooldown: readers get the valid token, `refresh` fails at once; no request.
          expect(Redacted.value(yield* manager.accessToken)).toBe("mock-access-token-0")
          expect((yield* Effect.flip(manager.refresh))._tag).toBe("ServerError")
          expect(yield* callCount(mock)).toBe(1)

          // Cooldowns of 10 s, 20 s, 40 s, each counted from the end of the failed refresh.
          yield* TestClock.setTime(9 * minute + 59 * second)
          expect(yield* startTimes(mock)).toStrictEqual([540_000, 550_100, 570_200])
          expect(Redacted.value(yield* manager.accessToken)).toBe("mock-access-token-0")

          // Once the token has expired, a read within the cooldown fails at once with the last error.
          yield* TestClock.setTime(10 * minute + 5 * second)
          const error = yield* Effect.flip(manager.accessToken)
          expect(error._tag).toBe("ServerError")
          expect(yield* callCount(mock)).toBe(3)
          yield* TestClock.setTime(11 * minute)
          expect(yield* startTimes(mock)).toStrictEqual([540_000, 550_100, 570_200, 610_300])
          // The session is never dropped on a transient failure.
          expect(yield* currentToken(manager)).toBe("mock-access-token-0")
          expect(tags(events).every((tag) => tag === "RefreshFailed")).toBe(true)
        })
    ))

  // Cooldown 10 s doubling to 5 min: refreshes start 1 s, 11.1 s, 31.2 s, 71.3 s,
  // 151.4 s, 311.5 s, then every 300.1 s: 16 calls in the hour.
  it.effect(
    "makes exactly 16 refresh calls in an hour with the server down, even with a reader every second",
    () =>
      withManager(
        {
          session: stored("0", 61 * second),
          mock: { whenEmpty: serverDown("100 millis") }
        },
        ({ mock, manager }) =>
          Effect.gen(function*() {
            const reads: Array<{ readonly at: number; readonly outcome: string }> = []
            for (let s = 1; s <= 3_600; s++) {
              yield* TestClock.adjust("1 second")
              yield* Effect.forkChild(
                manager.accessToken.pipe(
                  Effect.match({ onSuccess: Redacted.value, onFailure: (error) => error._tag }),
                  Effect.flatMap((outcome) => Effect.sync(() => reads.push({ at: s * second, outcome })))
                )
              )
            }
            yield* settle
            expect(yield* startTimes(mock)).toStrictEqual([
              1_000,
              11_100,
              31_200,
              71_300,
              151_400,
              311_500,
              611_600,
              911_700,
              1_211_800,
              1_511_900,
              1_812_000,
              2_112_100,
              2_412_200,
              2_712_300,
              3_012_400,
              3_312_500
            ])
            expect(reads).toHaveLength(3_600)
            // Readers got the token while it was valid, then the typed error; never "no session".
            for (const read of reads) {
              expect(read.outcome).toBe(read.at < 61 * second ? "mock-access-token-0" : "ServerError")
            }
            expect(yield* currentToken(manager)).toBe("mock-access-token-0")
          })
      )
  )

  // With the real RefreshClient (default policy: 6 attempts over about 6.2 s, jittered)
  // each of the 16 cycles above is a burst of 6 POSTs: 96 POSTs in the hour.
  it.effect(
    "makes exactly 96 POSTs in an hour with the real RefreshClient against a server answering 503",
    () =>
      Effect.gen(function*() {
        const server = TestHttpClient.make(TestHttpClient.text(503, "Service Unavailable"))
        yield* withManager(
          {
            session: stored("0", 61 * second),
            refreshLayer: RefreshClient.layer().pipe(Layer.provide(server.layer))
          },
          ({ manager }) =>
            Effect.gen(function*() {
              // One adjust for the hour: the TestClock still wakes every sleep in order, at its own time.
              yield* TestClock.adjust("1 hour")
              expect(yield* currentToken(manager)).toBe("mock-access-token-0")
            })
        )
        const sentAt = server.sentAt()
        expect(sentAt).toHaveLength(96)
        expect(sentAt[0]).toBe(1_000)
        // Bursts: POSTs less than the shortest cooldown (10 s) apart belong to one refresh.
        const bursts: Array<number> = []
        sentAt.forEach((at, i) => {
          if (i === 0 || at - sentAt[i - 1]! >= 10_000) bursts.push(1)
          else bursts[bursts.length - 1]!++
        })
        expect(bursts).toStrictEqual(Array.from({ length: 16 }, () => 6))
        expect(sentAt[sentAt.length - 1]!).toBeLessThan(hour)
      }).pipe(Random.withSeed("moon-refresh"))
  )

  it.effect("a malformed response never replaces a good session", () =>
    withManager(
      {
        session: stored("0", 10 * minute),
        mock: {
          script: [
            MockRefreshClient.fail(
              new RefreshError.MalformedResponseError({ status: 200, message: "response is not a session" })
            )
          ],
          whenEmpty: MockRefreshClient.succeed()
        }
      },
      ({ mock, events, manager, store }) =>
        Effect.gen(function*() {
          yield* TestClock.setTime(9 * minute)
          expect(yield* callCount(mock)).toBe(1)
          expect(yield* currentToken(manager)).toBe("mock-access-token-0")
          expect(store.storedToken()).toBe("mock-access-token-0")
          expect(Redacted.value(yield* manager.accessToken)).toBe("mock-access-token-0")
          yield* settle
          expect(tags(events)).toStrictEqual(["RefreshFailed"])

          // The next attempt, after the cooldown, spends the same (kept) refresh token. (A failed
          // call issues nothing, so the first new session is number 1.)
          yield* TestClock.adjust("10 seconds")
          expect(yield* tokensGiven(mock)).toStrictEqual(["mock-refresh-token-0", "mock-refresh-token-0"])
          expect(yield* currentToken(manager)).toBe("mock-access-token-1")
        })
    ))

  it.effect("a malformed response to a read of an expired token fails the read but keeps the session", () =>
    withManager(
      {
        session: stored("0", 0),
        options: { autoRefresh: false },
        mock: {
          whenEmpty: MockRefreshClient.fail(
            new RefreshError.MalformedResponseError({ status: 200, message: "not JSON" })
          )
        }
      },
      ({ manager, store }) =>
        Effect.gen(function*() {
          const error = yield* Effect.flip(manager.accessToken)
          expect(error._tag).toBe("MalformedResponseError")
          expect(yield* currentToken(manager)).toBe("mock-access-token-0")
          expect(store.storedToken()).toBe("mock-access-token-0")
        })
    ))

  it.effect("a reader whose own refresh fails transiently still gets the token while it is valid", () =>
    withManager(
      {
        session: stored("0", 10 * minute),
        options: { autoRefresh: false },
        mock: { whenEmpty: serverDown("100 millis") }
      },
      ({ mock, events, manager }) =>
        Effect.gen(function*() {
          yield* TestClock.setTime(9 * minute + 30 * second)
          const reader = yield* Effect.forkChild(manager.accessToken)
          yield* settle
          yield* TestClock.adjust("100 millis")
          expect(Redacted.value(yield* Fiber.join(reader))).toBe("mock-access-token-0")
          expect(yield* callCount(mock)).toBe(1)
          yield* settle
          const failed = events[0]
          // autoRefresh is off: nobody retries by itself.
          expect(failed?._tag === "RefreshFailed" && failed.willRetry).toBe(false)
        })
    ))

  it.effect("a successful refresh resets the cooldown to its first step", () =>
    withManager(
      {
        session: stored("0", 10 * minute),
        mock: {
          script: [
            serverDown("100 millis"),
            serverDown("100 millis"),
            MockRefreshClient.succeed({ lifetime: "10 minutes", delay: "100 millis" })
          ],
          whenEmpty: serverDown("100 millis")
        }
      },
      ({ mock }) =>
        Effect.gen(function*() {
          yield* TestClock.setTime(18 * minute + 50 * second)
          // 9:00 fails, 9:10.1 fails, 9:30.2 succeeds (valid to 19:30.3), 18:30.3 fails, 18:40.4 (10 s, not 40 s).
          expect(yield* startTimes(mock)).toStrictEqual([540_000, 550_100, 570_200, 1_110_300, 1_120_400])
        })
    ))

  it.effect("follows the configured cooldown, doubling up to maxCooldown", () =>
    withManager(
      {
        session: stored("0", 10 * minute),
        options: { cooldown: "1 second", maxCooldown: "4 seconds" },
        mock: { whenEmpty: serverDown(Duration.zero) }
      },
      ({ mock }) =>
        Effect.gen(function*() {
          yield* TestClock.setTime(9 * minute + 16 * second)
          expect(yield* startTimes(mock)).toStrictEqual([540_000, 541_000, 543_000, 547_000, 551_000, 555_000])
        })
    ))

  it.effect("a store lock that cannot be taken is a failed refresh: RefreshFailed, a cooldown, then a retry", () =>
    withManager(
      { session: stored("0", 10 * minute) },
      ({ mock, events, manager, store }) =>
        Effect.gen(function*() {
          store.failNextLocks = 1
          yield* TestClock.setTime(9 * minute)
          yield* settle
          expect(store.log).toContain("lock-failed")
          expect(yield* currentToken(manager)).toBe("mock-access-token-0")
          const observed = {
            events: events.map((event) =>
              event._tag === "RefreshFailed"
                ? `RefreshFailed(${event.error._tag}, willRetry: ${event.willRetry})`
                : event._tag
            ),
            // Within the cooldown a reader gets the still-valid token at once, without trying the lock again.
            read: yield* readAtOnce(manager),
            locksTried: store.log.filter((entry) => entry === "lock-failed").length
          }
          yield* TestClock.setTime(9 * minute + 10 * second)
          const retriedAt = yield* startTimes(mock)
          yield* TestClock.adjust("1 second")
          expect({ ...observed, retriedAt }).toStrictEqual({
            events: ["RefreshFailed(StoreError, willRetry: true)"],
            read: "mock-access-token-0",
            locksTried: 1,
            retriedAt: [9 * minute + 10 * second]
          })
        })
    ))

  it.effect("a refresh request that never answers is cut off by the client's 10 s timeout and retried", () =>
    Effect.gen(function*() {
      // The first request would take an hour; the retry answers at once.
      const server = slowMoonServer("1 hour", Duration.zero)
      yield* withManager(
        { session: stored("0", 10 * minute), refreshLayer: server.layer },
        ({ manager }) =>
          Effect.gen(function*() {
            yield* TestClock.setTime(9 * minute + 11 * second)
            const observed = { requests: server.requests.length, token: yield* currentToken(manager) }
            // Let an uncut request finish so the test ends either way.
            yield* TestClock.adjust("1 hour")
            expect(observed).toStrictEqual({ requests: 2, token: "access-http-2" })
            expect(server.requests[0]!.signal.aborted).toBe(true)
          })
      )
    }))
})

describe("terminal failure", () => {
  it.effect("a rejected refresh token signs out: memory and store cleared, SignedOut emitted, later reads fail without a request", () =>
    withManager(
      {
        session: stored("0", 10 * minute),
        mock: {
          whenEmpty: MockRefreshClient.fail(
            new RefreshError.TokenRejectedError({ status: 400, message: "Invalid Refresh Token: Already Used" })
          )
        }
      },
      ({ mock, events, manager, store }) =>
        Effect.gen(function*() {
          const error = yield* Effect.flip(manager.refresh)
          expect(error._tag).toBe("TokenRejectedError")
          expect(yield* manager.current).toStrictEqual(Option.none())
          expect(store.storedToken()).toBe("none")
          yield* settle
          expect(tags(events)).toStrictEqual(["SignedOut"])
          const signedOut = events[0]!
          if (signedOut._tag === "SignedOut") {
            expect(signedOut.reason._tag).toBe("TokenRejected")
            expect(signedOut.reason._tag === "TokenRejected" && signedOut.reason.error).toBe(error)
          }

          expect((yield* Effect.flip(manager.accessToken))._tag).toBe("NoSessionError")
          expect((yield* Effect.flip(manager.session))._tag).toBe("NoSessionError")
          expect((yield* Effect.flip(manager.refresh))._tag).toBe("NoSessionError")
          // No proactive refresh either.
          yield* TestClock.adjust("1 day")
          expect(yield* callCount(mock)).toBe(1)
        })
    ))

  it.effect("a reader waiting on a refresh whose token is rejected gets the TokenRejectedError", () =>
    withManager(
      {
        session: stored("0", 0),
        options: { autoRefresh: false },
        mock: {
          whenEmpty: MockRefreshClient.fail(
            new RefreshError.TokenRejectedError({ status: 401, message: "invalid_grant" }),
            { delay: "1 second" }
          )
        }
      },
      ({ manager }) =>
        Effect.gen(function*() {
          const reader = yield* Effect.forkChild(Effect.flip(manager.accessToken))
          yield* settle
          yield* TestClock.adjust("1 second")
          expect((yield* Fiber.join(reader))._tag).toBe("TokenRejectedError")
          expect((yield* Effect.flip(manager.accessToken))._tag).toBe("NoSessionError")
        })
    ))

  it.effect("a proactive refresh whose token is rejected signs out too", () =>
    withManager(
      {
        session: stored("0", 10 * minute),
        mock: {
          whenEmpty: MockRefreshClient.fail(
            new RefreshError.TokenRejectedError({ status: 401, message: "invalid_grant" })
          )
        }
      },
      ({ mock, events, manager, store }) =>
        Effect.gen(function*() {
          yield* TestClock.setTime(9 * minute)
          yield* settle
          expect(yield* manager.current).toStrictEqual(Option.none())
          expect(store.storedToken()).toBe("none")
          expect(tags(events)).toStrictEqual(["SignedOut"])
          yield* TestClock.adjust("1 day")
          expect(yield* callCount(mock)).toBe(1)
        })
    ))
})

describe("the layer's scope", () => {
  const buildIn = (scope: Scope.Scope, mock: MockRefreshClient.Service, store: TestStore) =>
    Layer.build(
      SessionManager.layer().pipe(
        Layer.provide(Layer.merge(Layer.succeed(RefreshClient.RefreshClient, mock), store.layer))
      )
    ).pipe(
      Scope.provide(scope),
      Effect.map(Context.get(SessionManager.SessionManager))
    )

  it.effect("closing it stops the proactive refresh", () =>
    Effect.gen(function*() {
      const mock = yield* MockRefreshClient.make()
      const store = makeStore(yield* mock.issueSession({ name: "0", lifetime: 10 * minute }))
      const scope = yield* Scope.make()
      yield* buildIn(scope, mock, store)
      yield* TestClock.setTime(9 * minute - 1)
      yield* Scope.close(scope, Exit.void)
      yield* TestClock.adjust("1 day")
      expect(yield* callCount(mock)).toBe(0)
    }))

  it.effect("closing it aborts an in-flight refresh instead of waiting for it", () =>
    Effect.gen(function*() {
      const mock = yield* MockRefreshClient.make({ whenEmpty: MockRefreshClient.succeed({ delay: "1 hour" }) })
      const store = makeStore(yield* mock.issueSession({ name: "0", lifetime: 10 * minute }))
      const scope = yield* Scope.make()
      const manager = yield* buildIn(scope, mock, store)
      yield* TestClock.setTime(9 * minute)
      expect(yield* callCount(mock)).toBe(1)
      const waiter = yield* Effect.forkChild(manager.refresh)
      yield* settle
      // Closed in a daemon so that, if the close waits for the request, the test can
      // still let the request finish (and report) instead of hanging.
      const closing = yield* Effect.forkDetach(Scope.close(scope, Exit.void))
      yield* settle
      const outcome = {
        refresh: (yield* mock.calls)[0]!.outcome,
        closed: closing.pollUnsafe() !== undefined,
        waiter: Option.map(Option.fromUndefinedOr(waiter.pollUnsafe()), (exit) => Exit.hasInterrupts(exit))
      }
      yield* TestClock.adjust("1 hour")
      yield* Fiber.join(closing)
      expect(outcome).toStrictEqual({ refresh: "interrupted", closed: true, waiter: Option.some(true) })
      yield* TestClock.adjust("1 day")
      expect(yield* callCount(mock)).toBe(1)
      expect(store.storedToken()).toBe("mock-access-token-0")
    }))

  it.effect("closing it aborts the HTTP request of an in-flight refresh made by the real RefreshClient", () =>
    Effect.gen(function*() {
      const server = slowMoonServer("1 hour", Duration.zero)
      const mock = yield* MockRefreshClient.make()
      const store = makeStore(yield* mock.issueSession({ name: "0", lifetime: 10 * minute }))
      const scope = yield* Scope.make()
      yield* Layer.build(SessionManager.layer().pipe(Layer.provide(Layer.merge(server.layer, store.layer)))).pipe(
        Scope.provide(scope)
      )
      yield* TestClock.setTime(9 * minute)
      expect(server.requests).toHaveLength(1)
      const closing = yield* Effect.forkDetach(Scope.close(scope, Exit.void))
      yield* settle
      const outcome = {
        aborted: server.requests[0]!.signal.aborted,
        closed: closing.pollUnsafe() !== undefined
      }
      // If the close waits for the request, let the request (and a retry) finish so the test ends.
      yield* TestClock.adjust("2 hours")
      yield* Fiber.join(closing)
      expect(outcome).toStrictEqual({ aborted: true, closed: true })
    }))
})

describe("a store shared with another process", () => {
  it.effect("adopts a newer session another process saved instead of refreshing", () =>
    withManager(
      { session: stored("0", 10 * minute) },
      ({ mock, events, manager, store }) =>
        Effect.gen(function*() {
          store.setByAnotherProcess(yield* mock.issueSession({ name: "other", lifetime: 2 * hour }))
          yield* TestClock.setTime(9 * minute)
          expect(yield* callCount(mock)).toBe(0)
          expect(yield* currentToken(manager)).toBe("mock-access-token-other")
          expect(Redacted.value(yield* manager.accessToken)).toBe("mock-access-token-other")
          yield* settle
          expect(tags(events)).toStrictEqual(["Refreshed"])
          // The next refresh is planned from the adopted session, and spends its refresh token.
          yield* TestClock.setTime(2 * hour - minute)
          expect(yield* tokensGiven(mock)).toStrictEqual(["mock-refresh-token-other"])
          yield* TestClock.adjust("1 second")
          expect(yield* currentToken(manager)).toBe("mock-access-token-1")
        })
    ))

  it.effect("refreshes with the newer stored session's refresh token when that one is within the margin too", () =>
    withManager(
      { session: stored("0", 10 * minute), options: { autoRefresh: false } },
      ({ mock, manager, store }) =>
        Effect.gen(function*() {
          store.setByAnotherProcess(yield* mock.issueSession({ name: "other", lifetime: 10 * minute + 30 * second }))
          yield* TestClock.setTime(9 * minute + 45 * second)
          const reader = yield* Effect.forkChild(manager.accessToken)
          yield* settle
          yield* TestClock.adjust("1 second")
          expect(Redacted.value(yield* Fiber.join(reader))).toBe("mock-access-token-1")
          expect(yield* tokensGiven(mock)).toStrictEqual(["mock-refresh-token-other"])
        })
    ))
})

describe("signing in and out", () => {
  it.effect("signIn saves the session, then uses it, emits SignedIn and plans its refresh", () =>
    withManager({}, ({ mock, events, manager, store }) =>
      Effect.gen(function*() {
        yield* manager.signIn(yield* mock.issueSession({ name: "new", lifetime: hour }))
        expect(store.log).toStrictEqual(["load", "save:mock-access-token-new"])
        expect(Redacted.value(yield* manager.accessToken)).toBe("mock-access-token-new")
        yield* settle
        expect(tags(events)).toStrictEqual(["SignedIn"])
        yield* TestClock.setTime(hour - minute)
        expect(yield* tokensGiven(mock)).toStrictEqual(["mock-refresh-token-new"])
        yield* TestClock.adjust("1 second")
        expect(yield* currentToken(manager)).toBe("mock-access-token-1")
      })))

  it.effect("signIn whose save fails changes nothing and returns the StoreError", () =>
    withManager({ session: stored("0", hour) }, ({ events, manager, mock, store }) =>
      Effect.gen(function*() {
        store.failNextSaves = 1
        const error = yield* Effect.flip(manager.signIn(yield* mock.issueSession({ name: "new", lifetime: 2 * hour })))
        expect([error._tag, error.operation]).toStrictEqual(["StoreError", "save"])
        expect(yield* currentToken(manager)).toBe("mock-access-token-0")
        expect(store.storedToken()).toBe("mock-access-token-0")
        yield* settle
        expect(events).toStrictEqual([])
      })))

  it.effect("signOut forgets the session, emits SignedOut(UserSignedOut), clears the store, and stops refreshing", () =>
    withManager(
      { session: stored("0", 10 * minute) },
      ({ mock, events, manager, store }) =>
        Effect.gen(function*() {
          yield* manager.signOut
          expect(yield* manager.current).toStrictEqual(Option.none())
          expect(store.storedToken()).toBe("none")
          expect((yield* Effect.flip(manager.accessToken))._tag).toBe("NoSessionError")
          yield* settle
          expect(tags(events)).toStrictEqual(["SignedOut"])
          const signedOut = events[0]!
          expect(signedOut._tag === "SignedOut" && signedOut.reason._tag).toBe("UserSignedOut")
          yield* TestClock.adjust("1 day")
          expect(yield* callCount(mock)).toBe(0)
        })
    ))

  it.effect("signOut whose store clear fails returns the StoreError and still forgets the session in memory", () =>
    withManager({ session: stored("0", 10 * minute) }, ({ manager, store }) =>
      Effect.gen(function*() {
        store.failClear = true
        const error = yield* Effect.flip(manager.signOut)
        expect([error._tag, error.operation]).toStrictEqual(["StoreError", "clear"])
        expect(yield* manager.current).toStrictEqual(Option.none())
        expect((yield* Effect.flip(manager.accessToken))._tag).toBe("NoSessionError")
      })))

  it.effect("a refresh that completes after signOut does not bring the session back", () =>
    withManager(
      { session: stored("0", 0), options: { autoRefresh: false } },
      ({ mock, events, manager, store }) =>
        Effect.gen(function*() {
          const reader = yield* Effect.forkChild(manager.accessToken)
          yield* settle
          yield* manager.signOut
          yield* TestClock.adjust("1 second")
          expect((yield* mock.calls)[0]!.outcome).toBe("rotated")
          const exit = yield* Fiber.await(reader)
          expect(Exit.isFailure(exit) && Option.map(Cause.findErrorOption(exit.cause), (e) => e._tag)).toStrictEqual(
            Option.some("NoSessionError")
          )
          expect(yield* manager.current).toStrictEqual(Option.none())
          expect(store.storedToken()).toBe("none")
          expect(store.log.filter((entry) => entry.startsWith("save"))).toStrictEqual([])
          yield* settle
          expect(tags(events)).toStrictEqual(["SignedOut"])
        })
    ))

  it.effect("a refresh that completes after signIn is discarded in favour of the signed-in session", () =>
    withManager(
      { session: stored("0", 0), options: { autoRefresh: false } },
      ({ manager, mock, store }) =>
        Effect.gen(function*() {
          const reader = yield* Effect.forkChild(manager.accessToken)
          yield* settle
          yield* manager.signIn(yield* mock.issueSession({ name: "new", lifetime: 2 * hour }))
          yield* TestClock.adjust("1 second")
          expect(Redacted.value(yield* Fiber.join(reader))).toBe("mock-access-token-new")
          expect(yield* currentToken(manager)).toBe("mock-access-token-new")
          expect(store.storedToken()).toBe("mock-access-token-new")
        })
    ))
})

/**
 * Runs one case of the fault matrix (see `FaultMatrix.ts`) against a real
 * MockMoonServer over FetchHttpClient, and asserts its outcome: the result or
 * the precise typed error, never a defect, and where the refresh token is
 * afterwards (the old one or the newest the server issued, never anything else).
 *
 * Everything the case prints is captured (logs at every level, spans, errors
 * in every rendering, session events, the server's own records) so the leak
 * audit can search it for tokens.
 */
import { expect } from "@effect/vitest"
import {
  Cause,
  Clock,
  DateTime,
  Deferred,
  Duration,
  Effect,
  Exit,
  Fiber,
  Logger,
  Option,
  Redacted,
  References,
  Result,
  Scope,
  Stream
} from "effect"
import { FetchHttpClient, HttpClient, type HttpClientRequest, type HttpClientResponse } from "effect/http"
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
import { inspect } from "node:util"
import {
  attemptTimeoutMillis,
  type Case,
  defaultReuseWindowMillis,
  type ErrorSpec,
  fastPolicy,
  type Held,
  slowBackoffPolicy,
  type Step
} from "./FaultMatrix.js"
import { hangGuardMillis, realSleep } from "./RealTime.js"
import { type RecordingSpan, recordingTracer } from "./RecordingTracer.js"
import * as Sleeps from "./Sleeps.js"

// ---------------------------------------------------------------------------
// Capture
// ---------------------------------------------------------------------------

/** Everything a case printed, logged or traced. */
export interface Capture {
  /** Every rendering of everything, for the leak audit. */
  readonly texts: Array<string>
  /** Log lines (logfmt), also used to see where a refresh is. */
  readonly logs: Array<string>
  readonly spans: Array<RecordingSpan>
  /** Every token the server issued during the case, revealed (filled in when the case ends). */
  readonly issued: Array<string>
}

/** Renders a value every way a user might print it. */
export const renderAll = (value: unknown): ReadonlyArray<string> => {
  const json = (() => {
    try {
      return JSON.stringify(value) ?? "undefined"
    } catch (error) {
      return `JSON.stringify threw: ${String(error)}`
    }
  })()
  // `showHidden` too: a secret must not hide in a non-enumerable property.
  return [String(value), json, inspect(value, { depth: 10 }), inspect(value, { depth: 10, showHidden: true })]
}

/**
 * The raw value a span ended with (an error or a response), rendered with
 * `String`, `JSON.stringify`, `util.inspect` and `Cause.pretty`: what a tracer
 * that serialises whole exits would write.
 */
export const renderExit = (exit: Exit.Exit<unknown, unknown>): ReadonlyArray<string> =>
  Exit.isFailure(exit) ? renderCause(exit.cause) : renderAll(exit.value)

const renderCause = (cause: Cause.Cause<unknown>): ReadonlyArray<string> => [
  Cause.pretty(cause),
  ...Cause.prettyErrors(cause, { includeCauseInStack: true }).map((error) => error.stack ?? error.message),
  ...cause.reasons.flatMap((reason) =>
    Cause.isFailReason(reason) ? renderAll(reason.error) : Cause.isDieReason(reason) ? renderAll(reason.defect) : []
  )
]

export const makeCapture = () => {
  const { spans, tracer } = recordingTracer()
  const capture: Capture = { texts: [], logs: [], spans, issued: [] }
  const logger = Logger.make((options: Logger.Options<unknown>) => {
    const line = Logger.formatLogFmt.log(options)
    capture.logs.push(line)
    capture.texts.push(
      line,
      Logger.formatJson.log(options),
      Logger.formatSimple.log(options),
      inspect(Logger.formatStructured.log(options), { depth: 10 }),
      ...renderAll(options.message),
      ...renderCause(options.cause)
    )
  })
  /** Runs `effect` with its logs (every level) and spans captured. */
  const around = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    effect.pipe(
      Effect.withTracer(tracer),
      // Only this logger: `it.effect`'s own goes to its TestConsole, which nobody reads here.
      Effect.provide(Logger.layer([logger])),
      Effect.provideService(References.MinimumLogLevel, "All")
    )
  /**
   * Span names, attributes and events, and how a failed span ends as an
   * OpenTelemetry exporter records it: `Cause.pretty` as the status message,
   * each error's name, message and stack as an exception event.
   */
  const spanTexts = (): ReadonlyArray<string> =>
    spans.flatMap((span) => [
      span.name,
      ...[...span.attributes].map(([key, value]) => `${key}=${String(value)} ${JSON.stringify(value)}`),
      ...span.events.map(([name, attributes]) => `${name} ${JSON.stringify(attributes)} ${inspect(attributes)}`),
      ...(span.status._tag === "Ended" && Exit.isFailure(span.status.exit)
        ? [
          Cause.pretty(span.status.exit.cause),
          ...Cause.prettyErrors(span.status.exit.cause).flatMap((
            error
          ) => [error.name, error.message, error.stack ?? ""])
        ]
        : [])
    ])
  return { capture, around, spanTexts }
}

export type Capturing = ReturnType<typeof makeCapture>

// ---------------------------------------------------------------------------
// The world of one case
// ---------------------------------------------------------------------------

interface Gate {
  readonly reached: Deferred.Deferred<void>
  readonly release: Deferred.Deferred<void>
}

const makeGate = Effect.map(
  Effect.all([Deferred.make<void>(), Deferred.make<void>()]),
  ([reached, release]): Gate => ({ reached, release })
)

const passGate = (gate: Gate | undefined) =>
  gate === undefined
    ? Effect.void
    : Effect.andThen(Deferred.succeed(gate.reached, void 0), Deferred.await(gate.release))

/** A store in memory that can fail its next save or hold it at a gate. */
interface CaseStore {
  failNextSaves: number
  saveGate: Gate | undefined
  readonly stored: () => Option.Option<Session.Session>
  readonly service: SessionStore.Service
}

const makeStore = (initial: Session.Session | undefined): CaseStore => {
  let stored = Option.fromNullishOr(initial)
  const store: CaseStore = {
    failNextSaves: 0,
    saveGate: undefined,
    stored: () => stored,
    service: SessionStore.make({
      load: Effect.sync(() => stored),
      save: (session) =>
        Effect.suspend(() => passGate(store.saveGate)).pipe(
          Effect.andThen(Effect.suspend(() => {
            if (store.failNextSaves > 0) {
              store.failNextSaves--
              return Effect.fail(new SessionStore.StoreError({ operation: "save", message: "disk full" }))
            }
            stored = Option.some(session)
            return Effect.void
          }))
        ),
      clear: Effect.sync(() => {
        stored = Option.none()
      })
    })
  }
  return store
}

// ---------------------------------------------------------------------------
// Time: the TestClock, moved by what the case's world did
// ---------------------------------------------------------------------------

/** The longest backoff of the policies above: a pending sleep no further ahead is a retry's. */
const maxBackoffMillis = 260

/** A scripted fault that holds the answer past the attempt timeout: only the timeout ends that attempt. */
const stalls = (fault: MockMoonServer.Fault | undefined): boolean =>
  (fault?._tag === "Delay" || fault?._tag === "SlowBody") && fault.millis > attemptTimeoutMillis

/**
 * Every case runs on the TestClock, against a server and sockets that run in
 * real time. Nothing the library times (attempt timeouts, backoffs) can race
 * the real world: the clock moves only when the client can only be waiting
 * for it. `pump` moves it one step, or waits 2 ms of real time:
 *
 * - an attempt failed (its debug log) and its retry's backoff is pending:
 *   to the end of the backoff;
 * - the server holds the latest refresh request on a stalling fault (its
 *   `Delay` or the rest of its `SlowBody`, longer than the test may run):
 *   past the attempt timeout.
 *
 * A request the server answers in time is never cut by the clock, however
 * slow the machine.
 */
const makePump = (world: {
  readonly capture: Capture
  readonly server: MockMoonServer.Service
  readonly scripted: () => ReadonlyArray<MockMoonServer.Fault>
  /** The wake-up times of the sleeps in progress (`Sleeps.tracked`). */
  readonly sleeps: Effect.Effect<ReadonlyArray<number>>
}) => {
  let backoffs = 0
  let stalled = -1
  return Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    const failures = world.capture.logs.filter((line) => line.includes("refresh attempt failed")).length
    if (failures > backoffs) {
      const due = (yield* world.sleeps).filter((at) => at > now && at <= now + maxBackoffMillis)
      if (due.length > 0) {
        backoffs++
        return yield* TestClock.adjust(Math.min(...due) - now)
      }
    }
    const refreshes = (yield* world.server.requests).filter((request) => request.path === "/auth/refresh")
    const last = refreshes.length - 1
    const fault = world.scripted()[last]
    const holding = fault?._tag === "Delay" ? refreshes[last]?.outcome === "pending" : refreshes[last]?.status === 200
    if (last > stalled && stalls(fault) && holding) {
      stalled = last
      return yield* TestClock.adjust(attemptTimeoutMillis)
    }
    yield* realSleep(2)
  })
}

/** Waits until `condition` holds, moving the clock with `pump` meanwhile (a hang guard bounds the wait). */
const driveUntil = (label: string, pump: Effect.Effect<void>, condition: Effect.Effect<boolean>) =>
  Effect.gen(function*() {
    const started = Date.now()
    while (!(yield* condition)) {
      if (Date.now() - started > hangGuardMillis) {
        return yield* Effect.die(new Error(`fault matrix: never saw ${label}`))
      }
      yield* pump
    }
  })

/** Waits in real time without moving the clock (the world does something on its own). */
const waitUntil = (label: string, condition: Effect.Effect<boolean>) => driveUntil(label, realSleep(2), condition)

const isRefreshRequest = (request: HttpClientRequest.HttpClientRequest) =>
  request.method === "POST" && request.url.endsWith("/auth/refresh")

const refreshToken = (session: Session.Session) => Redacted.value(session.refreshToken)

const knownTags = new Set([
  "TransportError",
  "ServerError",
  "RateLimitedError",
  "TokenRejectedError",
  "MalformedResponseError",
  "NoSessionError",
  "StoreError"
])

const expectError = (error: unknown, spec: ErrorSpec) => {
  const { retryAfterMillis, ...fields } = spec
  expect(error).toMatchObject(fields)
  if (retryAfterMillis !== undefined) {
    const retryAfter = RefreshError.retryAfter(error as RefreshError.RefreshError)
    expect(Option.map(retryAfter, Duration.toMillis)).toStrictEqual(Option.some(retryAfterMillis))
  }
}

// ---------------------------------------------------------------------------
// Running a case
// ---------------------------------------------------------------------------

/**
 * Runs `c` and asserts its outcome. Under `it.effect`: the TestClock, moved
 * by `makePump` (real sockets answer in real time meanwhile).
 */
export const runCase = (c: Case, capturing: Capturing = makeCapture()): Effect.Effect<void> =>
  capturing.around(runCaseCaptured(c, capturing.capture))

const runCaseCaptured = (c: Case, capture: Capture): Effect.Effect<void> =>
  Sleeps.tracked((sleeps) => runCaseTracked(c, capture, sleeps))

const runCaseTracked = (c: Case, capture: Capture, sleeps: Effect.Effect<ReadonlyArray<number>>): Effect.Effect<void> =>
  Effect.scoped(Effect.gen(function*() {
    const { entryPoint, expected, fault } = c
    if (expected._tag === "NotApplicable") return
    const scenario = fault.scenario
    const isClock = scenario._tag === "ClockJump"
    const step: Step | undefined = scenario._tag === "Interrupt" ? scenario.step : undefined

    // The client's clock starts at the host's time, as the server's does, then moves only with the pump.
    yield* TestClock.setTime(Date.now())

    // The server. Its clock can be pushed ahead so that a still-valid (to the
    // client) access token is expired to it: how the AuthHttpClient gets its 401.
    let serverOffset = 0
    const server = yield* MockMoonServer.make({
      reuseWindow: scenario._tag === "Script"
        ? scenario.reuseWindowMillis ?? defaultReuseWindowMillis
        : defaultReuseWindowMillis,
      now: () => Date.now() + serverOffset
    })
    const issued = yield* server.issueSession()
    yield* Effect.addFinalizer(() =>
      Effect.map(server.issuedTokens, (tokens) => capture.issued.push(...tokens.map(Redacted.value)))
    )
    const seededToken = Redacted.value(issued.refreshToken)

    // The HTTP stack, with a gate in front of the refresh POST for "before the request is sent".
    const base = yield* Effect.provide(HttpClient.HttpClient, FetchHttpClient.layer)
    let sendGate: Gate | undefined
    const refreshHttp = base.pipe(
      HttpClient.mapRequestEffect((request) =>
        isRefreshRequest(request)
          ? Effect.as(Effect.suspend(() => passGate(sendGate)), request)
          : Effect.succeed(request)
      )
    )
    const refreshClient = yield* RefreshClient.make({
      baseUrl: server.url,
      policy: RefreshPolicy.exponential(step === "backoff" ? slowBackoffPolicy : fastPolicy),
      timeout: Duration.millis(attemptTimeoutMillis)
    }).pipe(Effect.provideService(HttpClient.HttpClient, refreshHttp))

    // The manager's seed: expired to the client (SessionManager), or valid to
    // the client and expired to the server (AuthHttpClient, so it gets a 401).
    // The clock cases seed the session as the server issued it.
    const seeded = isClock || entryPoint === "AuthHttpClient"
      ? Session.unsafeMake(issued)
      : Session.unsafeMake({ ...issued, expiresAt: (yield* Clock.currentTimeMillis) - 1_000 })
    const store = makeStore(entryPoint === "RefreshClient" ? undefined : seeded)
    const managerScope = yield* Scope.make()
    yield* Effect.addFinalizer(() => Scope.close(managerScope, Exit.void))
    const events: Array<SessionManager.SessionEvent> = []
    let manager: SessionManager.Service | undefined
    let http: AuthHttpClient.Service | undefined
    if (entryPoint !== "RefreshClient") {
      manager = yield* SessionManager.make({ autoRefresh: false }).pipe(
        Effect.provideService(RefreshClient.RefreshClient, refreshClient),
        Effect.provideService(SessionStore.SessionStore, store.service),
        Scope.provide(managerScope),
        Effect.orDie
      )
      yield* Effect.forkScoped(Stream.runForEach(manager.events, (event) => Effect.sync(() => events.push(event))))
      // Let the subscriber start before anything is published.
      yield* realSleep(5)
      if (entryPoint === "AuthHttpClient") {
        http = yield* AuthHttpClient.make(base).pipe(Effect.provideService(SessionManager.SessionManager, manager))
        if (!isClock) serverOffset = 2 * 60 * 60 * 1000
      }
    }

    // The fault, and every fault scripted, in the order the refresh requests meet them.
    const scripted: Array<MockMoonServer.Fault> = []
    const script = (...faults: ReadonlyArray<MockMoonServer.Fault>) =>
      Effect.andThen(Effect.sync(() => scripted.push(...faults)), server.script(...faults))
    const pump = makePump({ capture, server, scripted: () => scripted, sleeps })
    // An interrupted request the refresh must not finish stalls for longer than the test may run; one
    // it finishes for the others stalls 150 ms. Either way the clock never cuts it: only the interruption.
    const stallMillis = expected.held === "new" ? 150 : 60_000
    switch (scenario._tag) {
      case "Script":
        yield* script(...scenario.faults)
        break
      case "SaveFails":
        store.failNextSaves = 1
        break
      case "ClockJump":
        yield* TestClock.setTime(Date.now() + scenario.millis)
        break
      case "Interrupt": {
        switch (scenario.step) {
          case "before-send":
            sendGate = yield* makeGate
            break
          case "headers":
            yield* script({ _tag: "Delay", millis: stallMillis })
            break
          case "body":
            yield* script({ _tag: "SlowBody", millis: stallMillis })
            break
          case "backoff":
            yield* script({ _tag: "Status", status: 500, body: { message: "Internal server error" } })
            break
          case "save":
            store.saveGate = yield* makeGate
            break
        }
      }
    }

    // The entry point.
    const call: Effect.Effect<unknown, unknown> = entryPoint === "RefreshClient"
      ? refreshClient.refresh(issued.refreshToken)
      : entryPoint === "SessionManager"
      ? manager!.accessToken
      : Effect.flatMap(
        http!.get(`${server.url}/protected`),
        (response: HttpClientResponse.HttpClientResponse) =>
          Effect.map(response.json, (body) => ({ status: response.status, body }))
      )
    const fiber = yield* Effect.forkChild(call)

    if (scenario._tag === "Interrupt") {
      const requests = Effect.map(server.requests, (all) => all.filter((r) => r.path === "/auth/refresh"))
      switch (scenario.step) {
        case "before-send":
          yield* Deferred.await(sendGate!.reached)
          break
        case "headers":
          yield* waitUntil("the refresh request arrive", Effect.map(requests, (all) => all.length === 1))
          break
        case "body":
          yield* waitUntil("the response headers sent", Effect.map(requests, (all) => all[0]?.status === 200))
          break
        case "backoff":
          yield* waitUntil(
            "the first attempt fail",
            Effect.sync(() => capture.logs.some((line) => line.includes("refresh attempt failed")))
          )
          break
        case "save":
          yield* Deferred.await(store.saveGate!.reached)
          break
      }
      if (scenario.by === "caller") {
        yield* Fiber.interrupt(fiber)
        if (sendGate) yield* Deferred.succeed(sendGate.release, void 0)
        if (store.saveGate) yield* Deferred.succeed(store.saveGate.release, void 0)
      } else {
        const closing = yield* Effect.forkChild(Scope.close(managerScope, Exit.void))
        // A save that must finish gets to finish.
        yield* realSleep(20)
        if (sendGate) yield* Deferred.succeed(sendGate.release, void 0)
        if (store.saveGate) yield* Deferred.succeed(store.saveGate.release, void 0)
        yield* Fiber.join(closing)
      }
    }

    yield* driveUntil("the call end", pump, Effect.sync(() => fiber.pollUnsafe() !== undefined))
    const exit = yield* Fiber.await(fiber)
    const managerOpen = scenario._tag !== "Interrupt" || scenario.by === "caller"
    // A caller that gave up leaves the refresh to finish for the others: wait for it.
    if (scenario._tag === "Interrupt" && scenario.by === "caller" && manager !== undefined) {
      yield* driveUntil(
        "the refresh finish after the caller left",
        pump,
        Effect.map(manager.current, (current) => Option.isSome(current) && refreshToken(current.value) !== seededToken)
      )
    }

    // Everything the case produced, rendered, for the leak audit.
    capture.texts.push(...(Exit.isFailure(exit) ? renderCause(exit.cause) : renderAll(exit.value)))
    for (const event of events) capture.texts.push(...renderAll(event))
    capture.texts.push(JSON.stringify(yield* server.requests), JSON.stringify(yield* server.stats))

    // Never a defect: a value, a typed error, or an interruption.
    if (Exit.isFailure(exit)) {
      const reasons = exit.cause.reasons
      expect(reasons.filter(Cause.isDieReason).map((die) => Cause.pretty(Cause.die(die.defect)))).toStrictEqual([])
      for (const fail of reasons.filter(Cause.isFailReason)) {
        expect(knownTags.has((fail.error as { _tag?: string })._tag ?? "")).toBe(true)
      }
    }

    // The outcome.
    const stats = yield* server.stats
    switch (expected._tag) {
      case "Session": {
        expect(Exit.isSuccess(exit) ? "success" : Cause.pretty(exit.cause)).toBe("success")
        const value = Exit.isSuccess(exit) ? exit.value : undefined
        if (entryPoint === "RefreshClient") {
          const session = value as Session.Session
          expect(session).toBeInstanceOf(Session.Session)
          // Expiry is on the client's clock, whatever the client's clock says.
          const left = DateTime.toEpochMillis(session.expiresAt) - (yield* Clock.currentTimeMillis)
          expect(left).toBeGreaterThan(3_600_000 - 2_500)
          expect(left).toBeLessThanOrEqual(3_600_000 + 1_500)
        } else if (entryPoint === "SessionManager") {
          const current = yield* manager!.current
          expect(Option.map(current, (s) => Redacted.value(s.accessToken))).toStrictEqual(
            Option.some(Redacted.value(value as Redacted.Redacted<string>))
          )
        } else {
          expect(value).toMatchObject({ status: 200, body: { ok: true, user: { id: "mock-user-1" } } })
        }
        break
      }
      case "Fail": {
        const failure = Exit.isFailure(exit) ? Cause.findErrorOption(exit.cause) : Option.none()
        expect(Option.isSome(failure) ? "failure" : Exit.isSuccess(exit) ? "success" : Cause.pretty(exit.cause)).toBe(
          "failure"
        )
        expectError(Option.getOrThrow(failure), expected.error)
        break
      }
      case "Interrupted": {
        expect(Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause)).toBe(true)
        break
      }
    }
    expect(stats.refreshRequests).toBe(expected.posts)
    if (entryPoint === "AuthHttpClient") {
      // A 401 and its one replay, or the request that needed no refresh, or the 401 alone.
      const gets = isClock ? 1 : expected._tag === "Session" ? 2 : 1
      expect(stats.protectedRequests).toBe(gets)
    }

    // Where the refresh token is: the old one or the newest the server issued.
    const held: Option.Option<string> = entryPoint === "RefreshClient"
      ? Option.some(
        Exit.isSuccess(exit) ? refreshToken(exit.value as Session.Session) : seededToken
      )
      : Option.map(store.stored(), refreshToken)
    yield* checkHeld(expected.held, {
      entryPoint,
      held,
      seededToken,
      isLive: (token) => server.isLive(token),
      recover: (token) => refreshClient.refresh(Redacted.make(token)),
      manager: managerOpen ? manager : undefined,
      events,
      store
    })
  }))

/**
 * Where the refresh token is, in the words of `Held`. "lost" is a token that
 * is neither the old one nor the newest the server issued: never allowed.
 */
const classify = (
  held: Option.Option<string>,
  seededToken: string,
  isLive: (token: string) => Effect.Effect<boolean>
) =>
  Effect.gen(function*() {
    if (Option.isNone(held)) return "cleared"
    const live = yield* isLive(held.value)
    if (held.value === seededToken) return live ? "old" : "old-spent"
    return live ? "new" : "lost"
  })

const checkHeld = (
  expected: Held,
  world: {
    readonly entryPoint: Case["entryPoint"]
    readonly held: Option.Option<string>
    readonly seededToken: string
    readonly isLive: (token: string) => Effect.Effect<boolean>
    readonly recover: (token: string) => Effect.Effect<Session.Session, RefreshError.RefreshError>
    readonly manager: SessionManager.Service | undefined
    readonly events: ReadonlyArray<SessionManager.SessionEvent>
    readonly store: CaseStore
  }
): Effect.Effect<void> =>
  Effect.gen(function*() {
    const { entryPoint, events, held, manager, seededToken, store } = world
    const actual = yield* classify(held, seededToken, world.isLive)
    // The invariant, whatever the case: the old token or the newest one, nothing else.
    expect(actual).not.toBe("lost")
    const current = manager === undefined ? Option.none<string>() : Option.map(yield* manager.current, refreshToken)
    switch (expected) {
      case "new":
      case "old": {
        expect(actual).toBe(expected)
        // Memory and store agree.
        if (manager !== undefined) expect(current).toStrictEqual(held)
        break
      }
      case "old-spent": {
        expect(actual).toBe("old-spent")
        // Not lost: inside the reuse window the spent token gets the session back.
        const recovered = yield* Effect.result(world.recover(seededToken))
        expect(recovered._tag).toBe("Success")
        if (Result.isSuccess(recovered)) expect(yield* world.isLive(refreshToken(recovered.success))).toBe(true)
        break
      }
      case "cleared": {
        // For RefreshClient the caller holds the token it passed and was told to sign in again.
        if (entryPoint === "RefreshClient") break
        expect(actual).toBe("cleared")
        expect(current).toStrictEqual(Option.none())
        const signedOut = events.find((event) => event._tag === "SignedOut")
        expect(signedOut?._tag === "SignedOut" && signedOut.reason._tag).toBe("TokenRejected")
        if (manager !== undefined) {
          const next = yield* Effect.result(manager.accessToken)
          expect(Result.isFailure(next) ? next.failure._tag : "a token").toBe("NoSessionError")
        }
        break
      }
      case "new-after-save-retry": {
        expect(events.map((event) => event._tag)).toContain("SaveFailed")
        yield* waitUntil(
          "the background save",
          Effect.sync(() => Option.exists(store.stored(), (s) => refreshToken(s) !== seededToken))
        )
        const stored = Option.map(store.stored(), refreshToken)
        expect(yield* classify(stored, seededToken, world.isLive)).toBe("new")
        if (manager !== undefined) expect(Option.map(yield* manager.current, refreshToken)).toStrictEqual(stored)
        break
      }
    }
  })

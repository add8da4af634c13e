/**
 * A `RefreshClient` without HTTP, driven by a script, for fast unit tests of
 * code that refreshes sessions (a `SessionManager`, an `AuthHttpClient`, your
 * own program).
 *
 * - Each call of `refresh` takes the next {@link Step} of the script: succeed
 *   (a new session), fail with a given `RefreshError`, lose the answer after
 *   the token was rotated, or hang. When the script is used up, calls take the
 *   `whenEmpty` step (by default, they succeed).
 * - Delays are `Effect.sleep`s and expiries are read from the `Clock`, so a
 *   `TestClock` drives everything: a test of an hour of refreshes runs in
 *   milliseconds.
 * - Refresh tokens are one-time, as Moon's are: a token that is not the newest
 *   of its session is rejected with `TokenRejectedError` ("Invalid Refresh
 *   Token: Already Used", status 500, what the real client reports), and the
 *   whole session is revoked, as Supabase's reuse detection does. A code path
 *   that refreshes twice with the same token fails in tests the way it would
 *   fail in production. With a `reuseWindow`, a reuse of the token spent last
 *   is forgiven for that long; with `reuse: "gotrue"`, the reuses Supabase's
 *   auth server forgives are (see `MockMoonServer.ReuseMode`). (The
 *   `MockMoonServer` runs the same model of the token family.)
 * - Every call is counted and recorded with the token it was given (kept
 *   `Redacted`), when it started and ended, and how it ended.
 *
 * The mock is the `RefreshClient` service itself: it stands for the real
 * client *after* its retries, so a `fail` step is the final outcome of one
 * `refresh` call. To test retry policies, use `MockMoonServer` with the real
 * client instead.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Result from "effect/Result"
import * as Options_ from "../internal/options.js"
import * as RefreshClient from "../RefreshClient.js"
import * as RefreshError from "../RefreshError.js"
import * as Session from "../Session.js"
import * as TokenFamily from "./internal/tokenFamily.js"

// ---------------------------------------------------------------------------
// Steps
// ---------------------------------------------------------------------------

/**
 * What one call of `refresh` does. Steps are consumed one per call, in the
 * order the calls arrive; the `delay` of a step is slept before anything else
 * happens, so a call interrupted during its delay changes nothing.
 *
 * - `Succeed`: checks the token (see the module's description), then issues a
 *   new session with a new access token and a new refresh token, expiring
 *   `lifetime` after the `Clock`'s now (default: the mock's `lifetime` option).
 * - `Fail`: fails with `error`, without looking at the token (like a server
 *   that answers an error before reading the request). The token stays live.
 * - `Lost`: processes the call as `Succeed` would (so the token is spent and a
 *   new one issued, or a reuse is detected), then fails with `error` (default:
 *   a `TransportError` with reason `Network`): the server rotated, but the
 *   answer never arrived. The caller's refresh token is dead afterwards.
 * - `Hang`: never answers; the call waits until it is interrupted. (The real
 *   client gives up after its timeout; to simulate that, use `Fail` with a
 *   `TransportError` of reason `Timeout` and a `delay`.)
 *
 * Build steps with {@link succeed}, {@link fail}, {@link lost} and {@link hang},
 * or with the `Step` constructors.
 *
 * @since 0.1.0
 * @category models
 */
export type Step = Data.TaggedEnum<{
  Succeed: {
    readonly lifetime?: Duration.Input | undefined
    readonly delay?: Duration.Input | undefined
  }
  Fail: {
    readonly error: RefreshError.RefreshError
    readonly delay?: Duration.Input | undefined
  }
  Lost: {
    readonly error?: RefreshError.RefreshError | undefined
    readonly delay?: Duration.Input | undefined
  }
  Hang: {}
}>

/**
 * Constructors and matchers for {@link Step}: `Step.Succeed({})`,
 * `Step.Fail({ error })`, `Step.$is("Hang")`, `Step.$match`. Plain objects with
 * a `_tag` work too.
 *
 * @since 0.1.0
 * @category constructors
 */
export const Step = Data.taggedEnum<Step>()

/**
 * A step that issues a new session, expiring `lifetime` after the `Clock`'s
 * now, once `delay` has passed.
 *
 * @since 0.1.0
 * @category constructors
 */
export const succeed = (
  options: {
    readonly lifetime?: Duration.Input | undefined
    readonly delay?: Duration.Input | undefined
  } = {}
): Step => Step.Succeed({ lifetime: options.lifetime, delay: options.delay })

/**
 * A step that fails with `error` once `delay` has passed, leaving the token live.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fail = (
  error: RefreshError.RefreshError,
  options: { readonly delay?: Duration.Input | undefined } = {}
): Step => Step.Fail({ error, delay: options.delay })

/**
 * A step that rotates the token and then fails (by default with a
 * `TransportError`): the answer was lost on the way back.
 *
 * @since 0.1.0
 * @category constructors
 */
export const lost = (
  options: {
    readonly error?: RefreshError.RefreshError | undefined
    readonly delay?: Duration.Input | undefined
  } = {}
): Step => Step.Lost({ error: options.error, delay: options.delay })

/**
 * A step that never answers.
 *
 * @since 0.1.0
 * @category constructors
 */
export const hang: Step = Step.Hang()

// ---------------------------------------------------------------------------
// Models
// ---------------------------------------------------------------------------

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Steps for the first calls, in order. More can be queued later with `script`. */
  readonly script?: Iterable<Step> | undefined
  /** What a call does once the script is used up. Default {@link succeed}`()`. */
  readonly whenEmpty?: Step | undefined
  /** How long issued sessions live, unless a step or `issueSession` says otherwise. Default 1 hour. */
  readonly lifetime?: Duration.Input | undefined
  /** The user of sessions issued without one. Default `{ id: "mock-user-1", email: "user@example.com" }`. */
  readonly user?: Session.User | undefined
  /**
   * Which reuses are forgiven, as the `MockMoonServer`'s option of the same
   * name (`MockMoonServer.ReuseMode`): `"window"` (the default) or
   * `"gotrue"`, Supabase's auth server's rules.
   *
   * @since 0.3.0
   */
  readonly reuse?: "window" | "gotrue" | undefined
  /**
   * In `"window"` mode, how long after a rotation the spent token may be
   * presented again and get the same new refresh token back (with a new
   * access token); default 0: every reuse is rejected, which is what a test
   * that hunts for double refreshes wants. In `"gotrue"` mode, how long after
   * it was spent a token older than the active one's parent is still
   * forgiven; default 10 seconds. A number is milliseconds.
   *
   * @since 0.2.0
   */
  readonly reuseWindow?: Duration.Input | undefined
}

/**
 * How a call ended:
 *
 * - `pending`: still running (sleeping its delay, or hanging).
 * - `rotated`: a new session was returned.
 * - `reuse-tolerated`: a spent token was presented again and forgiven (in
 *   the default mode, the token spent last within the `reuseWindow`): the
 *   active refresh token was returned again, with a new access token (since
 *   0.2.0).
 * - `failed`: a `Fail` step's error was returned.
 * - `lost`: a `Lost` step: processed, then failed.
 * - `reuse-rejected`: the token was spent or its session revoked by a reuse.
 * - `unknown-token`: the token was never issued by this mock, or its session
 *   was revoked with `revokeSession`.
 * - `blank`: the token was blank; refused at once, as the real client does,
 *   without consuming a step.
 * - `interrupted`: the caller gave up before the answer.
 *
 * @since 0.1.0
 * @category models
 */
export type Outcome =
  | "pending"
  | "rotated"
  | "reuse-tolerated"
  | "failed"
  | "lost"
  | "reuse-rejected"
  | "unknown-token"
  | "blank"
  | "interrupted"

/**
 * One call of `refresh`, as the mock saw it.
 *
 * @since 0.1.0
 * @category models
 */
export interface Call {
  /** 1 for the first call. */
  readonly n: number
  /** The refresh token the call was given. */
  readonly refreshToken: Redacted.Redacted<string>
  /** The step it consumed; `undefined` for a blank token, which consumes none. */
  readonly step: Step["_tag"] | undefined
  /** The `Clock` time (epoch milliseconds) at which the call started. */
  readonly startedAt: number
  /** The `Clock` time at which it ended, or `undefined` while pending. */
  readonly endedAt: number | undefined
  readonly outcome: Outcome
}

/**
 * Counters since the mock was made.
 *
 * @since 0.1.0
 * @category models
 */
export interface Stats {
  /** Every call of `refresh`, whatever its outcome. */
  readonly calls: number
  /** Refresh tokens spent and replaced (by `Succeed` and `Lost` steps). */
  readonly rotations: number
  /** Spent tokens (or tokens of a session revoked by a reuse) presented again. */
  readonly reuseRejections: number
  /**
   * Reuses forgiven (see `reuse`), answered with the active refresh token.
   *
   * @since 0.2.0
   */
  readonly reusesTolerated: number
  /** Tokens this mock never issued, or of a session revoked with `revokeSession`. */
  readonly unknownTokens: number
  /** Calls that ended because they were interrupted. */
  readonly interruptions: number
}

/**
 * The mock: a `RefreshClient.Service` (so it can be provided as one) plus
 * the controls a test uses to seed sessions, script calls and inspect them.
 *
 * @since 0.1.0
 * @category models
 */
export interface Service extends RefreshClient.Service {
  /**
   * Starts a new session (a new chain of one-time refresh tokens) and
   * returns its first `Session`, expiring `lifetime` after the `Clock`'s now.
   * A `lifetime` of zero gives a session that is already expired.
   *
   * Its tokens are `mock-access-token-<n>` and `mock-refresh-token-<n>`, `n`
   * counting the sessions the mock issued, or, with a `name` (since 0.2.0),
   * `mock-access-token-<name>` and `mock-refresh-token-<name>`: a test can
   * then tell apart the session it seeded from those the refreshes issue
   * (numbered on, skipping any number taken as a name). A name already taken
   * is a defect.
   */
  readonly issueSession: (
    options?: {
      readonly lifetime?: Duration.Input | undefined
      readonly user?: Session.User | undefined
      readonly name?: string | undefined
    }
  ) => Effect.Effect<Session.Session>
  /** Queues steps for the next calls, after those already queued. */
  readonly script: (...steps: ReadonlyArray<Step>) => Effect.Effect<void>
  /** Steps queued and not yet consumed. */
  readonly pendingSteps: Effect.Effect<number>
  /** Every call so far, oldest first. */
  readonly calls: Effect.Effect<ReadonlyArray<Call>>
  /** The refresh tokens the calls were given, oldest first. */
  readonly tokens: Effect.Effect<ReadonlyArray<Redacted.Redacted<string>>>
  readonly stats: Effect.Effect<Stats>
  /**
   * Whether this refresh token would rotate if presented now: issued by this
   * mock, the newest of its session, and its session not revoked.
   */
  readonly isLive: (refreshToken: Redacted.Redacted<string> | string) => Effect.Effect<boolean>
  /**
   * Signs the session out "server-side": every token of the session this
   * refresh token belongs to stops working (`Refresh Token Not Found`).
   */
  readonly revokeSession: (refreshToken: Redacted.Redacted<string> | string) => Effect.Effect<void>
  /** Every access and refresh token issued so far, for tests that audit output for leaks. */
  readonly issuedTokens: Effect.Effect<ReadonlyArray<Redacted.Redacted<string>>>
}

/**
 * The mock's controls in context. {@link layer} provides this tag and
 * `RefreshClient.RefreshClient`, both backed by the same mock.
 *
 * @since 0.1.0
 * @category tags
 */
export class MockRefreshClient extends Context.Service<MockRefreshClient, Service>()(
  "moon-refresh/testing/MockRefreshClient"
) {}

// ---------------------------------------------------------------------------
// Implementation
// ---------------------------------------------------------------------------

interface MutableCall {
  n: number
  refreshToken: Redacted.Redacted<string>
  step: Step["_tag"] | undefined
  startedAt: number
  endedAt: number | undefined
  outcome: Outcome
}

interface State {
  readonly families: TokenFamily.TokenFamilies<Session.User>
  readonly queue: Array<Step>
  readonly calls: Array<MutableCall>
  readonly counters: { calls: number; interruptions: number }
  readonly whenEmpty: Step
  readonly lifetime: Duration.Duration
  readonly user: Session.User
}

const owner = "MockRefreshClient"

const defaultUser: Session.User = { id: "mock-user-1", email: "user@example.com" }

// What the real client reports for Moon's answers (a 500 carrying Supabase's error).
const refusals = {
  "reuse-rejected": () =>
    new RefreshError.TokenRejectedError({ status: 500, message: "Invalid Refresh Token: Already Used" }),
  "unknown-token": () =>
    new RefreshError.TokenRejectedError({ status: 500, message: "Invalid Refresh Token: Refresh Token Not Found" })
}
const blank = () => new RefreshError.TokenRejectedError({ message: "refresh token is blank; no request was sent" })
const connectionLost = () =>
  new RefreshError.TransportError({
    reason: "Network",
    message: "connection lost while reading the response: connection reset by peer (ECONNRESET)"
  })

const duration = (option: string, input: Duration.Input) => Options_.duration(owner, option, input, "nonNegative")

// Readable, distinct tokens: `mock-refresh-token-3` is the third session issued.
const tokensNamed = (name: string): TokenFamily.Tokens => ({
  accessToken: `mock-access-token-${name}`,
  refreshToken: `mock-refresh-token-${name}`
})

const makeFamilies = (
  reuse: TokenFamily.ReuseMode,
  reuseWindowMillis: number
): TokenFamily.TokenFamilies<Session.User> => {
  let sessions = 0
  const families: TokenFamily.TokenFamilies<Session.User> = TokenFamily.make({
    reuse,
    reuseWindowMillis,
    newTokens: () => {
      // Numbers a test took as names are skipped.
      do sessions++
      while (families.isKnown(tokensNamed(String(sessions)).refreshToken))
      return tokensNamed(String(sessions))
    }
  })
  return families
}

// `issuedAt`: set on refresh answers, as the real client sets it; a session
// issued as if signed in elsewhere (`issueSession`) has none.
const toSession = (grant: TokenFamily.Grant<Session.User>, issuedAt?: number): Session.Session =>
  Session.unsafeMake({
    accessToken: grant.accessToken,
    refreshToken: grant.refreshToken,
    expiresAt: grant.expiresAt,
    tokenType: "bearer",
    user: grant.family.data,
    issuedAt
  })

const issueSession = (
  state: State,
  options: Parameters<Service["issueSession"]>[0] = {}
): Effect.Effect<Session.Session> =>
  Effect.gen(function*() {
    const lifetime = options.lifetime === undefined
      ? state.lifetime
      : yield* Options_.orDie(duration("lifetime", options.lifetime))
    const tokens = options.name === undefined ? undefined : tokensNamed(options.name)
    if (tokens !== undefined && state.families.isKnown(tokens.refreshToken)) {
      return yield* Effect.die(
        new Cause.IllegalArgumentError(`${owner}: issueSession was given the name "${options.name}", already taken`)
      )
    }
    const now = yield* Clock.currentTimeMillis
    return toSession(state.families.issue(options.user ?? state.user, now, now + Duration.toMillis(lifetime), tokens))
  })

// The refresh grant, run by the shared model of the token family.
const grant = (
  state: State,
  call: MutableCall,
  token: string,
  lifetime: Duration.Duration,
  now: number
): Result.Result<Session.Session, RefreshError.TokenRejectedError> => {
  const rotation = state.families.rotate(token, now, now + Duration.toMillis(lifetime))
  call.outcome = rotation.outcome
  return "grant" in rotation
    ? Result.succeed(toSession(rotation.grant, now))
    : Result.fail(refusals[rotation.outcome]())
}

// What a step does once its delay has passed.
const complete = (
  state: State,
  call: MutableCall,
  token: string,
  step: Exclude<Step, { readonly _tag: "Hang" }>,
  lifetime: Duration.Duration,
  now: number
): Effect.Effect<Session.Session, RefreshError.RefreshError> => {
  call.endedAt = now
  switch (step._tag) {
    case "Fail": {
      call.outcome = "failed"
      return Effect.fail(step.error)
    }
    case "Lost": {
      // The server's side happens (the token is spent), then the answer is lost.
      grant(state, call, token, lifetime, now)
      call.outcome = "lost"
      return Effect.fail(step.error ?? connectionLost())
    }
    case "Succeed":
      return Effect.fromResult(grant(state, call, token, lifetime, now))
  }
}

const answer = (
  state: State,
  call: MutableCall,
  token: string,
  step: Step
): Effect.Effect<Session.Session, RefreshError.RefreshError> => {
  if (step._tag === "Hang") return Effect.never
  const checked = Result.all({
    delay: duration("delay", step.delay ?? Duration.zero),
    lifetime: step._tag === "Succeed" && step.lifetime !== undefined
      ? duration("lifetime", step.lifetime)
      : Result.succeed(state.lifetime)
  })
  return Effect.flatMap(Options_.orDie(checked), ({ delay, lifetime }) =>
    Effect.andThen(
      Effect.sleep(delay),
      Effect.flatMap(Clock.currentTimeMillis, (now) => complete(state, call, token, step, lifetime, now))
    ))
}

// No span here, as before: one would add to what tests that record the
// spans of the code under test see. (In Effect 3 a span also handed a failure
// on as a copy of its error; Effect 4's `withSpan` keeps the very error a test
// scripted.)
const refresh = (state: State) => (refreshToken: Redacted.Redacted<string>) =>
  Effect.flatMap(Clock.currentTimeMillis, (startedAt) => {
    state.counters.calls++
    const token = Redacted.value(refreshToken)
    const call: MutableCall = {
      n: state.calls.length + 1,
      refreshToken,
      step: undefined,
      startedAt,
      endedAt: undefined,
      outcome: "pending"
    }
    state.calls.push(call)
    // As the real client: a blank token is refused before any request.
    if (token.trim() === "") {
      call.outcome = "blank"
      call.endedAt = startedAt
      return Effect.fail(blank())
    }
    // Taken on arrival, so steps apply in the order calls arrive.
    const step = state.queue.shift() ?? state.whenEmpty
    call.step = step._tag
    return answer(state, call, token, step).pipe(
      Effect.onInterrupt(() =>
        Effect.flatMap(Clock.currentTimeMillis, (now) =>
          Effect.sync(() => {
            state.counters.interruptions++
            call.outcome = "interrupted"
            call.endedAt = now
          }))
      )
    )
  })

/**
 * Builds a mock. Dies (a defect naming the option) when `lifetime` or
 * `reuseWindow` is not a finite, non-negative duration or `reuse` is not
 * `"window"` or `"gotrue"`; a step with such a
 * `delay` or `lifetime` dies when it is consumed.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<Service> =>
  Effect.gen(function*() {
    const checked = yield* Options_.orDie(Result.all({
      lifetime: duration("lifetime", options.lifetime ?? Duration.hours(1)),
      reuse: TokenFamily.checkReuse(owner, options.reuse, options.reuseWindow)
    }))
    const state: State = {
      families: makeFamilies(checked.reuse.reuse, checked.reuse.reuseWindowMillis),
      queue: [...(options.script ?? [])],
      calls: [],
      counters: { calls: 0, interruptions: 0 },
      whenEmpty: options.whenEmpty ?? succeed(),
      lifetime: checked.lifetime,
      user: options.user ?? defaultUser
    }
    const mock: Service = {
      refresh: refresh(state),
      issueSession: (issueOptions) => issueSession(state, issueOptions),
      script: (...steps) =>
        Effect.sync(() => {
          state.queue.push(...steps)
        }),
      pendingSteps: Effect.sync(() => state.queue.length),
      calls: Effect.sync(() => state.calls.map((call) => ({ ...call }))),
      tokens: Effect.sync(() => state.calls.map((call) => call.refreshToken)),
      stats: Effect.sync(() => ({
        calls: state.counters.calls,
        ...state.families.stats(),
        interruptions: state.counters.interruptions
      })),
      isLive: (token) => Effect.sync(() => state.families.isLive(token)),
      revokeSession: (token) => Effect.sync(() => state.families.revoke(token)),
      issuedTokens: Effect.sync(() => state.families.issued())
    }
    return mock
  })

/**
 * A mock in a layer: provides both {@link MockRefreshClient} (the controls)
 * and `RefreshClient.RefreshClient` (what the code under test uses), backed by
 * the same mock.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options?: Options): Layer.Layer<MockRefreshClient | RefreshClient.RefreshClient> =>
  Layer.effectContext(
    Effect.map(
      make(options),
      (mock) => Context.make(MockRefreshClient, mock).pipe(Context.add(RefreshClient.RefreshClient, mock))
    )
  )

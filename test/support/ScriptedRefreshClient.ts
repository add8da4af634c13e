/**
 * A scriptable `RefreshClient` for unit tests of the `SessionManager`: no HTTP,
 * no real time.
 *
 * Each call is answered by the next reply of a script (the last reply repeats
 * once the script is used up). A reply may take a while (`Effect.sleep`, so the
 * `TestClock` controls it), then either issue a new session or fail with a
 * given `RefreshError`. Every call is recorded: the refresh token it was given,
 * the `TestClock` time it started and ended, and how it ended (including an
 * interruption, so tests can see an aborted refresh).
 */
import { Clock, Duration, Effect, Layer, Redacted } from "effect"
import { RefreshClient, RefreshError, Session } from "moon-refresh"

/** What the double does with one call. */
export type Reply =
  | {
    readonly _tag: "Succeed"
    /** The issued session expires this long after the `TestClock`'s now when the answer is sent. */
    readonly expiresIn: Duration.Duration
    readonly delay: Duration.Duration
  }
  | { readonly _tag: "Fail"; readonly error: RefreshError.RefreshError; readonly delay: Duration.Duration }
  | { readonly _tag: "Hang" }

/** Issues a new session (`access-<n>` / `refresh-<n>` for the `n`th call) after `delay`. */
export const succeed = (
  options: { readonly expiresIn?: Duration.DurationInput; readonly delay?: Duration.DurationInput } = {}
): Reply => ({
  _tag: "Succeed",
  expiresIn: Duration.decode(options.expiresIn ?? Duration.hours(1)),
  delay: Duration.decode(options.delay ?? Duration.zero)
})

/** Fails with `error` after `delay`. */
export const fail = (
  error: RefreshError.RefreshError,
  options: { readonly delay?: Duration.DurationInput } = {}
): Reply => ({ _tag: "Fail", error, delay: Duration.decode(options.delay ?? Duration.zero) })

/** The server is down: every call fails with a 503 after `delay` (100 ms unless told). */
export const serverDown = (delay: Duration.DurationInput = Duration.millis(100)): Reply =>
  fail(new RefreshError.ServerError({ status: 503, message: "service unavailable" }), { delay })

/** Never answers: the call stays open until it is interrupted. */
export const hang: Reply = { _tag: "Hang" }

/** One call as the double saw it. */
export interface Call {
  /** 1 for the first call. */
  readonly n: number
  /** The refresh token it was given, revealed. */
  readonly refreshToken: string
  /** The `TestClock` time, in milliseconds, at which the call started. */
  readonly startedAt: number
  endedAt: number | undefined
  outcome: "pending" | "succeeded" | "failed" | "interrupted"
}

export interface ScriptedRefreshClient {
  readonly service: RefreshClient.Service
  readonly layer: Layer.Layer<RefreshClient.RefreshClient>
  /** Every call so far, in order. */
  readonly calls: ReadonlyArray<Call>
  readonly callCount: () => number
  /** The refresh tokens the calls were given, revealed, in order. */
  readonly tokens: () => ReadonlyArray<string>
  /** The `TestClock` time at which each call started, in order. */
  readonly startedAt: () => ReadonlyArray<number>
  /** How many calls were interrupted. */
  readonly interruptions: () => number
  /** Replaces the script; the next call gets the first of these replies. */
  readonly script: (...replies: ReadonlyArray<Reply>) => void
}

/** Builds a double that answers calls from `replies`, the last one repeating. */
export const make = (...replies: ReadonlyArray<Reply>): ScriptedRefreshClient => {
  let script: ReadonlyArray<Reply> = replies.length === 0 ? [succeed()] : replies
  let position = 0
  const calls: Array<Call> = []

  const refresh = (refreshToken: Redacted.Redacted<string>) =>
    Effect.flatMap(Clock.currentTimeMillis, (startedAt) => {
      const call: Call = {
        n: calls.length + 1,
        refreshToken: Redacted.value(refreshToken),
        startedAt,
        endedAt: undefined,
        outcome: "pending"
      }
      calls.push(call)
      const reply = script[Math.min(position, script.length - 1)]!
      position++
      const answer: Effect.Effect<Session.Session, RefreshError.RefreshError> = reply._tag === "Hang"
        ? Effect.never
        : Effect.zipRight(
          Effect.sleep(reply.delay),
          Effect.flatMap(Clock.currentTimeMillis, (now) => {
            call.endedAt = now
            if (reply._tag === "Fail") {
              call.outcome = "failed"
              return Effect.fail(reply.error)
            }
            call.outcome = "succeeded"
            return Effect.succeed(makeSession(call.n, now + Duration.toMillis(reply.expiresIn)))
          })
        )
      return Effect.onInterrupt(answer, () =>
        Effect.sync(() => {
          call.outcome = "interrupted"
        }))
    })

  const service = RefreshClient.RefreshClient.of({ refresh })
  return {
    service,
    layer: Layer.succeed(RefreshClient.RefreshClient, service),
    calls,
    callCount: () => calls.length,
    tokens: () => calls.map((call) => call.refreshToken),
    startedAt: () => calls.map((call) => call.startedAt),
    interruptions: () => calls.filter((call) => call.outcome === "interrupted").length,
    script: (...next) => {
      script = next.length === 0 ? [succeed()] : next
      position = 0
    }
  }
}

/**
 * A session named `name`: its access token is `access-<name>`, its refresh
 * token `refresh-<name>`, and it expires at `expiresAtMillis` (TestClock time).
 */
export const makeSession = (name: string | number, expiresAtMillis: number): Session.Session =>
  Session.unsafeMake({
    accessToken: `access-${name}`,
    refreshToken: `refresh-${name}`,
    expiresAt: expiresAtMillis,
    user: { id: "user-1", email: "ada@example.com", plan: "pro" }
  })

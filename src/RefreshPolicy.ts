/**
 * When to try a failed refresh again: a `Schedule` fed with each
 * `RefreshError`. The client only ever retries errors that
 * `RefreshError.isRetryable` accepts, whatever schedule it is given, so a
 * policy decides *when*, never *whether* a rejected token is retried.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as RefreshError from "./RefreshError.js"

/**
 * A retry schedule for refreshes. Its input is the error of the attempt that
 * just failed, so a schedule can look at a status or a `Retry-After`.
 *
 * @since 0.1.0
 * @category models
 */
export type RefreshPolicy = Schedule.Schedule<unknown, RefreshError.RefreshError>

/**
 * @since 0.1.0
 * @category models
 */
export interface ExponentialOptions {
  /** The first delay. */
  readonly base: Duration.Input
  /** Each delay is the previous one times this. Default 2. */
  readonly factor?: number | undefined
  /** The most retries (attempts after the first). */
  readonly maxRetries: number
  /** No single delay is longer than this (before a `Retry-After` stretches it). */
  readonly maxDelay: Duration.Input
  /**
   * No retry starts later than this after the first failure. A `Retry-After`
   * that would push the next attempt past it ends the retries at once, and the
   * error surfaces.
   */
  readonly maxElapsed: Duration.Input
  /** Multiply each delay by a random factor in [0.8, 1.2]. Default true. */
  readonly jitter?: boolean | undefined
}

/**
 * Bounded exponential backoff: `base * factor^n`, optionally jittered, capped at
 * `maxDelay`, at most `maxRetries` retries, none starting after `maxElapsed`.
 * A `Retry-After` on the error stretches a delay to at least the server's value.
 *
 * @since 0.1.0
 * @category constructors
 */
export const exponential = (options: ExponentialOptions): RefreshPolicy => {
  const maxDelay = Duration.fromInputUnsafe(options.maxDelay)
  const backoff = Schedule.exponential(options.base, options.factor ?? 2).pipe(
    (self) => (options.jitter === false ? self : Schedule.jittered(self)),
    Schedule.modifyDelay(({ duration }) => Effect.succeed(Duration.min(duration, maxDelay))),
    // At most `maxRetries` recurrences, as `Schedule.recurs(maxRetries)` allows.
    Schedule.upTo({ times: options.maxRetries })
  )
  return withRetryAfter(backoff, options.maxElapsed)
}

/**
 * Wraps a schedule so that (1) a `Retry-After` on the error delays the next
 * attempt to at least the server's value and (2) no attempt starts more than
 * `maxElapsed` after the first failure.
 *
 * Written by hand: `Schedule.upTo({ duration })` checks the time at which the
 * decision is made, not the time at which the next attempt would start, so a
 * long `Retry-After` would slip past it.
 *
 * @since 0.1.0
 * @category combinators
 */
export const withRetryAfter = <Out>(
  self: Schedule.Schedule<Out, RefreshError.RefreshError>,
  maxElapsed: Duration.Input
): RefreshPolicy => {
  const budget = Duration.toMillis(maxElapsed)
  // One step function per run of the schedule (per refresh), holding when that
  // run's first failure was seen.
  return Schedule.fromStep(Effect.map(Schedule.toStep(self), (step) => {
    let start: number | undefined
    return (now: number, error: RefreshError.RefreshError) => {
      const first = start ??= now
      // `self` ending ends this schedule too: its `Done` passes through.
      return Effect.flatMap(step(now, error), ([out, delay]) => {
        const planned = now + Duration.toMillis(delay)
        const startAt = Option.match(RefreshError.retryAfter(error), {
          onNone: () => planned,
          onSome: (retryAfter) => Math.max(planned, now + Duration.toMillis(retryAfter))
        })
        if (startAt - first > budget) return Cause.done(out)
        return Effect.succeed([out, Duration.millis(startAt - now)] as [Out, Duration.Duration])
      })
    }
  }))
}

/**
 * The library's default: 200 ms doubling, jittered (x 0.8 to 1.2), at most 5
 * retries, no delay over 10 s, none started more than 30 s after the first
 * failure; `Retry-After` honoured within that budget. What a `RefreshClient`
 * without a `policy` uses.
 *
 * Unjittered, the retries start 200, 400, 800, 1600 and 3200 ms after each
 * failure: six attempts over about 6.2 s plus the attempts' own time.
 *
 * @since 0.1.0
 * @category policies
 */
export const defaultPolicy: RefreshPolicy = exponential({
  base: Duration.millis(200),
  factor: 2,
  maxRetries: 5,
  maxDelay: Duration.seconds(10),
  maxElapsed: Duration.seconds(30),
  jitter: true
})

export {
  /**
   * The module's default export, the same value as {@link defaultPolicy}:
   * `RefreshPolicy.default` through the namespace.
   *
   * @deprecated Use {@link defaultPolicy} (as `Logger.defaultLogger` is named):
   * a default export is read differently by bundlers and CommonJS interop, and
   * `import RefreshPolicy from "moon-refresh/RefreshPolicy"` would give this
   * schedule, not the module. Kept for 0.3 code; goes in 2.0.
   *
   * @since 0.1.0
   * @category policies
   */
  defaultPolicy as default
}

/**
 * Never retry: the first failure surfaces. (`Schedule.stop` of Effect 3: a
 * schedule that allows no recurrence.)
 *
 * @since 0.1.0
 * @category policies
 */
export const none: RefreshPolicy = Schedule.recurs(0)

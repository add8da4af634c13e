/**
 * The timeout and the retry around each refresh attempt: the same outcome as
 * `Effect.timeoutOrElse` and `Effect.retry`, without most of their cost on a
 * refresh that succeeds.
 *
 * Not public API: the package's exports keep `internal/` private.
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import type * as Schedule from "effect/Schedule"

// The `Clock` every fiber runs with unless one is provided (`Date.now` and
// `setTimeout`): a `Context.Reference`'s default value, made once.
const liveClock = Context.get(Context.empty() as Context.Context<unknown>, Clock.Clock)

// Longer than this, `setTimeout` fires at once.
const maxTimerMillis = 2 ** 31 - 1

/**
 * `Effect.timeoutOrElse` failing with `onTimeout()`, with the same outcome:
 * `self` runs in a child fiber, which is interrupted (and awaited) once
 * `duration` has passed, and the result is `onTimeout()`. `context`, when
 * given, maps the caller's context to the one `self` runs with (services and
 * references added or replaced); the caller's own is left as it was.
 *
 * `Effect.timeoutOrElse` races two forked fibers, `self` and a sleeping one
 * (in Effect 3, `Effect.timeoutFail` cost about a sixth of a refresh over
 * loopback, over 100 µs of CPU). On the live clock this forks `self` alone
 * and waits for it beside a plain timer. Under any other `Clock` (a
 * `TestClock`, a clock of the user's) the timer must be that clock's sleep:
 * that is `Effect.timeoutOrElse` itself.
 *
 * The child's failure is the caller's to report, not the child's: Effect 4
 * never logs the failure of a forked fiber on its own.
 */
export const timeoutFail = <E1>(options: {
  readonly duration: Duration.Duration
  readonly onTimeout: () => E1
  readonly context?: ((context: Context.Context<never>) => Context.Context<never>) | undefined
}) =>
<A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E | E1, R> =>
  Effect.clockWith((clock) => {
    const millis = Duration.toMillis(options.duration)
    const update = options.context
    // The update only adds to or replaces entries of the caller's context,
    // which provides `R`: what it returns still does.
    const run = update === undefined
      ? self
      : Effect.updateContext(self, (context: Context.Context<never>) => update(context) as Context.Context<R>)
    if (clock !== liveClock || !(millis <= maxTimerMillis)) {
      return Effect.timeoutOrElse(run, {
        duration: options.duration,
        orElse: () => Effect.fail(options.onTimeout())
      })
    }
    return Effect.uninterruptibleMask((restore) =>
      Effect.flatMap(
        // Interruptible and started at once (it runs until it first suspends),
        // as each contender of `Effect.timeoutOrElse` is. A fiber the attempt
        // wakes on its way (completing a `Deferred` resumes its waiters
        // inline) and that interrupts us then finds the attempt suspended,
        // so its finalizers run.
        Effect.forkChild(run, { startImmediately: true }),
        (child) =>
          Effect.matchCauseEffect(
            restore(Effect.callback<Effect.Effect<A, E | E1>>((resume) => {
              let stopObserving = (): void => {}
              const timer = setTimeout(() => {
                stopObserving()
                resume(Effect.succeed(Effect.andThen(Fiber.interrupt(child), Effect.fail(options.onTimeout()))))
              }, millis)
              // Called at once if the child has already ended.
              stopObserving = child.addObserver((exit: Exit.Exit<A, E>) => {
                clearTimeout(timer)
                resume(Effect.succeed(exit))
              })
              // The caller was interrupted: so is the attempt, and we wait for it to end.
              return Effect.suspend(() => {
                clearTimeout(timer)
                stopObserving()
                return Fiber.interrupt(child)
              })
            })),
            {
              // An interruption that came before the wait began (the fork ran
              // uninterruptibly) ends it before its canceler exists: the attempt
              // is interrupted here instead, never left running. Interrupting a
              // child that has ended does nothing.
              onFailure: (cause) => Effect.andThen(Fiber.interrupt(child), Effect.failCause(cause)),
              onSuccess: (next) => next
            }
          )
      )
    )
  })

/**
 * `Effect.retry(self, options)`, started only once `self` has failed.
 * `Effect.retry` builds its schedule's step function before the first
 * attempt, and provides the schedule's metadata around each attempt; here
 * the first failure is handed to `Effect.retry` as its own first failure, so
 * the schedule sees the same inputs at the same times, and `while` decides
 * as it would have.
 */
export const retry = <E, B, SE, R1>(options: {
  readonly schedule: Schedule.Schedule<B, E, SE, R1>
  readonly while: (error: E) => boolean
}) =>
<A, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E | SE, R | R1> =>
  Effect.catch(self, (first) => {
    let replayed = false
    return Effect.retry(
      Effect.suspend((): Effect.Effect<A, E, R> => {
        if (replayed) return self
        replayed = true
        return Effect.fail(first)
      }),
      options
    )
  })

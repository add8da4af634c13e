/**
 * The timeout and the retry around each refresh attempt: the same outcome as
 * `Effect.timeoutFail` and `Effect.retry`, without most of their cost on a
 * refresh that succeeds (together, over a fifth of a refresh over loopback).
 *
 * Not public API: the package's exports keep `internal/` private.
 */
import { Clock, Context, DefaultServices, Duration, Effect, type Exit, Fiber, type Schedule } from "effect"

const liveClock = Context.get(DefaultServices.liveServices, Clock.Clock)

// Longer than this, `setTimeout` fires at once.
const maxTimerMillis = 2 ** 31 - 1

/**
 * `Effect.timeoutFail` with the same options and the same outcome: `self`
 * runs in a child fiber, which is interrupted (and awaited) once `duration`
 * has passed, and the result is `onTimeout()`. One difference: the child's
 * fiber-local changes (`FiberRef`s) are not carried back to the caller. A
 * refresh attempt makes none.
 *
 * `Effect.timeoutFail` races two forked fibers, `self` and a sleeping one,
 * and costs about a sixth of a refresh over loopback (over 100 µs of CPU).
 * On the live clock this forks `self` alone and waits for it beside a plain
 * timer, at a third of that. Under any other `Clock` (a `TestClock`, a clock
 * of the user's) the timer must be that clock's sleep: that is
 * `Effect.timeoutFail` itself.
 */
export const timeoutFail = <E1>(options: {
  readonly duration: Duration.Duration
  readonly onTimeout: () => E1
}) =>
<A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E | E1, R> =>
  Effect.clockWith((clock) => {
    const millis = Duration.toMillis(options.duration)
    if (clock !== liveClock || !(millis <= maxTimerMillis)) return Effect.timeoutFail(self, options)
    return Effect.uninterruptibleMask((restore) => {
      let exit: Exit.Exit<A, E> | undefined
      let wake: ((exit: Exit.Exit<A, E>) => void) | undefined
      const run = Effect.flatMap(Effect.exit(restore(self)), (done) => {
        exit = done
        wake?.(done)
        return done
      })
      return Effect.flatMap(Effect.fork(run), (child) =>
        Effect.flatMap(
          restore(Effect.async<Exit.Exit<A, E> | undefined>((resume) => {
            if (exit !== undefined) return resume(Effect.succeed(exit))
            const timer = setTimeout(() => {
              wake = undefined
              resume(Effect.succeed(undefined))
            }, millis)
            wake = (done) => {
              wake = undefined
              clearTimeout(timer)
              resume(Effect.succeed(done))
            }
            // The caller was interrupted: so is the attempt, and we wait for it to end.
            return Effect.suspend(() => {
              wake = undefined
              clearTimeout(timer)
              return Fiber.interrupt(child)
            })
          })),
          (done): Effect.Effect<A, E | E1> =>
            done === undefined ? Effect.zipRight(Fiber.interrupt(child), Effect.fail(options.onTimeout())) : done
        ))
    })
  })

/**
 * `Effect.retry(self, options)`, started only once `self` has failed.
 * `Effect.retry` builds its schedule's driver (a few `Ref`s, a service)
 * before the first attempt, which costs about 30 µs on an attempt that
 * succeeds. Here the first failure is handed to `Effect.retry` as its own
 * first failure, so the schedule sees the same inputs at the same times, and
 * `while` decides as it would have.
 */
export const retry = <E, B, R1>(options: {
  readonly schedule: Schedule.Schedule<B, E, R1>
  readonly while: (error: E) => boolean
}) =>
<A, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R | R1> =>
  Effect.catchAll(self, (first) => {
    let replayed = false
    return Effect.retry(
      Effect.suspend(() => {
        if (replayed) return self
        replayed = true
        return Effect.fail(first)
      }),
      options
    )
  })

/**
 * The timeout and the retry around each refresh attempt: the same outcome as
 * `Effect.timeoutFail` and `Effect.retry`, without most of their cost on a
 * refresh that succeeds (together, over a fifth of a refresh over loopback).
 *
 * Not public API: the package's exports keep `internal/` private.
 */
import {
  Clock,
  Context,
  DefaultServices,
  Duration,
  Effect,
  type Exit,
  Fiber,
  FiberRef,
  Option,
  type Schedule
} from "effect"
import { type Entry, locallyAll, setForRest } from "./locally.js"

const liveClock = Context.get(DefaultServices.liveServices, Clock.Clock)

// Longer than this, `setTimeout` fires at once.
const maxTimerMillis = 2 ** 31 - 1

/**
 * `Effect.timeoutFail` with the same options and the same outcome: `self`
 * runs in a child fiber, which is interrupted (and awaited) once `duration`
 * has passed, and the result is `onTimeout()`. `refs`, when given, are the
 * `FiberRef` values `self` runs with; the caller's own are left as they were.
 * On the live clock they are set in the child itself, which ends with
 * `self`, so nothing has to put them back; one difference there from
 * `Effect.timeoutFail`: the child's other fiber-local changes are not carried
 * back to the caller (a refresh attempt makes none).
 *
 * `Effect.timeoutFail` races two forked fibers, `self` and a sleeping one,
 * and costs about a sixth of a refresh over loopback (over 100 µs of CPU).
 * On the live clock this forks `self` alone and waits for it beside a plain
 * timer. Under any other `Clock` (a `TestClock`, a clock of the user's) the
 * timer must be that clock's sleep: that is `Effect.timeoutFail` itself.
 *
 * The child's failure is the caller's to report, not the child's: the child
 * never logs it as an unhandled error.
 */
export const timeoutFail = <E1>(options: {
  readonly duration: Duration.Duration
  readonly onTimeout: () => E1
  readonly refs?: ((fiber: Fiber.RuntimeFiber<unknown, unknown>) => readonly [Entry, ...Array<Entry>]) | undefined
}) =>
<A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E | E1, R> =>
  Effect.clockWith((clock) => {
    const millis = Duration.toMillis(options.duration)
    const refs = options.refs
    if (clock !== liveClock || !(millis <= maxTimerMillis)) {
      return Effect.timeoutFail(refs === undefined ? self : locallyAll(self, refs), options)
    }
    return Effect.uninterruptibleMask((restore) =>
      Effect.flatMap(
        Effect.fork(setForRest(restore(self), (fiber) => [
          [FiberRef.unhandledErrorLogLevel, Option.none()],
          ...(refs === undefined ? [] : refs(fiber))
        ])),
        (child) =>
          Effect.matchCauseEffect(
            restore(Effect.async<Effect.Effect<A, E | E1>>((resume) => {
              const onExit = (exit: Exit.Exit<A, E>) => {
                clearTimeout(timer)
                resume(Effect.succeed(exit))
              }
              const timer = setTimeout(() => {
                child.removeObserver(onExit)
                resume(Effect.succeed(Effect.zipRight(Fiber.interrupt(child), Effect.fail(options.onTimeout()))))
              }, millis)
              // Called at once if the child has already ended.
              child.addObserver(onExit)
              // The caller was interrupted: so is the attempt, and we wait for it to end.
              return Effect.suspend(() => {
                clearTimeout(timer)
                child.removeObserver(onExit)
                return Fiber.interrupt(child)
              })
            })),
            {
              // An interruption that came before the wait began (the fork ran
              // uninterruptibly) ends it before its canceler exists: the attempt
              // is interrupted here instead, never left running. Interrupting a
              // child that has ended does nothing.
              onFailure: (cause) => Effect.zipRight(Fiber.interrupt(child), Effect.failCause(cause)),
              onSuccess: (next) => next
            }
          )
      )
    )
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

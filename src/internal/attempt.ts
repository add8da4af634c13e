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

// ---------------------------------------------------------------------------
// Deadlines: one timer for every attempt under way
// ---------------------------------------------------------------------------

// A `setTimeout` and a `clearTimeout` per attempt cost a refresh over
// loopback about 5% of its time (`npm run bench -- roundtrip`, table 1c, rows
// c and c2), far more than the same pair costs with no request under way.
// Instead, the attempts under way share one timer, armed for the earliest
// deadline. An attempt that ends takes its deadline out and leaves the timer
// armed; when it fires for nothing, it is armed again for the earliest
// deadline left, if any. Sequential refreshes 10 s apart or closer never set
// a timer of their own.

interface Deadline {
  /** `performance.now()` milliseconds: monotonic, so a clock that steps moves no deadline. */
  readonly at: number
  readonly expire: () => void
}

const deadlines = new Set<Deadline>()
let timer: ReturnType<typeof setTimeout> | undefined
let armedAt = Number.POSITIVE_INFINITY

const monotonic = (): number => performance.now()

// In Node a timer holds the process open: the shared one does only while an
// attempt is under way, as each attempt's own timer did. A timer that cannot
// be let go (a number: browsers, and Deno, whose number timers do hold the
// process) is cleared once no attempt is under way, as each attempt's own was.
// (A timer left armed keeps the async context of the attempt that armed it,
// in Node's `AsyncLocalStorage`, until it fires: at most one timeout.)
const hold = (held: boolean): void => {
  const handle = timer as { readonly ref?: () => void; readonly unref?: () => void } | number | undefined
  if (typeof handle === "object" && handle !== null && typeof handle.unref === "function") {
    if (held) handle.ref?.()
    else handle.unref()
  } else if (!held && handle !== undefined) {
    clearTimeout(handle as ReturnType<typeof setTimeout>)
    timer = undefined
    armedAt = Number.POSITIVE_INFINITY
  }
}

const arm = (at: number, now: number): void => {
  if (timer !== undefined) clearTimeout(timer)
  armedAt = at
  // `setTimeout` never fires early by more than its rounding: an early call finds nothing due and re-arms.
  timer = setTimeout(onTimer, Math.max(0, Math.ceil(at - now)))
}

function onTimer(): void {
  timer = undefined
  armedAt = Number.POSITIVE_INFINITY
  const now = monotonic()
  const due: Array<Deadline> = []
  let next = Number.POSITIVE_INFINITY
  for (const deadline of deadlines) {
    if (deadline.at <= now) due.push(deadline)
    else if (deadline.at < next) next = deadline.at
  }
  for (const deadline of due) deadlines.delete(deadline)
  // In the order they were due, whatever the order they began in (a timer late by more than their gap).
  due.sort((a, b) => a.at - b.at)
  // Armed before the expiries run: each resumes a fiber inline, which may start
  // an attempt (and add a deadline) before this returns.
  if (next !== Number.POSITIVE_INFINITY) arm(next, now)
  // Every due attempt times out even if one expiry throws (a fiber resumed inline
  // runs its observers, which may be anyone's): the first error is thrown after,
  // from this callback, as it would have been from that attempt's own timer.
  let failed: { readonly error: unknown } | undefined
  for (const deadline of due) {
    try {
      deadline.expire()
    } catch (error) {
      failed ??= { error }
    }
  }
  if (failed !== undefined) throw failed.error
}

const addDeadline = (deadline: Deadline): void => {
  if (deadlines.size === 0) hold(true)
  deadlines.add(deadline)
  if (deadline.at < armedAt) arm(deadline.at, monotonic())
}

const removeDeadline = (deadline: Deadline): void => {
  if (deadlines.delete(deadline) && deadlines.size === 0) hold(false)
}

/**
 * For tests: the attempts under way, and whether the shared timer holds a
 * Node process open.
 */
export const deadlinesPending = (): { readonly count: number; readonly held: boolean } => ({
  count: deadlines.size,
  held: typeof timer === "object" && timer !== null && typeof (timer as { hasRef?: unknown }).hasRef === "function"
    ? (timer as { hasRef: () => boolean }).hasRef()
    : false
})

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
 * and waits for it beside a deadline on the timer all attempts share
 * (see "Deadlines" above). Under any other `Clock` (a
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
              const deadline: Deadline = {
                at: monotonic() + millis,
                expire: () => {
                  stopObserving()
                  resume(Effect.succeed(Effect.andThen(Fiber.interrupt(child), Effect.fail(options.onTimeout()))))
                }
              }
              addDeadline(deadline)
              // Called at once if the child has already ended.
              stopObserving = child.addObserver((exit: Exit.Exit<A, E>) => {
                removeDeadline(deadline)
                resume(Effect.succeed(exit))
              })
              // The caller was interrupted: so is the attempt, and we wait for it to end.
              return Effect.suspend(() => {
                removeDeadline(deadline)
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

/**
 * Waiting in real time from a test that runs on the TestClock: real sockets,
 * files and processes answer in real time, while the library's timers (its
 * timeouts, backoffs, cooldowns) wait for the test to move the clock. A test
 * waits for what the other side did (a request arrived, a log line was
 * written), never for a duration; the deadline here is a hang guard, far
 * beyond what any step needs.
 */
import { Effect } from "effect"

/** Sleeps `millis` of real time, whatever clock the fiber runs on. */
export const realSleep = (millis: number): Effect.Effect<void> =>
  Effect.callback<void>((resume) => {
    const timer = setTimeout(() => resume(Effect.void), millis)
    return Effect.sync(() => clearTimeout(timer))
  })

/** How long a real-time wait may take before it is a hang, not a slow machine. */
export const hangGuardMillis = 15_000

/**
 * Polls `condition` every 2 ms of real time until it holds. A condition that
 * never holds within {@link hangGuardMillis} is a broken test: a defect naming `label`.
 */
export const waitUntil = <E, R>(label: string, condition: Effect.Effect<boolean, E, R>): Effect.Effect<void, E, R> =>
  Effect.gen(function*() {
    const started = Date.now()
    while (!(yield* condition)) {
      if (Date.now() - started > hangGuardMillis) return yield* Effect.die(new Error(`never saw ${label}`))
      yield* realSleep(2)
    }
  })

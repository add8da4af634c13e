/**
 * Waiting in real time from a test that runs on the TestClock: real sockets,
 * files and processes answer in real time, while the library's timers (its
 * timeouts, backoffs, cooldowns) wait for the test to move the clock. A test
 * waits for what the other side did (a request arrived, a log line was
 * written), never for a duration; the deadline here is a hang guard, far
 * beyond what any step needs.
 */
import { Duration, Effect } from "effect"
import { TestClock } from "effect/testing"

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

/**
 * Lets every fiber run until it waits, and promise work in flight (a response
 * body read through web streams) settle, without moving the TestClock:
 * `turns` real timer turns, each followed by `TestClock.adjust(0)`. Effect 3's
 * `TestClock.adjust` gave a real turn by itself; Effect 4's yields to the fiber
 * scheduler only. Nothing here waits on real I/O, so the count does not depend
 * on the machine's load.
 */
export const settle = (turns = 10): Effect.Effect<void> =>
  Effect.repeat(Effect.andThen(realSleep(0), TestClock.adjust(Duration.zero)), { times: turns - 1 })

/**
 * The sleeps in progress under the TestClock, for a test that must know what
 * the code under test waits for before it moves the clock (a retry's backoff,
 * a drain's bound). Effect 3's `TestClock.sleeps()` listed them; Effect 4's
 * TestClock keeps them to itself, so `tracked` runs an effect on the same
 * TestClock with its `sleep` wrapped to keep the list.
 */
import { Clock, Duration, Effect } from "effect"
import type { TestClock } from "effect/testing"

/**
 * Runs `f` on the current TestClock (that of `it.effect`), whose sleeps are
 * listed by the effect `f` is given: the wake-up times of the sleeps in
 * progress, in milliseconds, earliest first. `TestClock.adjust` and `setTime`
 * still work inside, on the same clock.
 */
export const tracked = <A, E, R>(
  f: (sleeps: Effect.Effect<ReadonlyArray<number>>) => Effect.Effect<A, E, R>
): Effect.Effect<A, E, R> =>
  Effect.flatMap(Clock.Clock, (clock) => {
    // A TestClock's methods are own arrow functions: a spread copy is the same clock.
    const testClock = clock as TestClock.TestClock
    const pending: Array<number> = []
    const sleep = (duration: Duration.Duration): Effect.Effect<void> =>
      Effect.acquireUseRelease(
        Effect.sync(() => {
          const at = testClock.currentTimeMillisUnsafe() + Duration.toMillis(duration)
          pending.push(at)
          return at
        }),
        () => testClock.sleep(duration),
        (at) =>
          Effect.sync(() => {
            pending.splice(pending.indexOf(at), 1)
          })
      )
    const wrapped: TestClock.TestClock = { ...testClock, sleep }
    const sleeps = Effect.sync(() => [...pending].sort((a, b) => a - b))
    return Effect.provideService(f(sleeps), Clock.Clock, wrapped)
  })

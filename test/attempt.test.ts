/**
 * The timeout and the retry around each refresh attempt (src/internal/attempt.ts)
 * give the outcome of `Effect.timeoutOrElse` (failing on timeout) and
 * `Effect.retry`, which they replace for their cost.
 */
import { describe, expect, it } from "@effect/vitest"
import { Clock, Context, Deferred, Duration, Effect, Exit, Fiber, Logger, Option, References, Schedule } from "effect"
import { TestClock } from "effect/testing"
import { deadlinesPending, retry, timeoutFail } from "../src/internal/attempt.js"

const onTimeout = () => "timed out" as const
const within = (millis: number) => timeoutFail({ duration: Duration.millis(millis), onTimeout })

describe("timeoutFail on the live clock", () => {
  it.live("returns the value of an effect that ends in time", () =>
    Effect.gen(function*() {
      expect(yield* within(5_000)(Effect.succeed(42))).toBe(42)
      expect(yield* within(5_000)(Effect.as(Effect.yieldNow, "after a yield"))).toBe("after a yield")
    }))

  it.live("fails with the effect's own error, and dies with its defect", () =>
    Effect.gen(function*() {
      expect(yield* Effect.flip(within(5_000)(Effect.fail("refused")))).toBe("refused")
      const exit = yield* Effect.exit(within(5_000)(Effect.die("broken")))
      // Only a defect, as Effect 3's cause `_tag` "Die" said.
      expect(Exit.isFailure(exit) && exit.cause.reasons.map((reason) => reason._tag)).toStrictEqual(["Die"])
    }))

  it.live("fails with onTimeout once the duration has passed, after interrupting the effect", () =>
    Effect.gen(function*() {
      let interrupted = false
      const started = yield* Clock.currentTimeMillis
      const error = yield* Effect.flip(
        within(30)(Effect.onInterrupt(Effect.never, () => Effect.sync(() => (interrupted = true))))
      )
      expect(error).toBe("timed out")
      expect((yield* Clock.currentTimeMillis) - started).toBeGreaterThanOrEqual(29)
      expect(interrupted).toBe(true)
    }))

  it.live("interrupting the caller interrupts the effect and waits for it to end", () =>
    Effect.gen(function*() {
      const running = yield* Deferred.make<void>()
      let finalized = false
      const fiber = yield* Effect.forkChild(
        within(60_000)(
          Effect.andThen(
            Deferred.succeed(running, undefined),
            Effect.onInterrupt(Effect.never, () => Effect.sync(() => (finalized = true)))
          )
        )
      )
      yield* Deferred.await(running)
      yield* Fiber.interrupt(fiber)
      const exit = yield* Fiber.await(fiber)
      expect(Exit.hasInterrupts(exit)).toBe(true)
      expect(finalized).toBe(true)
    }))
})

describe("timeoutFail's one timer, shared by the attempts under way", () => {
  it.live("each attempt times out at its own deadline, whatever the order they began in", () =>
    Effect.gen(function*() {
      const started = performance.now()
      const endedAt: Record<string, number> = {}
      const timed = (name: string, millis: number, self: Effect.Effect<string, string>) =>
        within(millis)(self).pipe(
          Effect.flip,
          Effect.tap(() => Effect.sync(() => void (endedAt[name] = performance.now() - started)))
        )
      // Begun longest first: the timer is armed again, earlier, by each. On a machine
      // too busy to fire it before several are due, one firing expires them in the order they were due.
      const results = yield* Effect.all([
        timed("long, ends in time", 60_000, Effect.flip(Effect.as(Effect.sleep(Duration.millis(80)), "done"))),
        timed("120 ms", 120, Effect.never),
        timed("40 ms", 40, Effect.never),
        timed("80 ms", 80, Effect.never)
      ], { concurrency: "unbounded" })
      expect(results).toStrictEqual(["done", "timed out", "timed out", "timed out"])
      expect(endedAt["40 ms"]).toBeGreaterThanOrEqual(39)
      expect(endedAt["80 ms"]).toBeGreaterThanOrEqual(79)
      expect(endedAt["120 ms"]).toBeGreaterThanOrEqual(119)
      // The order they were due in, each after the one before (no real-time bound above: a busy machine is slow).
      expect(endedAt["40 ms"]!).toBeLessThan(endedAt["80 ms"]!)
      expect(endedAt["80 ms"]!).toBeLessThan(endedAt["120 ms"]!)
      expect(deadlinesPending().count).toBe(0)
    }))

  it.live("holds a Node process open only while an attempt is under way", () =>
    Effect.gen(function*() {
      const running = yield* Deferred.make<void>()
      const release = yield* Deferred.make<void>()
      const fiber = yield* Effect.forkChild(
        within(60_000)(Effect.andThen(Deferred.succeed(running, undefined), Deferred.await(release)))
      )
      yield* Deferred.await(running)
      // The attempt wakes us inline as it starts, before its deadline is set: let it get there.
      yield* Effect.yieldNow
      expect(deadlinesPending()).toStrictEqual({ count: 1, held: true })
      yield* Deferred.succeed(release, undefined)
      yield* Fiber.join(fiber)
      // Its timer is still armed for the minute (the next attempt will use it), but holds nothing.
      expect(deadlinesPending()).toStrictEqual({ count: 0, held: false })
      // An attempt that ends at once takes its deadline out as it came.
      expect(yield* within(60_000)(Effect.succeed("at once"))).toBe("at once")
      expect(deadlinesPending()).toStrictEqual({ count: 0, held: false })
    }))

  it.live("an attempt started while another times out gets a deadline of its own", () =>
    Effect.gen(function*() {
      // The first attempt's timeout starts the second inline, from inside the timer's callback.
      const second = within(40)(Effect.never)
      const error = yield* Effect.flip(
        within(20)(Effect.never).pipe(Effect.catch(() => second))
      )
      expect(error).toBe("timed out")
      expect(deadlinesPending().count).toBe(0)
    }))
})

// The timer is shared by every attempt in the process, tests included: one that
// an earlier test left armed is first let fire, so that the next attempt arms a
// timer of its own (under the test's stubs).
const settle = Effect.asVoid(Effect.flip(within(1)(Effect.never)))

describe("timeoutFail's one timer, on its other paths", () => {
  it.live("a timer left armed by an attempt that ended fires for nothing, and is armed again for the next", () =>
    Effect.gen(function*() {
      // Leaves the timer armed 40 ms out; the next attempt's deadline is later, so it arms none of its own.
      expect(yield* within(40)(Effect.succeed("in time"))).toBe("in time")
      const started = performance.now()
      expect(yield* Effect.flip(within(80)(Effect.never))).toBe("timed out")
      expect(performance.now() - started).toBeGreaterThanOrEqual(79)
      expect(deadlinesPending().count).toBe(0)
    }))

  it.live("a timer left armed, let go, holds the process again for an attempt due after it", () =>
    Effect.gen(function*() {
      expect(yield* within(60_000)(Effect.succeed("in time"))).toBe("in time")
      expect(deadlinesPending()).toStrictEqual({ count: 0, held: false })
      const release = yield* Deferred.make<void>()
      // Due after the armed timer: no timer of its own; the one left armed is held again.
      const fiber = yield* Effect.forkChild(within(120_000)(Deferred.await(release)))
      yield* Effect.yieldNow
      expect(deadlinesPending()).toStrictEqual({ count: 1, held: true })
      yield* Deferred.succeed(release, undefined)
      yield* Fiber.join(fiber)
      expect(deadlinesPending()).toStrictEqual({ count: 0, held: false })
    }))

  it.live("interrupting the caller takes the attempt's deadline out", () =>
    Effect.gen(function*() {
      const running = yield* Deferred.make<void>()
      const fiber = yield* Effect.forkChild(
        within(60_000)(Effect.andThen(Deferred.succeed(running, undefined), Effect.never))
      )
      yield* Deferred.await(running)
      yield* Effect.yieldNow
      expect(deadlinesPending().count).toBe(1)
      yield* Fiber.interrupt(fiber)
      expect(deadlinesPending()).toStrictEqual({ count: 0, held: false })
    }))

  // A browser's timers (and Deno's) are numbers: they cannot be let go, so the
  // timer is cleared once no attempt is under way (in Deno it would hold the process).
  it.live("with timers that are numbers, clears the timer once no attempt is under way", () =>
    Effect.gen(function*() {
      yield* settle
      const live = new Map<number, ReturnType<typeof setTimeout>>()
      let next = 0
      const realSet = globalThis.setTimeout
      const realClear = globalThis.clearTimeout
      yield* Effect.acquireRelease(
        Effect.sync(() => {
          globalThis.setTimeout = ((callback: () => void, millis?: number) => {
            const id = ++next
            live.set(id, realSet(() => (live.delete(id), callback()), millis))
            return id
          }) as unknown as typeof setTimeout
          globalThis.clearTimeout = ((id: unknown) => {
            if (typeof id === "number") {
              realClear(live.get(id))
              live.delete(id)
            } else realClear(id as ReturnType<typeof setTimeout>)
          }) as typeof clearTimeout
        }),
        () =>
          Effect.sync(() => {
            globalThis.setTimeout = realSet
            globalThis.clearTimeout = realClear
          })
      )
      const release = yield* Deferred.make<void>()
      const fiber = yield* Effect.forkChild(within(60_000)(Deferred.await(release)))
      yield* Effect.yieldNow
      // Ours is armed, as a number...
      expect(live.size).toBe(1)
      yield* Deferred.succeed(release, undefined)
      yield* Fiber.join(fiber)
      // ...and cleared once the attempt has ended.
      expect(live.size).toBe(0)
      expect(yield* Effect.flip(within(30)(Effect.never))).toBe("timed out")
      expect(live.size).toBe(0)
      expect(deadlinesPending().count).toBe(0)
    }))

  it.live("attempts found due together by one late firing time out in the order they were due", () =>
    Effect.gen(function*() {
      yield* settle
      const ended: Array<string> = []
      const run = (name: string, millis: number) => {
        const fiber = Effect.runFork(within(millis)(Effect.never))
        fiber.addObserver(() => void ended.push(name))
        return fiber
      }
      // Begun in the other order than they are due in.
      const late = run("due at 60 ms", 60)
      const early = run("due at 20 ms", 20)
      // The event loop is held past both deadlines: one firing finds both due.
      const until = performance.now() + 80
      while (performance.now() < until) {
        // busy
      }
      yield* Fiber.await(late).pipe(Effect.timeout(Duration.seconds(10)))
      yield* Fiber.await(early).pipe(Effect.timeout(Duration.seconds(10)))
      expect(ended).toStrictEqual(["due at 20 ms", "due at 60 ms"])
    }))

  it.live("every attempt due at once times out, though the first one's expiry throws", () =>
    Effect.gen(function*() {
      yield* settle
      const thrown: Array<unknown> = []
      const realSet = globalThis.setTimeout
      yield* Effect.acquireRelease(
        Effect.sync(() => {
          // Catches what a timer's callback throws (uncaught, it would end the test run).
          globalThis.setTimeout = ((callback: () => void, millis?: number) =>
            realSet(() => {
              try {
                callback()
              } catch (error) {
                thrown.push(error)
              }
            }, millis)) as unknown as typeof setTimeout
        }),
        () => Effect.sync(() => void (globalThis.setTimeout = realSet))
      )
      // Two callers run apart: the first's observer throws when the timeout ends it,
      // inside the expiry that resumes it. It is due first, so it expires first.
      const first = Effect.runFork(within(5)(Effect.never))
      first.addObserver(() => {
        throw new Error("an observer of the first caller")
      })
      const second = Effect.runFork(within(30)(Effect.never))
      // Keep the event loop busy past both deadlines, so that one firing finds both due.
      const until = performance.now() + 50
      while (performance.now() < until) {
        // busy
      }
      // A hang guard: a second left pending would wait here for good.
      const exit = yield* Fiber.await(second).pipe(Effect.timeout(Duration.seconds(10)))
      // The second's end resumed us inline, inside the timer's callback, which throws the first's error after.
      yield* Effect.sleep(Duration.millis(1))
      expect(Exit.isFailure(exit) && Exit.findErrorOption(exit)).toStrictEqual(Option.some("timed out"))
      expect(Exit.isFailure(first.pollUnsafe()!)).toBe(true)
      expect(thrown.map(String)).toStrictEqual(["Error: an observer of the first caller"])
      expect(deadlinesPending().count).toBe(0)
    }))
})

describe("timeoutFail under another clock", () => {
  it.effect("is driven by the TestClock", () =>
    Effect.gen(function*() {
      const fiber = yield* Effect.forkChild(within(1_000)(Effect.never))
      yield* TestClock.adjust(Duration.millis(999))
      expect(fiber.pollUnsafe()).toBeUndefined()
      yield* TestClock.adjust(Duration.millis(1))
      expect(yield* Effect.flip(Fiber.join(fiber))).toBe("timed out")
    }))
})

const label = Context.Reference<string>("test/attempt/label", { defaultValue: () => "caller's" })
const withRefs = (clock: "live" | "test") =>
  timeoutFail({
    duration: Duration.seconds(clock === "live" ? 5 : 1),
    onTimeout,
    context: (context) => Context.add(context, label, `attempt's (was ${Context.get(context, label)})`)
  })

describe("timeoutFail with a context", () => {
  it.live("runs the effect with them, and leaves the caller's own values as they were", () =>
    Effect.gen(function*() {
      expect(yield* withRefs("live")(label)).toBe("attempt's (was caller's)")
      expect(yield* label).toBe("caller's")
      yield* Effect.exit(withRefs("live")(Effect.fail("refused")))
      expect(yield* label).toBe("caller's")
    }))

  it.effect("does the same under the TestClock, where it is Effect.timeoutOrElse", () =>
    Effect.gen(function*() {
      expect(yield* withRefs("test")(label)).toBe("attempt's (was caller's)")
      expect(yield* label).toBe("caller's")
      const fiber = yield* Effect.forkChild(withRefs("test")(Effect.never))
      yield* TestClock.adjust(Duration.seconds(1))
      expect(yield* Effect.flip(Fiber.join(fiber))).toBe("timed out")
      expect(yield* label).toBe("caller's")
    }))

  it.live("a failure of the attempt is the caller's to report: its fiber logs nothing", () =>
    Effect.gen(function*() {
      const lines: Array<string> = []
      const logger = Logger.make(({ message }) => lines.push(String(message)))
      const error = yield* Effect.flip(within(5_000)(Effect.fail("refused"))).pipe(
        Effect.provide(Logger.layer([logger])),
        Effect.provideService(References.MinimumLogLevel, "All"),
        Effect.provideService(References.UnhandledLogLevel, "Error")
      )
      expect(error).toBe("refused")
      // The child's end is observed on another turn of the loop: give it one.
      yield* Effect.sleep(Duration.millis(10))
      expect(lines.filter((line) => line.includes("unhandled"))).toStrictEqual([])
      // Nothing else logs here: no line at all, whatever its wording.
      expect(lines).toStrictEqual([])
    }))
})

type Failure = { readonly retryable: boolean; readonly n: number }

/**
 * Effect 3's `Schedule.tapInput`: runs `f` on every input fed to the
 * schedule, before its step (Effect 4's `Schedule.tap` runs only after a step
 * that recurs).
 */
const tapInput =
  <In, X>(f: (input: In) => Effect.Effect<X>) =>
  <Out, E, R>(self: Schedule.Schedule<Out, In, E, R>): Schedule.Schedule<Out, In, E, R> =>
    Schedule.fromStep(
      Effect.map(Schedule.toStep(self), (step) => (now, input) => Effect.andThen(f(input), step(now, input)))
    )

/** An effect that fails with `script[i]` on its i-th run, then succeeds with the number of runs. */
const scripted = (script: ReadonlyArray<Failure>) => {
  let runs = 0
  const effect = Effect.suspend(() => {
    runs++
    return runs <= script.length ? Effect.fail(script[runs - 1]!) : Effect.succeed(runs)
  })
  return { effect, runs: () => runs }
}

/** Runs `script` under both retries, recording what the schedule saw and when. */
const underBoth = (script: ReadonlyArray<Failure>) =>
  Effect.map(
    Effect.forEach(["Effect.retry", "retry"] as const, (which) =>
      Effect.gen(function*() {
        const seen: Array<readonly [number, number]> = []
        const schedule = Schedule.max([Schedule.spaced(Duration.millis(100)), Schedule.recurs(3)]).pipe(
          tapInput((failure: Failure) => Effect.map(Clock.currentTimeMillis, (now) => void seen.push([failure.n, now])))
        )
        const options = { schedule, while: (failure: Failure) => failure.retryable }
        const { effect, runs } = scripted(script)
        const start = yield* Clock.currentTimeMillis
        const fiber = yield* Effect.forkChild(
          Effect.result(which === "retry" ? retry(options)(effect) : Effect.retry(effect, options))
        )
        yield* TestClock.adjust(Duration.minutes(1))
        const result = yield* Fiber.join(fiber)
        return { result, runs: runs(), seen: seen.map(([n, at]) => [n, at - start]) }
      })),
    ([effectRetry, ours]) => ({ effectRetry: effectRetry!, ours: ours! })
  )

describe("retry", () => {
  it.effect("runs once when the first attempt succeeds", () =>
    Effect.gen(function*() {
      const { effectRetry, ours } = yield* underBoth([])
      expect(ours.runs).toBe(1)
      expect(ours.seen).toStrictEqual([])
      expect(JSON.stringify(ours)).toBe(JSON.stringify(effectRetry))
    }))

  it.effect("feeds the schedule the same failures at the same times as Effect.retry", () =>
    Effect.gen(function*() {
      const { effectRetry, ours } = yield* underBoth([{ retryable: true, n: 1 }, { retryable: true, n: 2 }])
      expect(ours.runs).toBe(3)
      expect(ours.seen).toStrictEqual([[1, 0], [2, 100]])
      expect(JSON.stringify(ours)).toBe(JSON.stringify(effectRetry))
    }))

  it.effect("fails at once, unretried, with a first error that `while` refuses (the schedule still sees it)", () =>
    Effect.gen(function*() {
      const { effectRetry, ours } = yield* underBoth([{ retryable: false, n: 1 }])
      expect(ours.runs).toBe(1)
      expect(JSON.stringify(ours)).toBe(JSON.stringify(effectRetry))
    }))

  it.effect("stops at a later error that `while` refuses, and when the schedule is done", () =>
    Effect.gen(function*() {
      const refused = yield* underBoth([{ retryable: true, n: 1 }, { retryable: false, n: 2 }])
      expect(refused.ours.runs).toBe(2)
      expect(JSON.stringify(refused.ours)).toBe(JSON.stringify(refused.effectRetry))
      const exhausted = yield* underBoth(Array.from({ length: 6 }, (_, i) => ({ retryable: true, n: i + 1 })))
      expect(exhausted.ours.runs).toBe(4)
      expect(JSON.stringify(exhausted.ours)).toBe(JSON.stringify(exhausted.effectRetry))
    }))
})

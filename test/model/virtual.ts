/**
 * Virtual time for the model checker: a scheduler that queues fiber tasks
 * until the harness runs them, and a clock whose time moves only when the
 * harness moves it. Every fiber settles (runs until it waits on something)
 * before time moves, and a schedule runs with no real timer at all, so
 * thousands of schedules fit in seconds and each run is deterministic.
 *
 * Why not TestClock: each wake-up under `TestClock.adjust` costs about 5 ms of
 * real time (it yields to the real event loop to let fibers settle); here
 * settling is a loop over a queue of tasks.
 */
import type { Fiber } from "effect"
import { Clock, Context, Duration, Effect, Exit, Random, References, Scheduler } from "effect"

/**
 * More tasks than this in one settle is a livelock (a fiber that never waits).
 * The most a run of the checker was measured to need is about 120.
 */
export const settleBudget = 5_000

const defaultScheduler = new Scheduler.MixedScheduler()

export class Livelock extends Error {
  /** `timers`: a timer kept firing at one instant (time could not move on). */
  constructor(readonly tasks: number, readonly kind: "tasks" | "timers" = "tasks", at?: number) {
    super(
      `livelock: ${tasks} ${
        kind === "tasks" ? "fiber tasks ran" : `timers fired at ${at} ms`
      } without every fiber coming to rest`
    )
  }
}

interface Timer {
  readonly at: number
  readonly seq: number
  readonly fire: () => void
  cancelled: boolean
}

export class VirtualTime {
  now = 0
  private tasks: Array<() => void> = []
  private timers: Array<Timer> = []
  private seq = 0
  /** Tasks run since the start, for the throughput figures. */
  tasksRun = 0

  // Tasks run in the order they were queued, whatever their priority: the
  // harness settles every one before the world moves on.
  readonly scheduler: Scheduler.Scheduler = {
    executionMode: "async",
    // A fiber yields after as many operations as on Effect's own scheduler.
    shouldYield: (fiber) => defaultScheduler.shouldYield(fiber),
    makeDispatcher: () => ({
      scheduleTask: (task) => {
        this.tasks.push(task)
      },
      flush: () => this.settle()
    })
  }

  readonly clock: Clock.Clock = {
    currentTimeMillisUnsafe: () => this.now,
    currentTimeMillis: Effect.sync(() => this.now),
    currentTimeNanosUnsafe: () => BigInt(this.now) * 1_000_000n,
    currentTimeNanos: Effect.sync(() => BigInt(this.now) * 1_000_000n),
    monotonicTimeNanosUnsafe: () => BigInt(this.now) * 1_000_000n,
    monotonicTimeNanos: Effect.sync(() => BigInt(this.now) * 1_000_000n),
    sleep: (duration) =>
      this.callback<void, never>((resume) => {
        const cancel = this.at(this.now + Duration.toMillis(duration), () => resume(Effect.void))
        return Effect.sync(cancel)
      })
  }

  /** What every fiber of the run starts with: this scheduler, clock and random generator, and logging off. */
  private readonly context: Context.Context<never>

  constructor(random: Random.Random) {
    this.context = Context.make(Scheduler.Scheduler, this.scheduler).pipe(
      Context.add(Clock.Clock, this.clock),
      Context.add(Random.Random, random),
      Context.add(References.MinimumLogLevel, "None")
    )
  }

  /**
   * `Effect.callback` for the world's answers (a store's, a server's, a
   * timer's): an answer given while the callback registers is taken at once;
   * one given later is queued, and the fiber takes it when the harness
   * settles. Effect 4 would run the resumed fiber right away, inside whatever
   * called `resume` (the harness, or another fiber's store operation); a real
   * answer comes on a turn of its own, after its sender has moved on.
   */
  callback<A, E>(
    register: (resume: (effect: Effect.Effect<A, E>) => void) => void | Effect.Effect<void>
  ): Effect.Effect<A, E> {
    return Effect.callback<A, E>((resume) => {
      let registering = true
      const cancel = register((effect) => {
        if (registering) resume(effect)
        else this.tasks.push(() => resume(effect))
      })
      registering = false
      return cancel
    })
  }

  /** Calls `fire` when time reaches `at` (in order of time, then of arming); returns the cancel. */
  at(at: number, fire: () => void): () => void {
    const timer: Timer = { at: Math.max(at, this.now), seq: this.seq++, fire, cancelled: false }
    // Kept sorted: timers are few (a handful per holder).
    let i = this.timers.length
    while (i > 0 && this.timers[i - 1]!.at > timer.at) i--
    this.timers.splice(i, 0, timer)
    return () => {
      timer.cancelled = true
    }
  }

  /** When the next live timer fires, if any. */
  nextTimer(): number | undefined {
    while (this.timers.length > 0 && this.timers[0]!.cancelled) this.timers.shift()
    return this.timers[0]?.at
  }

  /** Runs every queued fiber task, and those they queue, until none is left. */
  settle(): void {
    let ran = 0
    while (this.tasks.length > 0) {
      const batch = this.tasks
      this.tasks = []
      for (const task of batch) task()
      ran += batch.length
      if (ran > settleBudget) {
        this.tasks = []
        throw new Livelock(ran)
      }
    }
    this.tasksRun += ran
  }

  /**
   * Moves time to `target`, firing each timer due on the way (settling after
   * each). More than `settleBudget` timers at one instant is a livelock too (a
   * fiber that waits only for time that cannot pass until it stops).
   */
  advanceTo(target: number): void {
    this.settle()
    let fired = 0
    for (;;) {
      const next = this.nextTimer()
      if (next === undefined || next > target) break
      const timer = this.timers.shift()!
      if (timer.at > this.now) fired = 0
      else if (++fired > settleBudget) throw new Livelock(fired, "timers", this.now)
      this.now = Math.max(this.now, timer.at)
      timer.fire()
      this.settle()
    }
    this.now = Math.max(this.now, target)
  }

  /** Fires the next timer (and every timer due at the same instant); false when there is none. */
  fireNext(): boolean {
    const next = this.nextTimer()
    if (next === undefined) return false
    this.advanceTo(next)
    return true
  }

  /**
   * Starts `effect` in a fiber of its own on this scheduler, clock and random
   * generator, with logging off; it runs at once until it first waits.
   */
  fork<A, E>(effect: Effect.Effect<A, E>): Fiber.Fiber<A, E> {
    const fiber = Effect.runForkWith(this.context)(effect)
    this.settle()
    return fiber
  }

  /**
   * Runs `effect` to its end if it comes without time moving and with only
   * what `deliver` delivers; else interrupts it and gives `undefined`.
   */
  tryRunNow<A, E>(effect: Effect.Effect<A, E>, deliver: () => boolean): A | undefined {
    const fiber = this.fork(effect)
    for (;;) {
      const exit = fiber.pollUnsafe()
      if (exit !== undefined) {
        if (Exit.isSuccess(exit)) return exit.value
        throw new Error(`failed: ${String(exit.cause)}`)
      }
      if (!deliver()) {
        fiber.interruptUnsafe(fiber.id)
        this.settle()
        return undefined
      }
    }
  }

  /** Runs `effect` to its end, which must come without time moving (the setup of a run). */
  runNow<A, E>(effect: Effect.Effect<A, E>, deliver: () => boolean): A {
    const fiber = this.fork(effect)
    for (;;) {
      const exit = fiber.pollUnsafe()
      if (exit !== undefined) {
        if (Exit.isSuccess(exit)) return exit.value
        throw new Error(`setup failed: ${String(exit.cause)}`)
      }
      if (!deliver()) throw new Error("setup waits on something the harness cannot deliver")
      this.settle()
    }
  }
}

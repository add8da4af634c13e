/**
 * Property checks over schedules (Effect's `Arbitrary`): generate, run, check,
 * and on a failure shrink to the smallest schedule that still fails and print
 * it (its replay token, one line per step, and what happened, line by line).
 *
 * Not a model-based `commands` check: a step is not checked against a model
 * as it runs; the invariants look at the whole run. Not a promise scheduler
 * either: the engine's fibers run on the harness's own scheduler.
 */
import { describe, it } from "@effect/vitest"
import { Arbitrary, Effect } from "effect"
import type { Violation } from "./invariants.js"
import { report, runSchedule } from "./run.js"
import type { Schedule } from "./schedule.js"
import { scheduleArb, scheduleSize } from "./schedule.js"

/** Schedules per `it` block: each block stays well under vitest's worker heartbeat. */
export const chunk = 250

/** How many smaller schedules a failure's shrinking may try. */
const maxShrinks = 5_000

/** How many schedules a file runs: `MODEL_RUNS` spread over the files that share it, else `fallback`. */
export const runsFromEnv = (fallback: number, files: number): number => {
  const total = Number(process.env.MODEL_RUNS ?? Number.NaN)
  return Number.isFinite(total) && total > 0 ? Math.ceil(total / files) : fallback
}

/** What the survey tells schedules apart by: the invariant, its circumstance, and the kind of world. */
export const groupOf = (violation: Violation, schedule: Schedule): string =>
  `${violation.kind}${violation.detail === undefined ? "" : `, ${violation.detail}`} (${
    schedule.config.mode === "pool" ? "pool" : `${schedule.config.store} store`
  })`

// Back to the event loop every so often: the schedules run synchronously, and
// vitest's worker must still answer its heartbeat (a minute of silence fails the run).
let sinceBreath = 0
const breathe: Effect.Effect<void> = Effect.suspend(() => {
  if (++sinceBreath < 20) return Effect.void
  sinceBreath = 0
  return Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))
})

const property = (only: string | undefined) => (schedule: Schedule): Effect.Effect<boolean> =>
  Effect.map(breathe, () => {
    const { violations } = runSchedule(schedule)
    return only === undefined ? violations.length === 0 : !violations.some((v) => groupOf(v, schedule) === only)
  })

const check = (only: string | undefined, seed: number, runs: number, replay?: string) =>
  Effect.runPromise(
    Arbitrary.checkEffect(scheduleArb(), property(only), {
      seed,
      runs,
      size: scheduleSize,
      maxShrinks,
      ...(replay === undefined ? {} : { replay })
    })
  )

/**
 * Runs `runs` schedules from `seed`; fails, with the shrunk schedule printed,
 * at the first one that breaks an invariant. `replay` (a failure's replay
 * token) runs that failure and its shrinking again, and only them.
 */
export const checkSchedules = async (seed: number, runs: number, replay?: string): Promise<void> => {
  const result = await check(undefined, seed, runs, replay)
  if (result._tag === "Passed") return
  if (result._tag !== "Falsified") throw new Error(Arbitrary.formatCheckFailure(result))
  throw new Error(
    [
      `a schedule broke an invariant (${result.runs} runs, shrunk ${result.shrinks} times)`,
      `replay: checkSchedules(${seed}, ${runs}, ${JSON.stringify(result.replay)})`,
      report(result.shrunkInput)
    ].join("\n")
  )
}

/** For the survey: the first schedule from `seed` in `group` (see `groupOf`), shrunk, or undefined. */
export const firstOf = async (seed: number, runs: number, group: string) => {
  const result = await check(group, seed, runs)
  if (result._tag !== "Falsified") return undefined
  return {
    replay: result.replay,
    runs: result.runs,
    schedule: result.shrunkInput
  }
}

/**
 * The `it` blocks of one file: its share of the schedules, `chunk` at a time,
 * each block with its own seed (`seedBase + i`), so a failure names its seed.
 * Two files share the schedules so both cores run them.
 */
export const describeSchedules = (seedBase: number, files = 2): void => {
  const runs = runsFromEnv(1_000, files)
  describe(`the session engine under random schedules (seeds from ${seedBase})`, () => {
    for (let i = 0; i * chunk < runs; i++) {
      const count = Math.min(chunk, runs - i * chunk)
      // No timeout of its own: the config's (ten minutes) is a hang guard, and 250 schedules that take
      // 10 s on a quiet machine took over 120 s on one loaded 20 deep.
      it(`keeps every invariant over ${count} schedules of seed ${seedBase + i}`, () =>
        checkSchedules(seedBase + i, count))
    }
  })
}

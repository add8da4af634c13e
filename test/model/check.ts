/**
 * fast-check over schedules: generate, run, check, and on a failure shrink to
 * the smallest schedule that still fails and print it (its seed and path for
 * replay, one line per step, and what happened, line by line).
 *
 * Not `fc.commands`: a step is not checked against a model as it runs; the
 * invariants look at the whole run. Not `fc.scheduler`: it orders promises,
 * and the engine's fibers run on the harness's own scheduler.
 */
import { describe, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import type { Violation } from "./invariants.js"
import { report, runSchedule } from "./run.js"
import type { Schedule } from "./schedule.js"
import { scheduleArb } from "./schedule.js"

/** Schedules per `it` block: each block stays well under vitest's worker heartbeat. */
export const chunk = 250

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
const breathe = (): Promise<void> | void => {
  if (++sinceBreath < 20) return
  sinceBreath = 0
  return new Promise((resolve) => setImmediate(resolve))
}

const property = (only: string | undefined) =>
  fc.asyncProperty(scheduleArb(), async (schedule: Schedule) => {
    await breathe()
    const { violations } = runSchedule(schedule)
    return only === undefined ? violations.length === 0 : !violations.some((v) => groupOf(v, schedule) === only)
  })

/**
 * Runs `runs` schedules from `seed`; fails, with the shrunk schedule printed,
 * at the first one that breaks an invariant.
 */
export const checkSchedules = async (seed: number, runs: number, path?: string): Promise<void> => {
  const details = await fc.check(property(undefined), { seed, numRuns: runs, ...(path === undefined ? {} : { path }) })
  if (!details.failed) return
  const schedule = details.counterexample![0]
  throw new Error(
    [
      `a schedule broke an invariant (${details.numRuns} runs, shrunk ${details.numShrinks} times)`,
      `replay: checkSchedules(${details.seed}, ${runs}, ${JSON.stringify(details.counterexamplePath)})`,
      report(schedule)
    ].join("\n")
  )
}

/** For the survey: the first schedule from `seed` in `group` (see `groupOf`), shrunk, or undefined. */
export const firstOf = async (seed: number, runs: number, group: string) => {
  const details = await fc.check(property(group), { seed, numRuns: runs })
  if (!details.failed) return undefined
  return {
    seed: details.seed,
    path: details.counterexamplePath!,
    runs: details.numRuns,
    schedule: details.counterexample![0]
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

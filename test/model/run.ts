/**
 * Runs one schedule and checks it; formats a failure for a person to read.
 */
import type { Violation } from "./invariants.js"
import { check } from "./invariants.js"
import type { Schedule } from "./schedule.js"
import { format } from "./schedule.js"
import { World } from "./world.js"

export interface Outcome {
  readonly violations: ReadonlyArray<Violation>
  readonly world: World
}

/** Runs `schedule` in a new world and checks every invariant. */
export const runSchedule = (schedule: Schedule, traced = false): Outcome => {
  // No stack traces: the engine builds errors it may never throw, and the
  // checker reads none; capturing them was a fifth of the run time.
  const limit = Error.stackTraceLimit
  Error.stackTraceLimit = 0
  try {
    const world = new World(schedule.config, traced)
    world.run(schedule.steps)
    const violations = check(world)
    world.dispose()
    return { violations, world }
  } finally {
    Error.stackTraceLimit = limit
  }
}

/** A failing schedule as a person reads it: the violations, the steps, then what happened, line by line. */
export const report = (schedule: Schedule): string => {
  const { violations, world } = runSchedule(schedule, true)
  return [
    "violations:",
    ...violations.map((v) => `  [${v.kind}] ${v.message}`),
    "schedule:",
    format(schedule),
    "trace:",
    ...(world.trace ?? []).map((line) => `  ${line}`)
  ].join("\n")
}

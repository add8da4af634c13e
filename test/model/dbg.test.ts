import { FastCheck as fc } from "effect"
import { it } from "vitest"
import { report } from "./run.js"
import { scheduleArb } from "./schedule.js"
it("dbg", () => {
  const samples = fc.sample(scheduleArb(), { seed: Number(process.env.SEED ?? 8), numRuns: Number(process.env.I) + 1 })
  console.log(report(samples[Number(process.env.I)]!))
}, 3_600_000)

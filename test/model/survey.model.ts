// The checker's survey (`npm run test:model:survey`): runs MODEL_RUNS
// schedules (default 5,000) without stopping at a failure, counts which
// invariants broke how often, then shrinks the first schedule of each kind and
// prints it. What the report on the engine's behaviours was written from.
import { it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import { firstOfKind } from "./check.js"
import type { Kind } from "./invariants.js"
import { report, runSchedule } from "./run.js"
import { scheduleArb } from "./schedule.js"

const runs = Number(process.env.MODEL_RUNS ?? 5_000)
const seed = Number(process.env.MODEL_SEED ?? 7)

it(`survey of ${runs} schedules from seed ${seed}`, () => {
  const found = new Map<Kind, Array<number>>()
  const started = performance.now()
  const cpu = process.cpuUsage()
  let failed = 0
  fc.sample(scheduleArb(), { seed, numRuns: runs }).forEach((schedule, index) => {
    const kinds = new Set(runSchedule(schedule).violations.map((v) => v.kind))
    if (kinds.size > 0) failed++
    for (const kind of kinds) found.set(kind, [...(found.get(kind) ?? []), index])
  })
  const used = process.cpuUsage(cpu)
  const seconds = (performance.now() - started) / 1000
  console.log(
    `${runs} schedules in ${seconds.toFixed(1)} s (${(runs / seconds).toFixed(0)}/s wall, ` +
      `${((used.user + used.system) / 1000 / runs).toFixed(1)} ms CPU each); ${failed} broke an invariant`
  )
  for (const [kind, indexes] of found) console.log(`  ${kind}: ${indexes.length}`)
  for (const kind of found.keys()) {
    const first = firstOfKind(seed, runs, kind)
    if (first === undefined) continue
    console.log(`\n=== ${kind}: seed ${first.seed}, path ${first.path} (run ${first.runs})\n${report(first.schedule)}`)
  }
}, 3_600_000)

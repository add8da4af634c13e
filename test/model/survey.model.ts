// The checker's survey (`npm run test:model:survey`): runs MODEL_RUNS
// schedules (default 5,000) without stopping at a failure, counts which
// invariants broke how often, then shrinks the first schedule of each kind and
// prints it. What the report on the engine's behaviours was written from.
import { it } from "@effect/vitest"
import * as Arb from "../support/Arb.js"
import { firstOf, groupOf } from "./check.js"
import { report, runSchedule } from "./run.js"
import { scheduleArb, scheduleSize } from "./schedule.js"

const runs = Number(process.env.MODEL_RUNS ?? 5_000)
const seed = Number(process.env.MODEL_SEED ?? 7)

// Back to the event loop now and then: vitest's worker must answer its heartbeat.
const breathe = () => new Promise((resolve) => setImmediate(resolve))

it(`survey of ${runs} schedules from seed ${seed}`, async () => {
  const found = new Map<string, Array<number>>()
  const started = performance.now()
  const cpu = process.cpuUsage()
  let failed = 0
  const schedules = Arb.sample(scheduleArb(), { seed, count: runs, size: scheduleSize })
  for (const [index, schedule] of schedules.entries()) {
    if (index % 100 === 0) await breathe()
    const groups = new Set(runSchedule(schedule).violations.map((v) => groupOf(v, schedule)))
    if (groups.size > 0) failed++
    for (const group of groups) found.set(group, [...(found.get(group) ?? []), index])
  }
  const used = process.cpuUsage(cpu)
  const seconds = (performance.now() - started) / 1000
  console.log(
    `${runs} schedules in ${seconds.toFixed(1)} s (${(runs / seconds).toFixed(0)}/s wall, ` +
      `${((used.user + used.system) / 1000 / runs).toFixed(1)} ms CPU each); ${failed} broke an invariant`
  )
  for (const [group, indexes] of found) console.log(`  ${group}: ${indexes.length}`)
  for (const group of found.keys()) {
    await breathe()
    const first = await firstOf(seed, runs, group)
    if (first === undefined) continue
    console.log(`\n=== ${group}: seed ${seed}, replay ${first.replay} (run ${first.runs})\n${report(first.schedule)}`)
  }
}, 3_600_000)

// The checker itself: on a world with nothing to get wrong (a store and a
// server that answer as asked, reads and refreshes only), the invariants hold;
// so a violation the checker reports comes from the engine, not from the
// checker's own model of the store, the server or time.
import { describe, expect, it } from "@effect/vitest"
import * as Arb from "../support/Arb.js"
import { runSchedule } from "./run.js"
import type { Config, Step } from "./schedule.js"
import { maxScheduleSteps, scheduleArb, scheduleSize } from "./schedule.js"

const quiet: Arb.Arb<Step> = Arb.oneof(
  Arb.record({
    t: Arb.constant("call" as const),
    holder: Arb.nat({ max: 1 }),
    op: Arb.constantFrom("accessToken" as const, "session" as const, "refresh" as const)
  }),
  Arb.record({ t: Arb.constant("deliver" as const), pick: Arb.nat({ max: 7 }), outcome: Arb.constant(0) }),
  Arb.record({ t: Arb.constant("flush" as const), count: Arb.integer({ min: 1, max: 6 }) }),
  Arb.record({ t: Arb.constant("advance" as const), ms: Arb.constantFrom(0, 1_000, 31_000, 120_000) })
)

// One manager on either store; or two on a fenced one, with tokens that outlive
// the margin (shorter ones are behaviour 9 of issue 20, which today's engine has).
const shape = Arb.oneof(
  Arb.record({
    mode: Arb.constant("managers" as const),
    holders: Arb.constant(1),
    store: Arb.constantFrom("fenced" as const, "plain" as const),
    lifetime: Arb.constantFrom(600_000, 45_000)
  }),
  Arb.record({
    mode: Arb.constant("managers" as const),
    holders: Arb.constant(2),
    store: Arb.constant("fenced" as const),
    lifetime: Arb.constant(600_000)
  })
)

const config: Arb.Arb<Config> = Arb.chain(shape, (shape) =>
  Arb.record({
    mode: Arb.constant(shape.mode),
    holders: Arb.constant(shape.holders),
    store: Arb.constant(shape.store),
    // A store that answers at once: a slow one times out, which is a fault.
    instant: Arb.constant(true),
    shared: Arb.boolean(),
    lifetime: Arb.constant(shape.lifetime),
    initial: Arb.constant("session" as const),
    seed: Arb.nat(),
    capacity: Arb.constant(0),
    idleTimeToLive: Arb.constant(0),
    maxConcurrentRefreshes: Arb.constant(0)
  }))

describe("the model checker", () => {
  it.prop(
    "finds nothing wrong when nothing fails (one manager, or two with long-lived tokens)",
    [config, Arb.array(quiet, { maxLength: maxScheduleSteps })],
    ([config, steps]) => {
      const { violations, world } = runSchedule({ config, steps })
      expect(violations).toStrictEqual([])
      // And the run did something: the manager started and, past its refresh time, refreshed.
      expect(world.holders[0]!.events.length).toBeGreaterThan(0)
    },
    { arbitrary: { seed: 42, runs: 80, size: scheduleSize } }
  )

  it("replays a schedule to the same run, step for step", () => {
    for (const schedule of Arb.sample(scheduleArb(), { seed: 5, count: 25, size: scheduleSize })) {
      const first = runSchedule(schedule, true)
      const second = runSchedule(schedule, true)
      expect(second.world.trace).toStrictEqual(first.world.trace)
      expect(second.violations).toStrictEqual(first.violations)
    }
  })
})

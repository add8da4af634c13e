// The checker itself: on a world with nothing to get wrong (a store and a
// server that answer as asked, reads and refreshes only), the invariants hold;
// so a violation the checker reports comes from the engine, not from the
// checker's own model of the store, the server or time.
import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import { runSchedule } from "./run.js"
import type { Config, Step } from "./schedule.js"
import { scheduleArb } from "./schedule.js"

const quiet: fc.Arbitrary<Step> = fc.oneof(
  fc.record({
    t: fc.constant("call" as const),
    holder: fc.nat({ max: 1 }),
    op: fc.constantFrom("accessToken" as const, "session" as const, "refresh" as const)
  }),
  fc.record({ t: fc.constant("deliver" as const), pick: fc.nat({ max: 7 }), outcome: fc.constant(0) }),
  fc.record({ t: fc.constant("flush" as const), count: fc.integer({ min: 1, max: 6 }) }),
  fc.record({ t: fc.constant("advance" as const), ms: fc.constantFrom(0, 1_000, 31_000, 120_000) })
)

// One manager on either store; or two on a fenced one, with tokens that outlive
// the margin (shorter ones are behaviour 9 of issue 20, which today's engine has).
const config: fc.Arbitrary<Config> = fc.oneof(
  fc.record({
    mode: fc.constant("managers" as const),
    holders: fc.constant(1),
    store: fc.constantFrom("fenced" as const, "plain" as const),
    lifetime: fc.constantFrom(600_000, 45_000)
  }),
  fc.record({
    mode: fc.constant("managers" as const),
    holders: fc.constant(2),
    store: fc.constant("fenced" as const),
    lifetime: fc.constant(600_000)
  })
).chain((shape) =>
  fc.record({
    mode: fc.constant(shape.mode),
    holders: fc.constant(shape.holders),
    store: fc.constant(shape.store),
    // A store that answers at once: a slow one times out, which is a fault.
    instant: fc.constant(true),
    shared: fc.boolean(),
    lifetime: fc.constant(shape.lifetime),
    initial: fc.constant("session" as const),
    seed: fc.nat(),
    capacity: fc.constant(0),
    idleTimeToLive: fc.constant(0),
    maxConcurrentRefreshes: fc.constant(0)
  })
)

describe("the model checker", () => {
  it("finds nothing wrong when nothing fails (one manager, or two with long-lived tokens)", () => {
    fc.assert(
      fc.property(config, fc.array(quiet, { maxLength: 30 }), (config, steps) => {
        const { violations, world } = runSchedule({ config, steps })
        expect(violations).toStrictEqual([])
        // And the run did something: the manager started and, past its refresh time, refreshed.
        expect(world.holders[0]!.events.length).toBeGreaterThan(0)
      }),
      { seed: 42, numRuns: 80 }
    )
  })

  it("replays a schedule to the same run, step for step", () => {
    for (const schedule of fc.sample(scheduleArb(), { seed: 5, numRuns: 25 })) {
      const first = runSchedule(schedule, true)
      const second = runSchedule(schedule, true)
      expect(second.world.trace).toStrictEqual(first.world.trace)
      expect(second.violations).toStrictEqual(first.violations)
    }
  })
})

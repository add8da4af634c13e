// Issue 20, behaviour 10: after a store outage longer than the lock lease,
// reads kept failing after the store was back until the cooldown the outage
// had built up ran out (up to 5 minutes by default; docs/10 says "until Redis
// returns"). A store failure is not a refresh failure.
import { describe, expect, it } from "@effect/vitest"
import { endOf, minute, second, trace, world } from "./engine.js"

describe("engine 10: reads after a store outage", () => {
  it("recover as soon as the store answers again", () => {
    // A 45-second token, so it expires during the outage.
    const w = world({ instant: true, lifetime: 45 * second })
    w.step({ t: "outage", on: true })
    // Three minutes down: every refresh (proactive, or for a read) fails on the store.
    for (let i = 0; i < 6; i++) {
      w.call(0, "accessToken")
      w.advance(30 * second)
    }
    expect(w.vt.now, trace(w)).toBeGreaterThan(2 * minute)
    w.step({ t: "outage", on: false })
    const read = w.call(0, "accessToken")
    if (w.postOut()) w.answerPost()
    expect(endOf(read), trace(w)).toBe("value")
  })
})

// Issue 20, behaviour 2: a background save retry of the previous session
// landed while the next refresh's POST was out: the new session was dropped,
// the manager kept a spent refresh token, and its next refresh was a reuse
// (docs/02: "A rotation is never dropped").
import { describe, expect, it } from "@effect/vitest"
import { second, settleAll, spentSent, stored, tokenOf, trace, world } from "./engine.js"

describe("engine 2: a background save lands during the next refresh", () => {
  it("keeps the newest rotation and never sends the token it replaced", () => {
    // One holder: the store is not shared, so a failed save goes straight to the background.
    const w = world({ shared: false })
    w.call(0, "refresh")
    w.answerStore()
    // The store fails while the rotated session is saved: it stays in memory, saved in the background.
    w.step({ t: "outage", on: true })
    w.answerPost()
    w.advance(200)
    w.step({ t: "outage", on: false })
    expect(tokenOf(w.held(0)), trace(w)).toBe("r.F1.1")
    // The next refresh sends r.F1.1; while its answer is out, the background save of r.F1.1 lands.
    w.call(0, "refresh")
    w.answerStore()
    expect(w.postOut(), trace(w)).toBe(true)
    w.advance(2 * second)
    w.answerStore()
    w.answerPost()
    w.answerStore()
    settleAll(w)
    expect(tokenOf(w.held(0)), trace(w)).toBe("r.F1.2")
    expect(stored(w), trace(w)).toBe("r.F1.2")
    // And the refresh after it sends the newest token, not a spent one.
    w.call(0, "refresh")
    settleAll(w)
    expect(spentSent(w), trace(w)).toStrictEqual([])
    expect(tokenOf(w.held(0)), trace(w)).toBe("r.F1.3")
  })
})

// Model checker, livelock (seeds 1000, 1013, 1023, 2011): a refresh's answer
// being saved past `saveBound` with a save still in flight kept its lock (the
// save may yet land) while `nextWake` armed the timer for the bound, already
// past: the timer fired, nothing changed, and it was armed again at the same
// instant, a busy loop until the save ended (up to the store's timeout). The
// timer now waits for the save's outcome instead.
import { describe, expect, it } from "@effect/vitest"
import { Livelock } from "../model/virtual.js"
import { second, settleAll, spentSent, stored, tokenOf, trace, world } from "./engine.js"

describe("engine 15: a save still in flight past the save bound", () => {
  it("the holder waits for its outcome without spinning, then lets the lock go", () => {
    // Two holders of a shared store, tokens of 45 s: A refreshes at once.
    const w = world({ holders: 2, lifetime: 45 * second })
    // A takes the lock, reads the record, and sends its token; the answer comes.
    w.step({ t: "flush", count: 2 })
    if (w.postOut()) w.answerPost()
    // Its save hangs: each try times out after 10 s and is tried again, the last
    // one still in flight when the bound (30 s after the answer) passes.
    let spun: unknown = undefined
    try {
      w.advance(31 * second)
    } catch (error) {
      spun = error
    }
    expect(spun instanceof Livelock ? spun.message : spun, trace(w)).toBeUndefined()
    settleAll(w)
    expect(w.livelock, trace(w)).toBeUndefined()
    expect(spentSent(w), trace(w)).toStrictEqual([])
    expect([tokenOf(w.held(0)), tokenOf(w.held(1))], trace(w)).toStrictEqual([stored(w), stored(w)])
  })
})

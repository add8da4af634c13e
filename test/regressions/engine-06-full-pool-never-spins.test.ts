// Issue 20, behaviour 6: a `SessionPool` at `capacity` with nothing droppable:
// a read of a new key evicted that key's own new entry and retried forever;
// over an in-memory keyed store the event loop never ran again. A full pool
// answers with a typed error, or waits a bounded time, and never spins.
import { describe, expect, it } from "@effect/vitest"
import { Livelock } from "../model/virtual.js"
import { endOf, minute, settleAll, trace, world } from "./engine.js"

describe("engine 6: a full pool with nothing droppable", () => {
  it("a read of a new key ends, with a value or a typed error, without spinning", () => {
    // The store answers at once, as the in-memory keyed store does.
    const w = world({ mode: "pool", holders: 2, capacity: 1, instant: true, shared: false })
    // key0's refresh is out: its entry cannot be dropped while the answer may rotate its token.
    w.call(0, "refresh")
    expect(w.postOut(), trace(w)).toBe(true)
    let read: ReturnType<typeof w.call>
    let spun: string | undefined
    try {
      read = w.call(1, "accessToken")
      w.advance(minute)
    } catch (error) {
      if (!(error instanceof Livelock)) throw error
      spun = error.message
    }
    expect(spun, trace(w)).toBeUndefined()
    if (w.postOut()) w.answerPost()
    settleAll(w)
    expect(["value", "typed"], trace(w)).toContain(endOf(read!))
  })
})

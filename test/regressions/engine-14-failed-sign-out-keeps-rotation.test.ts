// Issue 20, behaviour 14: a failed `signOut` discarded a rotation that was not
// yet saved, and the other holders later sent the spent token. A failed
// sign-out's tombstone is retried until it lands; nobody sends a spent token.
import { describe, expect, it } from "@effect/vitest"
import { endOf, minute, second, spentSent, stored, tokenOf, trace, world } from "./engine.js"

describe("engine 14: a failed signOut with a rotation not yet saved", () => {
  it("the other holders never send the spent token, and everyone ends signed out", () => {
    const w = world({ holders: 2, instant: true })
    w.call(0, "refresh")
    expect(w.postOut(), trace(w)).toBe(true)
    // The store goes down as A's refresh is answered: r.F1.1 lives only in A's memory.
    w.step({ t: "outage", on: true })
    w.answerPost()
    w.advance(second)
    const signOut = w.call(0, "signOut")
    expect(endOf(signOut), trace(w)).toBe("typed")
    w.advance(10 * second)
    w.step({ t: "outage", on: false })
    // The store is back; time runs on, with everything answered, past B's own refresh.
    w.runFor(12 * minute)
    expect(spentSent(w), trace(w)).toStrictEqual([])
    expect([tokenOf(w.held(0)), tokenOf(w.held(1)), stored(w)], trace(w)).toStrictEqual([
      "signed out",
      "signed out",
      "signed out"
    ])
  })
})

// Issue 20, behaviour 1: a refresh answered while `signOut` is still clearing
// the store (a slow store, or one in an outage) signed the user back in:
// events SignedOut(UserSignedOut), Refreshed, SignedOut(SignedOutElsewhere);
// with the store down the process ended signed in and the store later held a
// live session again. A refresh in flight when signOut starts is discarded.
import { describe, expect, it } from "@effect/vitest"
import { endOf, events, second, settleAll, stored, storeHistory, trace, world } from "./engine.js"

describe("engine 1: signOut during a refresh", () => {
  it("a refresh answered while a slow store clears is never installed nor saved", () => {
    const w = world()
    w.call(0, "refresh")
    w.answerStore()
    expect(w.postOut(), trace(w)).toBe(true)
    const signOut = w.call(0, "signOut")
    // The tombstone is on its way to a slow store when the server answers the refresh.
    w.answerPost()
    w.answerStore()
    settleAll(w)
    expect(endOf(signOut), trace(w)).toBe("value")
    const after = events(w, 0).slice(events(w, 0).indexOf("SignedOut(UserSignedOut)"))
    expect(after.filter((e) => e.startsWith("Refreshed") || e.startsWith("SignedIn")), trace(w)).toStrictEqual([])
    expect(storeHistory(w), trace(w)).not.toContain("r.F1.1")
    expect(stored(w), trace(w)).toBe("signed out")
    expect(w.held(0)._tag, trace(w)).toBe("None")
  })

  it("with the store down, the user stays signed out and the store ends with the sign-out", () => {
    const w = world()
    w.call(0, "refresh")
    w.answerStore()
    w.step({ t: "outage", on: true })
    const signOut = w.call(0, "signOut")
    w.answerPost()
    w.advance(30 * second)
    w.step({ t: "outage", on: false })
    settleAll(w)
    // The sign-out failed (the store was down), so its tombstone is written once the store is back.
    expect(endOf(signOut), trace(w)).toBe("typed")
    expect(events(w, 0).slice(events(w, 0).indexOf("SignedOut(UserSignedOut)")), trace(w)).not.toContain(
      "Refreshed(r.F1.1)"
    )
    expect(w.held(0)._tag, trace(w)).toBe("None")
    expect(stored(w), trace(w)).toBe("signed out")
  })
})

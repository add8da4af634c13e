// Issue 20, behaviour 11: a refresh answered after a `signIn` whose save
// failed put the old user's session back on that manager for 3 to 63 s. Here
// the save timed out on a slow store that still applied it (so the store holds
// the new user's session), and the store then failed the refresh's own save:
// the manager served the old user's session, against the store, until its
// background save happened to retry. Once the store answers again, the
// manager holds what the store holds.
import { describe, expect, it } from "@effect/vitest"
import { endOf, second, stored, tokenOf, trace, world } from "./engine.js"

describe("engine 11: a refresh answered after a signIn whose save failed", () => {
  it("does not keep the old user's session against the store once the store answers", () => {
    const w = world()
    // The new user's sign-in: its save reaches a slow store.
    const signIn = w.call(0, "signIn")
    w.answerStore(0, "write")
    w.advance(5 * second)
    // The old user's refresh goes out meanwhile.
    w.call(0, "refresh")
    w.answerStore(0, "write")
    expect(w.postOut(), trace(w)).toBe(true)
    // The manager gives up on the save: the sign-in fails. The slow store applies it after all.
    w.advance(6 * second)
    expect(endOf(signIn), trace(w)).toBe("typed")
    w.answerStore()
    expect(stored(w), trace(w)).toBe("r.F2.0")
    // The store goes down as the old user's refresh is answered; twenty seconds later it is back.
    w.step({ t: "outage", on: true })
    w.answerPost()
    w.advance(20 * second)
    w.step({ t: "outage", on: false })
    w.advance(2 * second)
    w.answerStore()
    expect(tokenOf(w.held(0)), trace(w)).toBe(stored(w))
  })
})

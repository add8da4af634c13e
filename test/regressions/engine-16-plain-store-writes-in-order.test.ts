// Model checker, last-sign-in-lost (seed 1001): on a plain store
// (`SessionStore.makeKeyValueStore`, `fromSimple`), a sign-out's clear timed
// out and was retried while the first was still under way; the retry landed,
// the sign-in asked for next was saved, then the first clear landed over it:
// the user signed in and ended signed out. The revision of a plain store is
// kept in memory and checked before the save, so a save its caller stopped
// waiting for passed the check with the next. A holder's writes to a store
// no one else shares now reach it one at a time, in the order they were made.
import { describe, expect, it } from "@effect/vitest"
import { check } from "../model/invariants.js"
import { endOf, second, settleAll, stored, tokenOf, trace, world } from "./engine.js"

describe("engine 16: a plain store's slow clear, retried, then a sign-in", () => {
  it("the sign-in asked for last is what the store and the holder end with", () => {
    const w = world({ store: "plain", shared: false })
    const signOut = w.call(0, "signOut")
    // The clear does not answer within the store's timeout: the call fails, the clear is retried.
    w.advance(10 * second)
    expect(endOf(signOut), trace(w)).toBe("typed")
    // The store answers the newest of its operations first.
    w.deliver(w.readyActions().length - 1, 0)
    const signIn = w.call(0, "signIn")
    // And again: the sign-in's save, if it was sent, before the first clear.
    w.deliver(w.readyActions().length - 1, 0)
    settleAll(w)
    expect(endOf(signIn), trace(w)).toBe("value")
    const session = w.server.newest(signIn!.family!).refreshToken
    expect([tokenOf(w.held(0)), stored(w)], trace(w)).toStrictEqual([session, session])
    expect(check(w), trace(w)).toStrictEqual([])
  })
})

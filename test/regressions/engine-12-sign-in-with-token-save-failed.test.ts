// Issue 20, behaviour 12: a `signInWithRefreshToken` whose save failed was
// undone when another holder refreshed the old family. The token it sent is
// spent, so its new session is kept (and saved in the background), and the
// last sign-in wins on every holder.
import { describe, expect, it } from "@effect/vitest"
import { endOf, returned, second, settleAll, stored, tokenOf, trace, world } from "./engine.js"

describe("engine 12: a sign-in whose save failed, and another holder's refresh", () => {
  it("the sign-in's session wins on every holder and in the store", () => {
    const w = world({ holders: 2, instant: true })
    const signIn = w.call(0, "signInWithToken")
    expect(w.postOut(), trace(w)).toBe(true)
    // The store goes down as the answer arrives: the new session cannot be saved yet.
    w.step({ t: "outage", on: true })
    w.answerPost()
    w.advance(second)
    w.step({ t: "outage", on: false })
    expect(endOf(signIn), trace(w)).toBe("value")
    // B, still on the old family (F1), refreshes it.
    w.call(1, "refresh")
    if (w.postOut()) w.answerPost()
    w.deliverFeeds()
    settleAll(w)
    const session = returned(signIn)
    expect(session.startsWith("r.F2."), trace(w)).toBe(true)
    const newest = w.server.newest(w.server.grantOf(session)!.family).refreshToken
    expect([tokenOf(w.held(0)), tokenOf(w.held(1)), stored(w)], trace(w)).toStrictEqual([newest, newest, newest])
  })
})

// Issue 20, behaviour 5: two processes that start at once from the same token,
// as docs/00-first-session.md recommends (`if current is None:
// signInWithRefreshToken(env token)`), both sent it: one reuse, both signed
// out. signInWithRefreshToken compared the locked record with one it read at
// the start of the call, not with what the caller saw.
import { describe, expect, it } from "@effect/vitest"
import { endOf, settleAll, spentSent, stored, tokenOf, trace, world } from "./engine.js"

describe("engine 5: two processes start from the environment token", () => {
  it("the second takes the first one's session instead of sending the token again", () => {
    const w = world({ holders: 2, initial: "empty" })
    // A starts: nothing stored, so it signs in with the environment token.
    const a = w.call(0, "startEnv")
    w.answerStore()
    w.answerPost()
    w.answerStore()
    expect(stored(w), trace(w)).toBe("r.F0.1")
    // B started at the same time: it saw nothing either (A's write has not reached it yet).
    const b = w.call(1, "startEnv")
    w.answerStore()
    if (w.postOut()) w.answerPost()
    w.answerStore()
    settleAll(w)
    expect(w.posts.filter((p) => p.token === w.env.refreshToken).length, trace(w)).toBe(1)
    expect(spentSent(w), trace(w)).toStrictEqual([])
    expect([endOf(a), endOf(b)], trace(w)).toStrictEqual(["value", "value"])
    expect([tokenOf(w.held(0)), tokenOf(w.held(1))], trace(w)).toStrictEqual(["r.F0.1", "r.F0.1"])
  })
})

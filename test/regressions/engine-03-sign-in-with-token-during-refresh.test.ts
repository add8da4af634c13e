// Issue 20, behaviour 3: `signInWithRefreshToken` during a refresh returned
// and held the *old* user's refreshed session, and never sent the token it was
// given: its own refresh's write was taken for "another holder signed in".
import { describe, expect, it } from "@effect/vitest"
import { returned, settleAll, stored, tokenOf, trace, world } from "./engine.js"

describe("engine 3: signInWithRefreshToken during a refresh", () => {
  it("signs in with the token it was given, not with the refresh of the session it replaces", () => {
    const w = world()
    w.call(0, "refresh")
    w.answerStore()
    expect(w.postOut(), trace(w)).toBe(true)
    // A new user's token (family F2) while the old user's refresh (F1) is out.
    const signIn = w.call(0, "signInWithToken")
    w.answerStore()
    w.answerPost()
    w.answerStore()
    settleAll(w)
    expect(w.posts.map((p) => p.token), trace(w)).toContain("r.F2.0")
    expect(returned(signIn), trace(w)).toBe("r.F2.1")
    expect(tokenOf(w.held(0)), trace(w)).toBe("r.F2.1")
    expect(stored(w), trace(w)).toBe("r.F2.1")
  })
})

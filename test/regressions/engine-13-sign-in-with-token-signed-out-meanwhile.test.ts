// Issue 20, behaviour 13: `signInWithRefreshToken` died with a
// `NoSessionError` *defect* (an `Effect.orDie`) when a sign-out landed during
// its request. The sign-out wins; the call ends with a value or a typed error.
import { describe, expect, it } from "@effect/vitest"
import { endOf, settleAll, stored, tokenOf, trace, world } from "./engine.js"

describe("engine 13: a sign-out lands while signInWithRefreshToken's request is out", () => {
  it("the call ends with a value or a typed error, and the sign-out wins", () => {
    const w = world({ holders: 2, instant: true, initial: "empty" })
    const signIn = w.call(0, "signInWithToken")
    expect(w.postOut(), trace(w)).toBe(true)
    const signOut = w.call(1, "signOut")
    expect(endOf(signOut), trace(w)).toBe("value")
    w.answerPost()
    settleAll(w)
    expect(["value", "typed"], trace(w)).toContain(endOf(signIn))
    expect([tokenOf(w.held(0)), tokenOf(w.held(1)), stored(w)], trace(w)).toStrictEqual([
      "signed out",
      "signed out",
      "signed out"
    ])
  })
})

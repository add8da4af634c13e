// Model checker, holders-disagree (survey): a `signIn` whose save timed out
// failed, then a start from the environment failed too (the store could not be
// read); the save landed after all, and the holder, counting the failed start
// as a sign-in asked for since, neither held what the store now held nor wrote
// over it. A late write is superseded only by a sign-in or sign-out that took
// effect since; otherwise the holder holds what landed, as docs/05 says.
import { describe, expect, it } from "@effect/vitest"
import { check } from "../model/invariants.js"
import { endOf, second, settleAll, stored, tokenOf, trace, world } from "./engine.js"

describe("engine 17: a sign-in's save lands late, after a later start failed", () => {
  it("the holder holds what the store holds", () => {
    const w = world({ store: "plain", shared: false })
    const signOut = w.call(0, "signOut")
    w.answerStore()
    expect(endOf(signOut), trace(w)).toBe("value")
    // The sign-in's save does not answer within the store's timeout: the call fails.
    const signIn = w.call(0, "signIn")
    w.advance(10 * second)
    expect(endOf(signIn), trace(w)).toBe("typed")
    // A start from the environment token: the store cannot be read, so it fails too.
    const start = w.call(0, "startEnv")
    w.deliver(w.readyActions().findIndex((a) => a.label.startsWith("load")), 1)
    expect(endOf(start), trace(w)).toBe("typed")
    // The sign-in's save lands after all.
    settleAll(w)
    expect(stored(w), trace(w)).toBe(w.server.newest(signIn!.family!).refreshToken)
    expect(tokenOf(w.held(0)), trace(w)).toBe(stored(w))
    expect(check(w), trace(w)).toStrictEqual([])
  })
})

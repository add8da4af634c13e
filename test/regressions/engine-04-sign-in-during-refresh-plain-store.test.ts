// Issue 20, behaviour 4: `signIn` during a refresh over a plain
// `{ load, save, clear }` store (`layerKeyValueStore` included) was undone by
// the refresh: the revision check was not atomic across the async save.
import { describe, expect, it } from "@effect/vitest"
import { endOf, settleAll, stored, tokenOf, trace, world } from "./engine.js"

describe("engine 4: signIn during a refresh over a plain store", () => {
  it("the sign-in wins over the refresh that was out when it started", () => {
    // SessionStore.makeKeyValueStore over a KeyValueStore whose get/set/remove wait for the test.
    const w = world({ store: "plain", shared: false })
    w.call(0, "refresh")
    w.answerStore()
    expect(w.postOut(), trace(w)).toBe(true)
    const signIn = w.call(0, "signIn")
    // The refresh is answered while the sign-in's save is still on its way; then the store answers both, in order.
    w.answerPost()
    w.answerStore()
    settleAll(w)
    expect(endOf(signIn), trace(w)).toBe("value")
    expect(tokenOf(w.held(0)), trace(w)).toBe("r.F2.0")
    expect(stored(w), trace(w)).toBe("r.F2.0")
  })
})

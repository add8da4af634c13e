// Issue 20, behaviour 7: the pool could evict a key whose
// `signInWithRefreshToken` was in flight; a read meanwhile recreated the entry
// without the session, and reads then failed "no session" though the store
// held it. Eviction never drops a key with an operation in flight.
import { describe, expect, it } from "@effect/vitest"
import { endOf, returned, settleAll, stored, tokenOf, trace, world } from "./engine.js"

describe("engine 7: pool eviction during signInWithRefreshToken", () => {
  it("reads after the sign-in get its session, though other keys came and went meanwhile", () => {
    // A keyed store with no feed (as the in-memory one): the pool learns of a key's session only through its entry.
    const w = world({ mode: "pool", holders: 2, capacity: 1, instant: true, shared: false, initial: "empty" })
    const signIn = w.call(0, "signInWithToken")
    expect(w.postOut(), trace(w)).toBe(true)
    // Another key is read (the pool is full), then key0 again, while key0's sign-in is out.
    w.call(1, "accessToken")
    w.call(0, "accessToken")
    w.answerPost()
    settleAll(w)
    expect(endOf(signIn), trace(w)).toBe("value")
    expect(stored(w, 0), trace(w)).toBe(returned(signIn))
    const read = w.call(0, "session")
    settleAll(w)
    expect(returned(read), trace(w)).toBe(returned(signIn))
    expect(tokenOf(w.held(0)), trace(w)).toBe(returned(signIn))
  })
})

// Issue 20, behaviour 8: the pool's circuit was checked only when a refresh
// joined the queue, so queued refreshes still sent during an outage (40 users,
// 40 requests); and its pause doubled per failure rather than per trip, so one
// short outage that failed 16 concurrent refreshes paused every key for 60 s,
// and a healthy key was refused with another key's error.
import { describe, expect, it } from "@effect/vitest"
import { Cause, Exit, Option } from "effect"
import type { OpRecord } from "../model/world.js"
import { endOf, second, trace, world } from "./engine.js"

// The error an operation failed with (Effect 4 hands it on as it is: no proxy for a span).
const errorOf = (op: OpRecord | undefined): object | undefined =>
  op?.exit !== undefined && Exit.isFailure(op.exit)
    ? Option.getOrUndefined(Cause.findErrorOption(op.exit.cause)) as object | undefined
    : undefined

describe("engine 8: the pool's circuit", () => {
  it("refreshes queued behind the limit do not send once the circuit is open", () => {
    const keys = 12
    const w = world({ mode: "pool", holders: keys, instant: true, maxConcurrentRefreshes: 1 })
    w.step({ t: "server", down: true })
    for (let key = 0; key < keys; key++) w.call(key, "refresh")
    // One POST at a time, each answered 503.
    while (w.postOut()) w.answerPost()
    const sent = w.posts.length
    expect(sent, trace(w)).toBeLessThan(keys)
  })

  // Sixteen refreshes of sixteen keys fail at once: one outage, one trip of the circuit.
  const oneTrip = () => {
    const w = world({ mode: "pool", holders: 17, instant: true, maxConcurrentRefreshes: 16 })
    w.step({ t: "server", down: true })
    for (let key = 0; key < 16; key++) w.call(key, "refresh")
    while (w.postOut()) w.answerPost()
    w.step({ t: "server", down: false })
    return w
  }

  it("a key refused while the circuit is open gets an error of its own, not another key's", () => {
    const w = oneTrip()
    const refused = w.call(16, "refresh")
    if (w.postOut()) w.answerPost()
    const error = errorOf(refused)
    const owner = error === undefined ? undefined : w.errorKeys.get(error)
    expect(owner === undefined || owner === "key16", `key16 got ${owner}'s error${trace(w)}`).toBe(true)
  })

  it("one short outage does not pause every key for a minute: ten seconds later a healthy key refreshes", () => {
    const w = oneTrip()
    w.advance(10 * second)
    const before = w.posts.length
    const refreshed = w.call(16, "refresh")
    if (w.postOut()) w.answerPost()
    expect(w.posts.length, trace(w)).toBeGreaterThan(before)
    expect(endOf(refreshed), trace(w)).toBe("value")
  })
})

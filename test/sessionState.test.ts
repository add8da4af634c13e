// The rules of a managed session, called directly: no clock, no layer, no fiber.
import { describe, expect, it } from "@effect/vitest"
import { RefreshError, Session, SessionStore } from "moon-refresh"
import * as State from "../src/internal/sessionState.js"

const second = 1_000
const config: State.Config = {
  margin: 60 * second,
  autoRefresh: true,
  cooldown: 10 * second,
  maxCooldown: 300 * second
}

const sessionAt = (name: string, expiresAt: number) =>
  Session.unsafeMake({ accessToken: `access-${name}`, refreshToken: `refresh-${name}`, expiresAt, user: { id: "u" } })

const held = State.initial(sessionAt("a", 3_600 * second))
const serverDown = new RefreshError.ServerError({ status: 503, message: "down" })
const rejected = new RefreshError.TokenRejectedError({ status: 500, message: "Invalid Refresh Token: Already Used" })

describe("freshness", () => {
  it("a token is fresh until expiresAt - margin, usable until expiresAt", () => {
    const freshEnd = 3_600 * second - config.margin
    expect(State.freshUntil(held, config)).toBe(freshEnd)
    expect(State.isFresh(held, freshEnd - 1, config)).toBe(true)
    expect(State.isFresh(held, freshEnd, config)).toBe(false)
    expect(State.isUsable(held, freshEnd)).toBe(true)
    expect(State.isUsable(held, 3_600 * second)).toBe(false)
  })

  it("without a session nothing is fresh or usable, at any time", () => {
    const none = State.initial(undefined)
    expect(State.freshUntil(none, config)).toBe(-Infinity)
    expect(State.isFresh(none, -1e15, config)).toBe(false)
    expect(State.isUsable(none, -1e15)).toBe(false)
  })
})

describe("failures and the cooldown", () => {
  it("the cooldown doubles with each failure in a row, up to maxCooldown", () => {
    expect([1, 2, 3, 4, 5, 6, 7, 20].map((n) => State.cooldownFor(n, config))).toStrictEqual([
      10_000,
      20_000,
      40_000,
      80_000,
      160_000,
      300_000,
      300_000,
      300_000
    ])
  })

  it("a failure keeps the session, counts, and cools down from now", () => {
    const once = State.transition(held, State.Event.Failed({ error: serverDown }), 1_000, config)
    expect(once.session).toBe(held.session)
    expect(once.generation).toBe(held.generation)
    expect(once.failures).toBe(1)
    expect(once.cooldownUntil).toBe(11_000)
    expect(once.lastError).toBe(serverDown)
    const twice = State.transition(once, State.Event.Failed({ error: serverDown }), 20_000, config)
    expect(twice.cooldownUntil).toBe(40_000)
    expect(State.inCooldown(twice, 39_999)).toBe(true)
    expect(State.inCooldown(twice, 40_000)).toBe(false)
  })

  it("a success after failures starts clean: no failures, no cooldown, a new generation", () => {
    const failed = State.transition(held, State.Event.Failed({ error: serverDown }), 0, config)
    const next = sessionAt("b", 7_200 * second)
    const refreshed = State.transition(failed, State.Event.Refreshed({ session: next, saved: true }), 5_000, config)
    expect(refreshed).toMatchObject({ session: next, failures: 0, cooldownUntil: 0, unsaved: false })
    expect(refreshed.lastError).toBeUndefined()
    expect(refreshed.generation).toBe(failed.generation + 1)
  })
})

describe("changes of session", () => {
  it("a refresh whose save failed is marked unsaved until the save of that generation succeeds", () => {
    const next = sessionAt("b", 7_200 * second)
    const unsaved = State.transition(held, State.Event.Refreshed({ session: next, saved: false }), 0, config)
    expect(unsaved.unsaved).toBe(true)
    // A save of an older generation changes nothing.
    expect(State.transition(unsaved, State.Event.Saved({ generation: held.generation }), 0, config)).toBe(unsaved)
    expect(State.transition(unsaved, State.Event.Saved({ generation: unsaved.generation }), 0, config).unsaved).toBe(
      false
    )
  })

  it("adopting another holder's session replaces ours, as a refresh would", () => {
    const theirs = sessionAt("theirs", 7_200 * second)
    const adopted = State.transition(held, State.Event.Adopted({ session: theirs }), 0, config)
    expect(adopted.session).toBe(theirs)
    expect(adopted.expiresAt).toBe(7_200 * second)
    expect(adopted.generation).toBe(held.generation + 1)
  })

  it("a rejected token ends the session with the reason, and reads say why", () => {
    const out = State.transition(held, State.Event.Rejected({ error: rejected }), 0, config)
    expect(out.session).toBeUndefined()
    expect(out.signedOut?._tag).toBe("TokenRejected")
    expect(State.noSessionMessage(out)).toBe(
      "no session: the refresh token was rejected (Invalid Refresh Token: Already Used)"
    )
  })

  it("signing out ends the session; signing in again clears the reason", () => {
    const out = State.transition(held, State.Event.SignedOut(), 0, config)
    expect(out.session).toBeUndefined()
    expect(State.noSessionMessage(out)).toBe("no session: signed out")
    const back = State.transition(out, State.Event.SignedIn({ session: sessionAt("c", 1) }), 0, config)
    expect(back.signedOut).toBeUndefined()
    expect(back.generation).toBe(out.generation + 1)
    expect(State.noSessionMessage(State.initial(undefined))).toBe("no session: sign in first")
  })

  it("a store error is a failure like any transient one", () => {
    const lock = new SessionStore.StoreError({ operation: "lock", message: "lock timed out" })
    const failed = State.transition(held, State.Event.Failed({ error: lock }), 0, config)
    expect(failed.session).toBe(held.session)
    expect(failed.cooldownUntil).toBe(10_000)
  })

  it("a stored session is newer only when it expires later than ours", () => {
    const ours = sessionAt("ours", 10_000)
    expect(State.isNewer(sessionAt("later", 10_001), ours)).toBe(true)
    expect(State.isNewer(sessionAt("same", 10_000), ours)).toBe(false)
    expect(State.isNewer(sessionAt("older", 9_999), ours)).toBe(false)
  })
})

describe("the proactive refresh", () => {
  it("is due at expiresAt - margin, never inside a cooldown, and not at all without a session or autoRefresh", () => {
    expect(State.proactiveAt(held, config)).toBe(3_540 * second)
    const cooling = { ...held, cooldownUntil: 3_550 * second }
    expect(State.proactiveAt(cooling, config)).toBe(3_550 * second)
    expect(State.proactiveAt(State.initial(undefined), config)).toBeUndefined()
    expect(State.proactiveAt(held, { ...config, autoRefresh: false })).toBeUndefined()
  })
})

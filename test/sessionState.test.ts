// The rules of a managed session, called directly: no clock, no layer, no fiber.
import { describe, expect, it } from "@effect/vitest"
import { Duration, Option } from "effect"
import { RefreshError, Session, SessionStore } from "moon-refresh"
import * as State from "../src/internal/sessionState.js"

const second = 1_000
const config: State.Config = {
  margin: 60 * second,
  autoRefresh: true,
  cooldown: 10 * second,
  maxCooldown: 300 * second,
  minInterval: 30 * second
}

const sessionAt = (name: string, expiresAt: number) =>
  Session.unsafeMake({ accessToken: `access-${name}`, refreshToken: `refresh-${name}`, expiresAt, user: { id: "u" } })

/** A session signed in or loaded: lifetime unknown, no spread, record revision 1. */
const loaded: State.Arrival = { at: undefined, jitter: 0, revision: 1 }
const held = State.initial(sessionAt("a", 3_600 * second), config, loaded)
const serverDown = new RefreshError.ServerError({ status: 503, message: "down" })
const rejected = new RefreshError.TokenRejectedError({ status: 500, message: "Invalid Refresh Token: Already Used" })

describe("freshness", () => {
  it("a token is fresh until expiresAt - margin, usable until expiresAt", () => {
    const freshEnd = 3_600 * second - config.margin
    expect(State.freshUntil(held)).toBe(freshEnd)
    expect(State.isFresh(held, freshEnd - 1)).toBe(true)
    expect(State.isFresh(held, freshEnd)).toBe(false)
    expect(State.isUsable(held, freshEnd)).toBe(true)
    expect(State.isUsable(held, 3_600 * second)).toBe(false)
  })

  it("without a session nothing is fresh or usable, at any time", () => {
    const none = State.initial(undefined, config)
    expect(State.freshUntil(none)).toBe(-Infinity)
    expect(State.isFresh(none, -1e15)).toBe(false)
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
    const refreshed = State.transition(
      failed,
      State.Event.Refreshed({ session: next, saved: true, arrival: loaded }),
      5_000,
      config
    )
    expect(refreshed).toMatchObject({ session: next, failures: 0, cooldownUntil: 0, unsaved: false })
    expect(refreshed.lastError).toBeUndefined()
    expect(refreshed.generation).toBe(failed.generation + 1)
  })
})

describe("changes of session", () => {
  it("a refreshed session's expiry decides its refresh time, as for a loaded one", () => {
    const next = sessionAt("b", 7_200 * second)
    const refreshed = State.transition(
      held,
      State.Event.Refreshed({ session: next, saved: true, arrival: loaded }),
      0,
      config
    )
    expect(refreshed.refreshAt).toBe(7_200 * second - config.margin)
  })

  it("a refresh whose save failed is marked unsaved until the save of that generation succeeds", () => {
    const next = sessionAt("b", 7_200 * second)
    const unsaved = State.transition(
      held,
      State.Event.Refreshed({ session: next, saved: false, arrival: loaded }),
      0,
      config
    )
    expect(unsaved.unsaved).toBe(true)
    // A save of an older generation changes nothing.
    expect(State.transition(unsaved, State.Event.Saved({ generation: held.generation, revision: 2 }), 0, config)).toBe(
      unsaved
    )
    expect(
      State.transition(unsaved, State.Event.Saved({ generation: unsaved.generation, revision: 2 }), 0, config).unsaved
    ).toBe(
      false
    )
  })

  it("adopting another holder's session replaces ours, as a refresh would", () => {
    const theirs = sessionAt("theirs", 7_200 * second)
    const adopted = State.transition(
      held,
      State.Event.Adopted({ session: theirs, arrival: { at: 0, jitter: 0, revision: 7 } }),
      0,
      config
    )
    expect(adopted.session).toBe(theirs)
    expect(adopted.expiresAt).toBe(7_200 * second)
    expect(adopted.generation).toBe(held.generation + 1)
  })

  it("a rejected token ends the session with the reason, and reads say why", () => {
    const out = State.transition(held, State.Event.Rejected({ error: rejected, revision: 2 }), 0, config)
    expect(out.session).toBeUndefined()
    expect(out.signedOut?._tag).toBe("TokenRejected")
    expect(State.noSessionMessage(out)).toBe(
      "no session: the refresh token was rejected (Invalid Refresh Token: Already Used)"
    )
  })

  it("signing out ends the session; signing in again clears the reason", () => {
    const out = State.transition(held, State.Event.SignedOut({ revision: 2, elsewhere: false }), 0, config)
    expect(out.session).toBeUndefined()
    expect(State.noSessionMessage(out)).toBe("no session: signed out")
    const back = State.transition(out, State.Event.SignedIn({ session: sessionAt("c", 1), arrival: loaded }), 0, config)
    expect(back.signedOut).toBeUndefined()
    expect(back.generation).toBe(out.generation + 1)
    expect(State.noSessionMessage(State.initial(undefined, config))).toBe("no session: sign in first")
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
    expect(State.proactiveAt(State.initial(undefined, config), config)).toBeUndefined()
    expect(State.proactiveAt(held, { ...config, autoRefresh: false })).toBeUndefined()
  })
})

describe("when to refresh (the loop guard)", () => {
  const received = (at: number, jitter = 0) => ({ at, jitter, revision: 1 })

  it("a session signed in or loaded refreshes at expiresAt - margin, whatever its lifetime", () => {
    expect(State.refreshAtFor(61 * second, loaded, config)).toBe(1 * second)
  })

  it("a received token that is already inside the margin is refreshed after half its life, not at once", () => {
    // 30-second tokens with the default 60-second margin: the margin is cut to 15 s,
    // and the minimum interval (30 s) pushes the refresh to a second before expiry.
    expect(State.refreshAtFor(30 * second, received(0), config)).toBe(29 * second)
    // Without a minimum interval: half the lifetime.
    expect(State.refreshAtFor(30 * second, received(0), { ...config, minInterval: 0 })).toBe(15 * second)
  })

  it("a margin larger than the lifetime never gives a refresh at receipt", () => {
    for (const lifetime of [1, 10, 999, 1_000, 1_500, 2_000, 5_000, 59_000]) {
      const at = State.refreshAtFor(1_000_000 + lifetime, received(1_000_000), config)
      expect(at).toBeGreaterThan(1_000_000)
      expect(at).toBeLessThanOrEqual(1_000_000 + lifetime)
    }
  })

  it("the minimum interval spaces refreshes but a refresh still starts a second before expiry", () => {
    const short = { ...config, margin: 5 * second }
    // 20-second tokens, 5-second margin: planned at 15 s, spaced to 30 s, capped at 19 s.
    expect(State.refreshAtFor(20 * second, received(0), short)).toBe(19 * second)
    // Long tokens are not affected.
    expect(State.refreshAtFor(3_600 * second, received(0), config)).toBe(3_540 * second)
  })

  it("the jitter moves the refresh later by up to half the margin", () => {
    const spread = { ...config, minInterval: 0 }
    expect(State.refreshAtFor(3_600 * second, received(0, 0), spread)).toBe(3_540 * second)
    expect(State.refreshAtFor(3_600 * second, received(0, 0.5), spread)).toBe(3_555 * second)
    expect(State.refreshAtFor(3_600 * second, received(0, 0.999), spread)).toBeLessThan(3_570 * second)
  })

  it("an hour of 30-second tokens under the default options is about 120 refreshes, never thousands", () => {
    let now = 0
    let refreshes = 0
    while (now < 3_600 * second) {
      now = State.refreshAtFor(now + 30 * second, received(now), config)
      refreshes++
    }
    expect(refreshes).toBeGreaterThanOrEqual(120)
    expect(refreshes).toBeLessThanOrEqual(125)
  })
})

describe("Retry-After and refused answers", () => {
  it("the cooldown is at least the server's Retry-After", () => {
    const limited = new RefreshError.RateLimitedError({
      status: 429,
      retryAfter: Option.some(Duration.hours(1)),
      message: "slow down"
    })
    const next = State.transition(held, State.Event.Failed({ error: limited }), 0, config)
    expect(next.cooldownUntil).toBe(3_600 * second)
    expect(State.pauseAfter(limited, 1, config)).toBe(3_600 * second)
    // A short Retry-After does not shorten the cooldown.
    const brief = new RefreshError.RateLimitedError({
      status: 429,
      retryAfter: Option.some(Duration.seconds(1)),
      message: ""
    })
    expect(State.pauseAfter(brief, 1, config)).toBe(10 * second)
  })

  it("a refused answer that rotated keeps the new refresh token, the old access token, and cools down", () => {
    const rotated = Session.unsafeMake({
      accessToken: "access-a",
      refreshToken: "refresh-rotated",
      expiresAt: 3_600 * second,
      user: { id: "u" }
    })
    const malformed = new RefreshError.MalformedResponseError({
      status: 200,
      message: "expires_in is not in the future"
    })
    const next = State.transition(
      held,
      State.Event.Failed({ error: malformed, rotated: { session: rotated, saved: true, arrival: loaded } }),
      100 * second,
      config
    )
    expect(next.session).toBe(rotated)
    expect(next.failures).toBe(1)
    expect(next.cooldownUntil).toBe(110 * second)
    // Due for a refresh at once: not fresh, but still usable until it expires.
    expect(State.isFresh(next, 100 * second)).toBe(false)
    expect(State.isUsable(next, 100 * second)).toBe(true)
    expect(State.proactiveAt(next, config)).toBe(110 * second)
  })
})

describe("a store shared with other holders", () => {
  const record = (revision: number, session?: Session.Session) => ({ revision, session: Option.fromNullable(session) })
  const mine = held.session!

  it("the record at our revision: refresh our session, fenced on that revision", () => {
    expect(State.plan(held, mine, record(1, mine), 0, config)).toStrictEqual(
      State.Plan.Refresh({ base: mine, expected: 1 })
    )
  })

  it("a later revision holding a fresh session: take it, no request", () => {
    const theirs = sessionAt("theirs", 7_200 * second)
    expect(State.plan(held, mine, record(2, theirs), 3_000 * second, config)).toStrictEqual(
      State.Plan.Adopt({ session: theirs, revision: 2 })
    )
  })

  it("a later revision holding a session within the margin: refresh its token (ours is spent)", () => {
    const theirs = sessionAt("theirs", 3_600 * second)
    expect(State.plan(held, mine, record(2, theirs), 3_570 * second, config)).toStrictEqual(
      State.Plan.Refresh({ base: theirs, expected: 2 })
    )
  })

  it("a later revision holding a sign-out: follow it, no request", () => {
    expect(State.plan(held, mine, record(5), 0, config)).toStrictEqual(State.Plan.FollowSignOut({ revision: 5 }))
  })

  it("an earlier revision (the store lost its record): refresh ours and write it back over that revision", () => {
    expect(State.plan(held, mine, record(0), 0, config)).toStrictEqual(State.Plan.Refresh({ base: mine, expected: 0 }))
  })

  it("a plain store at our revision holding a session that expires later: written from outside, taken", () => {
    const outside = sessionAt("outside", 7_200 * second)
    expect(State.plan(held, mine, record(1, outside), 0, config)).toStrictEqual(
      State.Plan.Adopt({ session: outside, revision: 1 })
    )
  })

  it("an unsaved session refreshes over the revision it replaces, whatever the store holds", () => {
    const unsaved = { ...held, unsaved: true }
    const older = sessionAt("older-but-later", 7_200 * second)
    expect(State.plan(unsaved, mine, record(1, older), 0, config)).toStrictEqual(
      State.Plan.Refresh({ base: mine, expected: 1 })
    )
  })

  it("the change feed: a later revision is another holder's write; ours and older ones are ignored", () => {
    expect(State.onChange(held, record(1, mine))).toBe("ignore")
    expect(State.onChange(held, record(0))).toBe("ignore")
    expect(State.onChange(held, record(2, sessionAt("b", 1)))).toBe("adopt")
    expect(State.onChange(held, record(2))).toBe("signOut")
    // Already signed out: another sign-out changes nothing.
    expect(State.onChange(State.initial(undefined, config, loaded), record(2))).toBe("ignore")
  })

  it("a sign-out from another holder ends the session with its own reason and message", () => {
    const out = State.transition(held, State.Event.SignedOut({ revision: 3, elsewhere: true }), 0, config)
    expect(out.signedOut?._tag).toBe("SignedOutElsewhere")
    expect(out.revision).toBe(3)
    expect(State.noSessionMessage(out)).toBe("no session: signed out by another holder of the session store")
  })

  it("the spread moves a loaded session's refresh later by up to half the margin", () => {
    expect(State.refreshAtFor(3_600 * second, { at: undefined, jitter: 0.5, revision: 1 }, config)).toBe(
      3_555 * second
    )
  })
})

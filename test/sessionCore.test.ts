// The session engine's decisions, called directly: no clock, no layer, no
// fiber. Each case is a state, an input (or a few), and what must come out:
// the next state and the commands, in order.
import { describe, expect, it } from "@effect/vitest"
import { Duration, Exit, Option, Redacted } from "effect"
import { RefreshError, Session, SessionStore } from "moon-refresh"
import * as Core from "../src/internal/session/core.js"
import * as Rules from "../src/internal/session/rules.js"

const second = 1_000
const config: Rules.Config = {
  margin: 60 * second,
  autoRefresh: true,
  cooldown: 10 * second,
  maxCooldown: 300 * second,
  minInterval: 30 * second,
  saveBound: 30 * second,
  spread: true
}
const manual: Rules.Config = { ...config, autoRefresh: false }

const sessionAt = (name: string, expiresAt: number, issuedAt?: number) =>
  Session.unsafeMake({
    accessToken: `access-${name}`,
    refreshToken: `refresh-${name}`,
    expiresAt,
    user: { id: "u" },
    issuedAt
  })

const record = (revision: number, session?: Session.Session): SessionStore.Stored => ({
  revision,
  session: Option.fromUndefinedOr(session)
})

/** A session signed in or loaded (lifetime unknown), at revision 1. */
const a = sessionAt("a", 3_600 * second)
const loaded = (cfg: Rules.Config = manual, session: Session.Session = a, revision = 1) =>
  Core.initial(record(revision, session), 0, 0, cfg)
/** Nothing stored yet. */
const empty = Core.initial(record(0), 0, 0, manual)
const serverDown = new RefreshError.ServerError({ status: 503, message: "down" })
const rejected = new RefreshError.TokenRejectedError({ status: 500, message: "Invalid Refresh Token: Already Used" })
const storeDown = new SessionStore.StoreError({ operation: "save", message: "disk full" })

/** Runs inputs in order; every command they gave, by tag. */
const run = (state: Core.State, inputs: ReadonlyArray<Core.Input>, cfg: Rules.Config = manual) => {
  const commands: Array<Core.Command> = []
  let awaits: number | undefined
  for (const input of inputs) {
    const decision = Core.decide(state, input, cfg)
    state = decision.state
    commands.push(...decision.commands)
    awaits = decision.awaits
  }
  return { state, commands, awaits }
}

const tags = (commands: ReadonlyArray<Core.Command>) =>
  commands.filter((command) => command._tag !== "Arm" && command._tag !== "Log").map((command) => command._tag)

const resolved = (commands: ReadonlyArray<Core.Command>, op: number) =>
  commands.flatMap((command) => command._tag === "Resolve" && command.op === op ? [command.exit] : [])

const published = (commands: ReadonlyArray<Core.Command>) =>
  commands.flatMap((command) => command._tag === "Publish" ? [command.event._tag] : [])

const writes = (commands: ReadonlyArray<Core.Command>) =>
  commands.flatMap((command) => command._tag === "Write" ? [command] : [])

const read = (op: number, now: number): Core.Input => ({ _tag: "Demand", op, now, kind: "read" })
const refresh = (op: number, now: number): Core.Input => ({ _tag: "Demand", op, now, kind: "refresh" })
const locked = (op: number, now: number, stored: SessionStore.Stored): Core.Input => ({
  _tag: "Locked",
  op,
  now,
  stored
})
const answered = (op: number, now: number, exit: Exit.Exit<Session.Session, Rules.Failure>): Core.Input => ({
  _tag: "Answered",
  op,
  now,
  exit
})
const wrote = (id: number, now: number, result: Core.WriteResult): Core.Input => ({ _tag: "Wrote", id, now, result })
const written = (revision: number, session?: Session.Session): Core.WriteResult => ({
  _tag: "Written",
  stored: record(revision, session)
})

/** A refresh of `a` at `now` up to its answer: the read, the lock, the record at revision 1, the POST. */
const refreshUpTo = (state: Core.State, op: number, now: number, stored = record(1, a)) =>
  run(state, [refresh(op, now), locked(op, now, stored)])

/** The id of the write the commands started. */
const writeId = (commands: ReadonlyArray<Core.Command>) => writes(commands).at(-1)!.id

describe("freshness", () => {
  it("a token is fresh until expiresAt - margin, usable until expiresAt", () => {
    const state = loaded()
    const freshEnd = 3_600 * second - config.margin
    expect(Core.freshUntil(state)).toBe(freshEnd)
    expect(tags(run(state, [read(1, freshEnd - 1)]).commands)).toStrictEqual(["Resolve"])
    expect(tags(run(state, [read(1, freshEnd)]).commands)).toStrictEqual(["Lock"])
    expect(Core.isUsable(state, freshEnd)).toBe(true)
    expect(Core.isUsable(state, 3_600 * second)).toBe(false)
  })

  it("without a session nothing is fresh or usable, and a read fails at once without a request", () => {
    const none = empty
    expect(Core.freshUntil(none)).toBe(-Infinity)
    expect(Core.isUsable(none, -1e15)).toBe(false)
    const { commands } = run(none, [read(1, 0)])
    expect(tags(commands)).toStrictEqual(["Resolve"])
    expect(resolved(commands, 1)[0]).toStrictEqual(Exit.fail(Core.noSession(none)))
    expect(Core.noSession(none).message).toBe("no session: sign in first")
  })
})

describe("single flight", () => {
  it("a read while a refresh is out joins it when the token is expired, and gets the old one while it lasts", () => {
    const { state } = run(loaded(), [refresh(1, 3_599 * second)])
    expect(run(state, [read(2, 3_599 * second)]).awaits).toBe(2)
    expect(tags(run(state, [read(2, 3_599 * second)]).commands)).toStrictEqual(["Resolve"])
    const expired = run(state, [read(2, 3_600 * second)])
    expect(expired.awaits).toBe(1)
    expect(tags(expired.commands)).toStrictEqual([])
  })

  it("joinedRead (a stampede's callers skip their decision) names the flight exactly where a read's decision only joins it", () => {
    // Where `joinedRead` answers, a read's decision must wait for that op and do nothing else;
    // where it does not, the cell decides as usual.
    const agrees = (state: Core.State, now: number) => {
      const joined = Core.joinedRead(state, now)
      const decision = Core.decide(state, read(state.nextId, now), manual)
      if (joined !== undefined) {
        expect(decision.awaits).toBe(joined)
        expect(tags(decision.commands)).toStrictEqual([])
        expect(decision.state).toStrictEqual(state)
      }
      return joined
    }
    const expiry = 3_600 * second
    const locking = run(loaded(), [refresh(1, expiry - second)]).state
    const posting = refreshUpTo(loaded(), 1, expiry - second).state
    // Expired, a refresh waiting for the lock or sent: joined.
    expect(agrees(locking, expiry)).toBe(1)
    expect(agrees(posting, expiry + second)).toBe(1)
    // Still valid during the refresh: the read is answered with it at once, by a decision.
    expect(agrees(locking, expiry - 1)).toBeUndefined()
    // No refresh under way, or no session: decided.
    expect(agrees(loaded(), expiry)).toBeUndefined()
    expect(agrees(empty, expiry)).toBeUndefined()
    // The answer came back (the session it carries is being saved): nothing left to join.
    const answeredState = run(posting, [answered(1, expiry, Exit.succeed(sessionAt("b", 7_200 * second)))]).state
    expect(agrees(answeredState, expiry)).toBeUndefined()
  })
})

describe("failures and the cooldown", () => {
  it("the cooldown doubles with each failure in a row, up to maxCooldown", () => {
    expect([1, 2, 3, 4, 5, 6, 7, 20].map((n) => Rules.cooldownFor(n, config))).toStrictEqual([
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

  it("a failure keeps the session, counts, and cools down from now; reads in the cooldown send nothing", () => {
    const first = refreshUpTo(loaded(), 1, 0)
    const once = run(first.state, [answered(1, 1_000, Exit.fail(serverDown))])
    expect(Core.sessionOf(once.state)).toBe(a)
    expect(once.state).toMatchObject({ failures: 1, cooldownUntil: 11_000, lastError: serverDown })
    expect(published(once.commands)).toStrictEqual(["RefreshFailed"])
    expect(resolved(once.commands, 1)).toStrictEqual([Exit.fail(serverDown)])
    const twice = run(once.state, [
      refresh(2, 20_000),
      locked(2, 20_000, record(1, a)),
      answered(2, 20_000, Exit.fail(serverDown))
    ])
    expect(twice.state.cooldownUntil).toBe(40_000)
    // Within the cooldown: the still-valid token to a read, the failure to a refresh; no lock, no request.
    expect(tags(run(twice.state, [read(3, 39_999)]).commands)).toStrictEqual(["Resolve"])
    expect(resolved(run(twice.state, [refresh(3, 39_999)]).commands, 3)).toStrictEqual([Exit.fail(serverDown)])
    expect(tags(run(twice.state, [refresh(3, 40_000)]).commands)).toStrictEqual(["Lock"])
  })

  it("a success after failures starts clean: no failures, no cooldown", () => {
    const failed = run(loaded(), [refresh(1, 0), locked(1, 0, record(1, a)), answered(1, 0, Exit.fail(serverDown))])
    const b = sessionAt("b", 7_200 * second, 20_000)
    const saved = run(failed.state, [
      refresh(2, 20_000),
      locked(2, 20_000, record(1, a)),
      answered(2, 20_000, Exit.succeed(b))
    ])
    const done = run(saved.state, [wrote(writeId(saved.commands), 20_000, written(2, b))])
    expect(Core.sessionOf(done.state)).toBe(b)
    expect(done.state).toMatchObject({ failures: 0, cooldownUntil: 0, lastError: undefined, revision: 2, own: 2 })
  })

  it("the cooldown is at least the server's Retry-After", () => {
    const limited = new RefreshError.RateLimitedError({
      status: 429,
      retryAfter: Option.some(Duration.minutes(30)),
      message: "slow down"
    })
    expect(Rules.pauseAfter(limited, 1, config)).toBe(1_800_000)
    expect(Rules.pauseAfter(serverDown, 1, config)).toBe(10_000)
    const { state } = run(loaded(), [refresh(1, 0), locked(1, 0, record(1, a)), answered(1, 0, Exit.fail(limited))])
    expect(state.cooldownUntil).toBe(1_800_000)
  })
})

describe("the store failing is not the server failing", () => {
  it("a lock not granted: no cooldown of the server; a valid token is handed out, an expired read tries at once", () => {
    const { commands, state } = run(loaded(), [refresh(1, 3_599 * second), {
      _tag: "LockFailed",
      op: 1,
      now: 3_599 * second,
      error: storeDown
    }])
    expect(resolved(commands, 1)).toStrictEqual([Exit.fail(storeDown)])
    expect(published(commands)).toStrictEqual(["RefreshFailed"])
    expect(state).toMatchObject({ cooldownUntil: 0, lastError: undefined, storeFailures: 1 })
    // Still valid: handed out without waiting on the store again.
    expect(tags(run(state, [read(2, 3_599 * second + 1)]).commands)).toStrictEqual(["Resolve"])
    // Expired: the store is tried again at once (it may be back), not after a cooldown.
    expect(tags(run(state, [read(2, 3_600 * second)]).commands)).toStrictEqual(["Lock"])
  })

  it("the proactive refresh waits the cooldown before it tries the store again", () => {
    const { state } = run(loaded(config), [{ _tag: "Tick", now: 3_540 * second }, {
      _tag: "LockFailed",
      op: 1,
      now: 3_540 * second,
      error: storeDown
    }], config)
    expect(state.flight).toBeUndefined()
    expect(tags(run(state, [{ _tag: "Tick", now: 3_549 * second }], config).commands)).toStrictEqual([])
    expect(tags(run(state, [{ _tag: "Tick", now: 3_550 * second }], config).commands)).toStrictEqual(["Lock"])
  })
})

describe("a rotation is saved before it is used", () => {
  it("the answer is written fenced on the revision read under the lock, then used, then the lock goes", () => {
    const b = sessionAt("b", 7_200 * second, 0)
    const posted = refreshUpTo(loaded(), 1, 0)
    expect(posted.commands.filter((c) => c._tag === "Post")).toHaveLength(1)
    const answer = run(posted.state, [answered(1, 0, Exit.succeed(b))])
    expect(tags(answer.commands)).toStrictEqual(["Write"])
    expect(writes(answer.commands)[0]).toMatchObject({ expected: 1, overwrite: false })
    expect(Core.sessionOf(answer.state)).toBe(a)
    const saved = run(answer.state, [wrote(writeId(answer.commands), 0, written(2, b))])
    expect(tags(saved.commands)).toStrictEqual(["Publish", "Resolve", "Release"])
    expect(Core.sessionOf(saved.state)).toBe(b)
  })

  it("a failed save: the session is used (its token is spent), SaveFailed, and the lock is kept while the save is retried", () => {
    const b = sessionAt("b", 7_200 * second, 0)
    const answer = run(refreshUpTo(loaded(), 1, 0).state, [answered(1, 0, Exit.succeed(b))])
    const failed = run(answer.state, [wrote(writeId(answer.commands), 0, { _tag: "Failed", error: storeDown })])
    expect(published(failed.commands)).toStrictEqual(["Refreshed", "SaveFailed"])
    expect(resolved(failed.commands, 1)).toStrictEqual([Exit.succeed(b)])
    expect(Core.sessionOf(failed.state)).toBe(b)
    // Retried at once, still under the lock.
    expect(tags(failed.commands)).toContain("Write")
    expect(tags(failed.commands)).not.toContain("Release")
    const again = run(failed.state, [wrote(writeId(failed.commands), 100, { _tag: "Failed", error: storeDown })])
    expect(tags(again.commands)).toStrictEqual([])
    expect(again.state.owed).toMatchObject({ failures: 2, retryAt: 200 })
    // Saved at last: the lock goes.
    const later = run(again.state, [{ _tag: "Tick", now: 200 }])
    const landed = run(later.state, [wrote(writeId(later.commands), 200, written(2, b))])
    expect(tags(landed.commands)).toStrictEqual(["Release"])
    expect(landed.state.owed).toBeUndefined()
  })

  it("past the save bound, once a try of the save has failed there, the lock goes (logged as an error) and the save goes on in the background", () => {
    const b = sessionAt("b", 7_200 * second, 0)
    const answer = run(refreshUpTo(loaded(), 1, 0).state, [answered(1, 0, Exit.succeed(b))])
    const failed = run(answer.state, [wrote(writeId(answer.commands), 0, { _tag: "Failed", error: storeDown })])
    const retried = run(failed.state, [wrote(writeId(failed.commands), 100, { _tag: "Failed", error: storeDown })])
    // At the bound a try is due: it is made first, still under the lock.
    const due = run(retried.state, [{ _tag: "Tick", now: 30 * second }])
    expect(tags(due.commands)).toStrictEqual(["Write"])
    const bound = run(due.state, [wrote(writeId(due.commands), 30 * second, { _tag: "Failed", error: storeDown })])
    expect(tags(bound.commands)).toContain("Release")
    expect(bound.commands.some((c) => c._tag === "Log" && c.level === "Error")).toBe(true)
    expect(bound.state.owed?.record).toStrictEqual(Option.some(b))
  })

  it("a store of one holder lets the lock go once the callers have their answer", () => {
    const single = { ...manual, spread: false }
    const b = sessionAt("b", 7_200 * second, 0)
    const answer = run(refreshUpTo(loaded(single), 1, 0).state, [answered(1, 0, Exit.succeed(b))], single)
    const failed = run(answer.state, [wrote(writeId(answer.commands), 0, { _tag: "Failed", error: storeDown })], single)
    expect(tags(failed.commands)).toContain("Release")
  })
})

describe("a rejected token", () => {
  it("signs out with the reason once the sign-out is saved; reads say why", () => {
    const answer = run(refreshUpTo(loaded(), 1, 0).state, [answered(1, 0, Exit.fail(rejected))])
    expect(writes(answer.commands)[0]).toMatchObject({ record: Option.none(), expected: 1, overwrite: false })
    const saved = run(answer.state, [wrote(writeId(answer.commands), 0, written(2))])
    expect(published(saved.commands)).toStrictEqual(["SignedOut"])
    expect(resolved(saved.commands, 1)).toStrictEqual([Exit.fail(rejected)])
    expect(Core.sessionOf(saved.state)).toBeUndefined()
    expect(Core.noSession(saved.state).message).toContain("the refresh token was rejected")
  })

  it("does not sign out over a newer session another holder wrote", () => {
    const theirs = sessionAt("theirs", 7_200 * second)
    const answer = run(refreshUpTo(loaded(), 1, 0).state, [answered(1, 0, Exit.fail(rejected))])
    const conflict = run(answer.state, [wrote(writeId(answer.commands), 0, {
      _tag: "Conflict",
      stored: Option.some(record(2, theirs))
    })])
    expect(Core.sessionOf(conflict.state)).toBe(theirs)
    expect(published(conflict.commands)).toStrictEqual(["Refreshed"])
    expect(tags(conflict.commands)).toContain("Release")
  })
})

describe("refused answers", () => {
  it("a refused answer that rotated keeps the new refresh token, the old access token, and cools down", () => {
    const refused = new RefreshError.MalformedResponseError({
      status: 200,
      message: "missing field expires_in",
      rotatedRefreshToken: Redacted.make("refresh-rotated")
    })
    const answer = run(refreshUpTo(loaded(), 1, 0).state, [answered(1, 0, Exit.fail(refused))])
    const saved = run(answer.state, [wrote(writeId(answer.commands), 0, written(2))])
    const held = Core.sessionOf(saved.state)!
    expect(held.accessToken).toBe(a.accessToken)
    expect(saved.state).toMatchObject({ failures: 1, cooldownUntil: 10_000, lastError: refused })
    expect(resolved(saved.commands, 1)).toStrictEqual([Exit.fail(refused)])
  })
})

describe("when to refresh (the loop guard)", () => {
  const at = (kind: Rules.Arrival["kind"], jitter = 0, issuedAt?: number): Rules.Arrival => ({
    kind,
    at: 0,
    jitter,
    issuedAt
  })

  it("a session signed in or loaded without issuedAt refreshes at expiresAt - margin, whatever its lifetime", () => {
    expect(Rules.refreshAtFor(30 * second, at("held"), config)).toBe(-30 * second)
  })

  it("with issuedAt known, a loaded session's margin is at most half its lifetime", () => {
    expect(Rules.refreshAtFor(30 * second, at("held", 0, 0), config)).toBe(15 * second)
  })

  it("a received token that is already inside the margin is refreshed after half its life, not at once", () => {
    expect(Rules.refreshAtFor(30 * second, at("adopted"), config)).toBe(15 * second)
  })

  it("a margin larger than the lifetime never gives a refresh at receipt", () => {
    const wide = { ...config, margin: 3_600 * second, minInterval: 0 }
    expect(Rules.refreshAtFor(10 * second, at("refreshed"), wide)).toBe(5 * second)
  })

  it("the minimum interval spaces refreshes, but a refresh still starts a second before expiry", () => {
    expect(Rules.refreshAtFor(120 * second, at("refreshed"), config)).toBe(60 * second)
    expect(Rules.refreshAtFor(20 * second, at("refreshed"), config)).toBe(19 * second)
  })

  it("when the minimum interval pins the start, the jitter still spreads holders over the half lead before it", () => {
    const starts = [0, 0.5, 0.999].map((jitter) => Rules.refreshAtFor(4 * second, at("refreshed", jitter), config))
    expect(starts).toStrictEqual([3_000, 2_750, 2_501])
  })

  it("the jitter moves the refresh later by up to half the margin", () => {
    expect(Rules.refreshAtFor(3_600 * second, at("held", 0.5), config)).toBe(3_555 * second)
  })

  it("an hour of 30-second tokens under the default options is about 120 refreshes, never thousands", () => {
    let now = 0
    let count = 0
    while (now < 3_600 * second) {
      const next = Rules.refreshAtFor(now + 30 * second, { kind: "refreshed", at: now, jitter: 0 }, config)
      expect(next).toBeGreaterThan(now)
      now = next
      count++
    }
    expect(count).toBeGreaterThanOrEqual(118)
    expect(count).toBeLessThanOrEqual(125)
  })

  it("a session another holder just wrote is taken when taking it would not make it due at once", () => {
    // Bug: a 4 s token another holder wrote was compared with the whole 60 s margin, so every holder refreshed it.
    expect(Rules.isAdoptable(sessionAt("b", 4 * second, 0), 0, config)).toBe(true)
    // Known to be a 10-minute token with 45 s left: inside its margin, so refreshed rather than taken.
    expect(Rules.isAdoptable(sessionAt("b", 600 * second, 0), 555 * second, config)).toBe(false)
  })
})

describe("a store shared with other holders", () => {
  it("the record at our revision: refresh our session, fenced on that revision", () => {
    const { commands } = refreshUpTo(loaded(), 1, 3_599 * second)
    expect(commands.filter((c) => c._tag === "Post")).toMatchObject([{ token: a.refreshToken }])
  })

  it("a later revision holding a fresh session: take it, no request", () => {
    const theirs = sessionAt("theirs", 7_200 * second)
    const { commands, state } = refreshUpTo(loaded(), 1, 3_599 * second, record(2, theirs))
    expect(tags(commands)).toStrictEqual(["Lock", "Publish", "Resolve", "Release"])
    expect(resolved(commands, 1)).toStrictEqual([Exit.succeed(theirs)])
    expect(state).toMatchObject({ revision: 2, foreign: 2 })
  })

  it("a later revision holding a session within its lead: refresh its token (ours is spent)", () => {
    const theirs = sessionAt("theirs", 3_600 * second, 0)
    const { commands } = refreshUpTo(loaded(), 1, 3_599 * second, record(2, theirs))
    expect(commands.filter((c) => c._tag === "Post")).toMatchObject([{ token: theirs.refreshToken }])
  })

  it("a later revision holding a sign-out: follow it, no request", () => {
    const { commands, state } = refreshUpTo(loaded(), 1, 3_599 * second, record(2))
    expect(tags(commands)).toStrictEqual(["Lock", "Publish", "Resolve", "Release"])
    expect(Core.noSession(state).message).toContain("signed out by another holder")
  })

  it("an earlier revision (the store lost its record): refresh ours and write it back over that revision", () => {
    const b = sessionAt("b", 7_200 * second, 0)
    const posted = refreshUpTo(loaded(manual, a, 5), 1, 3_599 * second, record(0))
    const answer = run(posted.state, [answered(1, 3_599 * second, Exit.succeed(b))])
    expect(writes(answer.commands)[0]).toMatchObject({ expected: 0 })
  })

  it("a plain store at our revision holding a session that expires later: written from outside, taken", () => {
    const outside = sessionAt("outside", 7_200 * second)
    const { commands } = refreshUpTo(loaded(), 1, 3_599 * second, record(1, outside))
    expect(resolved(commands, 1)).toStrictEqual([Exit.succeed(outside)])
  })

  it("the change feed: a later revision is another holder's write; ours and older ones are ignored", () => {
    const theirs = sessionAt("theirs", 7_200 * second)
    const state = loaded(manual, a, 3)
    expect(tags(run(state, [{ _tag: "Changed", now: 0, stored: record(2, theirs) }]).commands)).toStrictEqual([])
    expect(tags(run(state, [{ _tag: "Changed", now: 0, stored: record(3, theirs) }]).commands)).toStrictEqual([])
    const later = run(state, [{ _tag: "Changed", now: 0, stored: record(4, theirs) }])
    expect(published(later.commands)).toStrictEqual(["Refreshed"])
    expect(Core.sessionOf(later.state)).toBe(theirs)
  })

  it("the spread moves a loaded session's refresh later by up to half the margin", () => {
    const spread = Core.initial(record(1, a), 0.5, 0, config)
    expect(Core.freshUntil(spread)).toBe(3_600 * second - 60 * second + 15 * second)
  })

  it("an echo of this holder's own write in flight, seen first on the feed, is its landing", () => {
    const b = sessionAt("b", 7_200 * second, 0)
    const answer = run(refreshUpTo(loaded(), 1, 0).state, [answered(1, 0, Exit.succeed(b))])
    const echo = run(answer.state, [{ _tag: "Changed", now: 0, stored: record(2, b) }])
    expect(published(echo.commands)).toStrictEqual(["Refreshed"])
    expect(echo.state).toMatchObject({ own: 2, revision: 2, writing: undefined })
    // Its outcome, when it comes, is old news.
    expect(tags(run(echo.state, [wrote(writeId(answer.commands), 0, written(2, b))]).commands)).toStrictEqual([])
  })
})

describe("sign-in and sign-out", () => {
  it("signIn saves first, then uses the session; a failed save changes nothing", () => {
    const b = sessionAt("b", 7_200 * second)
    const asked = run(loaded(), [{ _tag: "SignIn", op: 1, now: 0, session: b }])
    expect(writes(asked.commands)).toMatchObject([{ overwrite: true, expected: 1 }])
    expect(Core.sessionOf(asked.state)).toBe(a)
    const ok = run(asked.state, [wrote(writeId(asked.commands), 0, written(2, b))])
    expect(published(ok.commands)).toStrictEqual(["SignedIn"])
    expect(Core.sessionOf(ok.state)).toBe(b)
    const failed = run(asked.state, [wrote(writeId(asked.commands), 0, { _tag: "Failed", error: storeDown })])
    expect(resolved(failed.commands, 1)).toStrictEqual([Exit.fail(storeDown)])
    expect(Core.sessionOf(failed.state)).toBe(a)
  })

  it("signOut forgets the session at once; a refresh answered after it is dropped, never saved, and the lock waits for the sign-out to land", () => {
    const b = sessionAt("b", 7_200 * second, 0)
    const posted = refreshUpTo(loaded(), 1, 0)
    const out = run(posted.state, [{ _tag: "SignOut", op: 2, now: 0 }])
    expect(published(out.commands)).toStrictEqual(["SignedOut"])
    expect(Core.sessionOf(out.state)).toBeUndefined()
    const signOutWrite = writeId(out.commands)
    const answer = run(out.state, [answered(1, 0, Exit.succeed(b))])
    expect(writes(answer.commands)).toStrictEqual([])
    expect(published(answer.commands)).toStrictEqual([])
    expect(tags(answer.commands)).not.toContain("Release")
    const landed = run(answer.state, [wrote(signOutWrite, 0, written(2))])
    expect(tags(landed.commands)).toStrictEqual(["Resolve", "Release"])
    expect(Core.sessionOf(landed.state)).toBeUndefined()
  })

  it("a failed sign-out fails its caller and is retried over whatever is stored, until it lands", () => {
    const out = run(loaded(), [{ _tag: "SignOut", op: 1, now: 0 }])
    // The first write goes over whatever is stored: a sign-out is what the user asked for.
    expect(writes(out.commands)).toMatchObject([{ overwrite: true }])
    const failed = run(out.state, [wrote(writeId(out.commands), 0, { _tag: "Failed", error: storeDown })])
    expect(resolved(failed.commands, 1)).toStrictEqual([Exit.fail(storeDown)])
    expect(failed.state.owed).toMatchObject({ kind: "signOut", expected: undefined })
    expect(writes(failed.commands)).toMatchObject([{ overwrite: true }])
    const landed = run(failed.state, [wrote(writeId(failed.commands), 0, written(2))])
    expect(landed.state.owed).toBeUndefined()
    expect(Core.sessionOf(landed.state)).toBeUndefined()
  })

  it("a sign-out whose write failed is not undone by another holder's later write (its refresh, not knowing)", () => {
    const out = run(loaded(), [{ _tag: "SignOut", op: 1, now: 0 }])
    const failed = run(out.state, [wrote(writeId(out.commands), 0, { _tag: "Failed", error: storeDown })])
    const theirs = sessionAt("theirs", 7_200 * second)
    const fed = run(failed.state, [{ _tag: "Changed", now: 500, stored: record(2, theirs) }])
    expect(Core.sessionOf(fed.state)).toBeUndefined()
    expect(fed.state.owed).toMatchObject({ kind: "signOut" })
  })

  it("a sign-out not yet written at all is not undone by a record the feed brings meanwhile", () => {
    const out = run(loaded(), [{ _tag: "SignOut", op: 1, now: 0 }])
    const theirs = sessionAt("theirs", 7_200 * second)
    const fed = run(out.state, [{ _tag: "Changed", now: 0, stored: record(2, theirs) }])
    expect(Core.sessionOf(fed.state)).toBeUndefined()
  })

  it("signing out ends the session; signing in again clears the reason", () => {
    const out = run(loaded(), [{ _tag: "SignOut", op: 1, now: 0 }])
    const landed = run(out.state, [wrote(writeId(out.commands), 0, written(2))])
    expect(Core.noSession(landed.state).message).toBe("no session: signed out")
    const b = sessionAt("b", 7_200 * second)
    const asked = run(landed.state, [{ _tag: "SignIn", op: 2, now: 0, session: b }])
    const ok = run(asked.state, [wrote(writeId(asked.commands), 0, written(3, b))])
    expect(Core.sessionOf(ok.state)).toBe(b)
  })

  it("signInWithRefreshToken takes a session another holder wrote after the caller looked, and sends nothing", () => {
    const token = Redacted.make("env-token")
    const theirs = sessionAt("theirs", 7_200 * second, 0)
    const { commands } = run(empty, [
      { _tag: "SignInWithToken", op: 1, now: 0, token },
      locked(1, 0, record(1, theirs))
    ])
    expect(commands.filter((c) => c._tag === "Post")).toStrictEqual([])
    expect(resolved(commands, 1)).toStrictEqual([Exit.succeed(theirs)])
  })

  it("signInWithRefreshToken after this holder's own refresh sends its token (its own write is not another holder's)", () => {
    const token = Redacted.make("user-token")
    const b = sessionAt("b", 7_200 * second, 0)
    const answer = run(refreshUpTo(loaded(), 1, 0).state, [answered(1, 0, Exit.succeed(b))])
    const asked = run(answer.state, [{ _tag: "SignInWithToken", op: 2, now: 0, token }])
    const saved = run(asked.state, [wrote(writeId(answer.commands), 0, written(2, b)), locked(2, 0, record(2, b))])
    expect(saved.commands.filter((c) => c._tag === "Post")).toMatchObject([{ token }])
  })
})

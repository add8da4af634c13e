/**
 * Regressions: a 2xx answer decoded into the wrong session, or into a defect
 * instead of a typed error (expiries, the server's clock, the user object).
 *
 * One case per bug that was found and fixed, named by what broke, with the
 * commit that fixed it. Each case fails if its bug comes back. When you fix
 * a bug, add its case to the file of its area (test/regressions/*.test.ts).
 */
import { describe, expect, it } from "@effect/vitest"
import { DateTime, Effect } from "effect"
import { TestClock } from "effect/testing"
import * as TestHttpClient from "../support/TestHttpClient.js"
import { expectRefreshError, refreshAgainst, sessionBody, sessionOf } from "./harness.js"

// 2023-11-14T22:13:20Z: a TestClock time with room on both sides.
const now = 1_700_000_000_000
const hour = 3_600_000
const year = 365 * 24 * hour
const { expires_in: _, ...withoutExpiry } = sessionBody

const httpDate = (millis: number) => ({ date: new Date(millis).toUTCString() })

describe("expiries", () => {
  // 7092f96: the expiry was built with DateTime.unsafeMake (Effect 4: makeUnsafe), which throws past
  // the last date JavaScript can represent: a defect, not a typed error.
  for (
    const [what, body, field] of [
      ["an expires_at past the year 275760", { ...withoutExpiry, expires_at: 1e13 }, "expires_at"],
      ["an expires_in of 1e300 seconds", { ...withoutExpiry, expires_in: 1e300 }, "expires_in"]
    ] as const
  ) {
    it.effect(`${what} is a MalformedResponseError naming the field, not a defect`, () =>
      Effect.gen(function*() {
        yield* TestClock.setTime(now)
        const { exit } = yield* refreshAgainst([TestHttpClient.json(200, body)])
        expect(expectRefreshError(exit)).toMatchObject({
          _tag: "MalformedResponseError",
          message: `response is not a session: invalid field "${field}"`
        })
      }))
  }

  // 7092f96: the check compared the unrounded expiry with now, the session
  // stored it rounded down to the millisecond: it arrived already expired.
  it.effect("an expiry less than a millisecond away is refused, not a session that arrives expired", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(now)
      const { exit } = yield* refreshAgainst([TestHttpClient.json(200, { ...withoutExpiry, expires_in: 0.0005 })])
      expect(expectRefreshError(exit)).toMatchObject({
        _tag: "MalformedResponseError",
        message: `response is not a session: invalid field "expires_in"`
      })
    }))
})

describe("the server's clock", () => {
  // d140fc1: the shift was a Duration, which cannot be negative: with the
  // server's clock ahead of ours, the correction was clamped to nothing.
  it.effect("expires_at is moved onto our clock whether the server's clock is ahead or behind", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(now)
      const expiresAtOn = (serverNow: number) =>
        refreshAgainst([
          TestHttpClient.json(
            200,
            // Alone: beside expires_in, expires_at is not used at all.
            { ...withoutExpiry, expires_at: (serverNow + 10 * 60_000) / 1000 },
            httpDate(serverNow)
          )
        ]).pipe(Effect.map(({ exit }) => DateTime.toEpochMillis(sessionOf(exit).expiresAt)))
      expect(yield* expiresAtOn(now + hour)).toBe(now + 10 * 60_000)
      expect(yield* expiresAtOn(now - hour)).toBe(now + 10 * 60_000)
    }))

  // 7092f96: any Date header was trusted as the server's clock. One at the end
  // of time moved "now" past the representable dates (a defect); one years
  // off moved a valid expiry by years.
  for (
    const [what, serverNow] of [
      ["at the largest date JavaScript knows", 8.64e15],
      ["two years behind ours", now - 2 * year]
    ] as const
  ) {
    it.effect(`a Date header ${what} is ignored: the session expires by our clock`, () =>
      Effect.gen(function*() {
        yield* TestClock.setTime(now)
        const { exit } = yield* refreshAgainst([
          TestHttpClient.json(200, { ...withoutExpiry, expires_at: (now + hour) / 1000 }, httpDate(serverNow))
        ])
        expect(DateTime.toEpochMillis(sessionOf(exit).expiresAt)).toBe(now + hour)
      }))
  }
})

describe("the user object", () => {
  // d140fc1: `email` was an optional string, and Supabase sends `null` for a
  // user who signed in by phone: a valid session was a MalformedResponseError.
  it.effect("a null email is accepted and left out of the session's user", () =>
    Effect.gen(function*() {
      const { exit } = yield* refreshAgainst([
        TestHttpClient.json(200, { ...sessionBody, user: { id: "user-1", email: null, phone: "15550100" } })
      ])
      expect(sessionOf(exit).user).toStrictEqual({ id: "user-1", phone: "15550100" })
    }))
})

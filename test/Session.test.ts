import { describe, expect, it } from "@effect/vitest"
import { DateTime, Duration, Effect, Logger, Redacted, References, Result, Schema } from "effect"
import { TestClock } from "effect/testing"
import { Session } from "moon-refresh"
import { inspect } from "node:util"
import { describeIssue } from "../src/internal/wire.js"

const accessToken = "eyJhbGciOiJIUzI1NiJ9.access-token-secret.signature"
const refreshToken = "refresh-token-secret-v2"

// 2025-11-25T19:46:40Z, far ahead of the TestClock, which starts at the epoch.
const expiresAtSeconds = 1764100000

const bareBody = {
  access_token: accessToken,
  refresh_token: refreshToken,
  expires_in: 3600,
  expires_at: expiresAtSeconds,
  token_type: "bearer",
  user: { id: "user-1", email: "ada@example.com" }
}

const decode = Schema.decodeUnknownEffect(Session.MoonResponse)

// `toEqual` cannot see inside a `Redacted` (two of them always compare equal),
// so sessions are compared through their revealed values.
const reveal = (session: Session.Session) => ({
  accessToken: Redacted.value(session.accessToken),
  refreshToken: Redacted.value(session.refreshToken),
  expiresAt: DateTime.toEpochMillis(session.expiresAt),
  tokenType: session.tokenType,
  user: session.user
})

describe("Session.MoonResponse", () => {
  it.effect("decodes a bare Supabase session into a Session with redacted tokens", () =>
    Effect.gen(function*() {
      const session = yield* decode(bareBody)
      expect(session).toBeInstanceOf(Session.Session)
      expect(Redacted.isRedacted(session.accessToken)).toBe(true)
      expect(Redacted.isRedacted(session.refreshToken)).toBe(true)
      expect(reveal(session)).toStrictEqual({
        accessToken,
        refreshToken,
        // expires_in from the Clock (at 0): expires_at is only used when sent alone.
        expiresAt: 3_600_000,
        tokenType: "bearer",
        user: { id: "user-1", email: "ada@example.com" }
      })
    }))

  it.effect("decodes a session wrapped in { token: ... } into the same Session as the bare body", () =>
    Effect.gen(function*() {
      const bare = yield* decode(bareBody)
      const wrapped = yield* decode({ token: bareBody })
      expect(reveal(wrapped)).toStrictEqual(reveal(bare))
    }))

  it.effect("takes the expiry from expires_in when expires_at is sent too", () =>
    Effect.gen(function*() {
      yield* TestClock.adjust(Duration.hours(1))
      const session = yield* decode({ ...bareBody, expires_at: expiresAtSeconds, expires_in: 60 })
      expect(DateTime.toEpochMillis(session.expiresAt)).toBe(3_600_000 + 60_000)
    }))

  it.effect("takes the expiry from expires_at when it is sent alone", () =>
    Effect.gen(function*() {
      const { expires_in: _, ...atOnly } = bareBody
      yield* TestClock.setTime(expiresAtSeconds * 1000 - 600_000)
      const session = yield* decode(atOnly)
      expect(DateTime.toEpochMillis(session.expiresAt)).toBe(expiresAtSeconds * 1000)
    }))

  it.effect("refuses an expiry more than 30 days away, naming the field (expires_at in milliseconds)", () =>
    Effect.gen(function*() {
      const { expires_in: _, ...atOnly } = bareBody
      yield* TestClock.setTime(expiresAtSeconds * 1000)
      const error = yield* Effect.flip(decode({ ...atOnly, expires_at: expiresAtSeconds * 1000 + 3_600_000 }))
      expect(describeIssue(error.issue)).toContain(`"expires_at"`)
      const tooLong = yield* Effect.flip(decode({ ...bareBody, expires_in: 31 * 24 * 3600 }))
      expect(describeIssue(tooLong.issue)).toContain(`"expires_in"`)
    }))

  it.effect("derives the expiry from expires_in and the Clock when expires_at is absent", () =>
    Effect.gen(function*() {
      const { expires_at: _, ...withoutExpiresAt } = bareBody
      yield* TestClock.adjust(Duration.minutes(10))
      const session = yield* decode({ ...withoutExpiresAt, expires_in: 3600 })
      expect(DateTime.toEpochMillis(session.expiresAt)).toBe(Duration.toMillis(Duration.minutes(10)) + 3600 * 1000)
    }))

  it.effect("keeps every field of the server's user object, not only id and email", () =>
    Effect.gen(function*() {
      const user = {
        id: "user-1",
        email: "ada@example.com",
        role: "authenticated",
        app_metadata: { provider: "email", providers: ["email"] },
        user_metadata: {},
        created_at: "2025-01-01T00:00:00Z"
      }
      const session = yield* decode({ ...bareBody, user })
      expect(session.user).toStrictEqual(user)
    }))

  it.effect("defaults tokenType to bearer when token_type is absent", () =>
    Effect.gen(function*() {
      const { token_type: _, ...withoutTokenType } = bareBody
      const session = yield* decode(withoutTokenType)
      expect(session.tokenType).toBe("bearer")
    }))

  it.effect("refuses a body of neither shape", () =>
    Effect.gen(function*() {
      const result = yield* Effect.result(decode({ ok: true, data: { session: null } }))
      expect(Result.isFailure(result)).toBe(true)
    }))

  it.effect("refuses an expiry that is not in the future, naming the field", () =>
    Effect.gen(function*() {
      yield* TestClock.adjust(Duration.seconds(100))
      const { expires_in: _, ...atOnly } = bareBody
      const error = yield* Effect.flip(decode({ ...atOnly, expires_at: 50 }))
      expect(describeIssue(error.issue)).toContain(`"expires_at"`)
      const zero = yield* Effect.flip(decode({ ...bareBody, expires_in: 0 }))
      expect(describeIssue(zero.issue)).toContain(`"expires_in"`)
    }))
})

describe("Session.make", () => {
  it("returns the session in a Success when every input is valid", () => {
    const built = Session.make({ accessToken, refreshToken, expiresAt: Date.UTC(2030, 0, 1), user: { id: "user-1" } })
    expect(Result.isSuccess(built) && reveal(built.success)).toStrictEqual(reveal(Session.unsafeMake({
      accessToken,
      refreshToken,
      expiresAt: Date.UTC(2030, 0, 1),
      user: { id: "user-1" }
    })))
  })

  for (
    const [field, input] of [
      ["accessToken", { accessToken: "", refreshToken, expiresAt: 0, user: { id: "user-1" } }],
      ["refreshToken", { accessToken, refreshToken: Redacted.make(""), expiresAt: 0, user: { id: "user-1" } }],
      ["expiresAt", { accessToken, refreshToken, expiresAt: "not a date", user: { id: "user-1" } }],
      ["user", { accessToken, refreshToken, expiresAt: 0, user: { email: "ada@example.com" } as never }]
    ] as const
  ) {
    it(`returns an InvalidSessionError naming ${field}, without any token in it`, () => {
      const built = Session.make(input)
      expect(Result.isFailure(built)).toBe(true)
      const error = Result.isFailure(built) ? built.failure : undefined
      expect(error?._tag).toBe("InvalidSessionError")
      expect(error?.field).toBe(field)
      expect(error?.message).toContain(field)
      expect(String(error)).not.toContain(refreshToken)
      expect(String(error)).not.toContain(accessToken)
    })
  }
})

describe("Session.unsafeMake", () => {
  it("builds a session from plain values, redacting both tokens", () => {
    const session = Session.unsafeMake({
      accessToken,
      refreshToken,
      expiresAt: new Date("2030-01-01T00:00:00Z"),
      user: { id: "user-1" }
    })
    expect(Redacted.isRedacted(session.accessToken)).toBe(true)
    expect(Redacted.isRedacted(session.refreshToken)).toBe(true)
    expect(reveal(session)).toStrictEqual({
      accessToken,
      refreshToken,
      expiresAt: Date.UTC(2030, 0, 1),
      tokenType: "bearer",
      user: { id: "user-1" }
    })
  })

  it("accepts tokens that are already Redacted and any expiry DateTime.make understands", () => {
    const fromMillis = Session.unsafeMake({
      accessToken: Redacted.make(accessToken),
      refreshToken: Redacted.make(refreshToken),
      expiresAt: Date.UTC(2030, 0, 1),
      tokenType: "Bearer",
      user: { id: "user-1" }
    })
    const fromIso = Session.unsafeMake({
      accessToken,
      refreshToken,
      expiresAt: "2030-01-01T00:00:00Z",
      tokenType: "Bearer",
      user: { id: "user-1" }
    })
    expect(reveal(fromMillis)).toStrictEqual(reveal(fromIso))
    expect(fromMillis.tokenType).toBe("Bearer")
  })

  it("throws when expiresAt is not a date", () => {
    expect(() => Session.unsafeMake({ accessToken, refreshToken, expiresAt: "not a date", user: { id: "user-1" } }))
      .toThrow(/expiresAt/)
  })

  it("throws when a token is empty", () => {
    expect(() => Session.unsafeMake({ accessToken: "", refreshToken, expiresAt: 0, user: { id: "user-1" } })).toThrow()
  })
})

describe("Session.expiresWithin", () => {
  it.effect("tells from the Clock whether the access token expires within a duration", () =>
    Effect.gen(function*() {
      const session = Session.unsafeMake({ accessToken, refreshToken, expiresAt: 60_000, user: { id: "user-1" } })
      expect(yield* Session.expiresWithin(session, Duration.seconds(30))).toBe(false)
      expect(yield* Session.expiresWithin(session, Duration.seconds(60))).toBe(true)

      yield* TestClock.adjust(Duration.seconds(29))
      expect(yield* Session.expiresWithin(session, Duration.seconds(30))).toBe(false)
      yield* TestClock.adjust(Duration.seconds(2))
      expect(yield* Session.expiresWithin(session, Duration.seconds(30))).toBe(true)
    }))

  it.effect("counts an already expired session as expiring within any duration", () =>
    Effect.gen(function*() {
      const session = Session.unsafeMake({ accessToken, refreshToken, expiresAt: 60_000, user: { id: "user-1" } })
      yield* TestClock.adjust(Duration.minutes(5))
      expect(yield* Session.expiresWithin(session, Duration.zero)).toBe(true)
    }))

  it.effect("can be used data-last", () =>
    Effect.gen(function*() {
      const session = Session.unsafeMake({ accessToken, refreshToken, expiresAt: 60_000, user: { id: "user-1" } })
      expect(yield* Session.expiresWithin("1 minute")(session)).toBe(true)
      expect(yield* Session.expiresWithin("59 seconds")(session)).toBe(false)
    }))
})

describe("printing a session", () => {
  const session = Session.unsafeMake({
    accessToken,
    refreshToken,
    expiresAt: Date.UTC(2030, 0, 1),
    user: { id: "user-1", email: "ada@example.com" }
  })

  it("String(session) shows <redacted> for both tokens", () => {
    const printed = String(session)
    expect(printed).toContain("<redacted>")
    expect(printed).toContain("user-1")
    expect(printed).not.toContain(accessToken)
    expect(printed).not.toContain(refreshToken)
  })

  it("JSON.stringify(session) shows <redacted> for both tokens", () => {
    const printed = JSON.stringify(session)
    expect(printed).toContain("<redacted>")
    expect(printed).toContain("user-1")
    expect(printed).not.toContain(accessToken)
    expect(printed).not.toContain(refreshToken)
  })

  it("util.inspect(session) shows <redacted> for both tokens", () => {
    const printed = inspect(session, { depth: Infinity, showHidden: true })
    expect(printed).toContain("<redacted>")
    expect(printed).not.toContain(accessToken)
    expect(printed).not.toContain(refreshToken)
  })

  it.effect("logging a session shows <redacted> for both tokens", () =>
    Effect.gen(function*() {
      const lines: Array<string> = []
      const capture = Logger.make((options) => {
        lines.push(Logger.formatLogFmt.log(options), Logger.formatJson.log(options))
      })
      yield* Effect.logDebug("refreshed", session).pipe(
        Effect.annotateLogs("session", session),
        Effect.provide(Logger.layer([capture])),
        Effect.provideService(References.MinimumLogLevel, "All")
      )
      expect(lines).toHaveLength(2)
      for (const line of lines) {
        expect(line).toContain("<redacted>")
        expect(line).not.toContain(accessToken)
        expect(line).not.toContain(refreshToken)
      }
    }))
})

import { describe, expect, it } from "@effect/vitest"
import { Cause, DateTime, Duration, Effect, Exit, Fiber, Layer, Option, Redacted, Stream } from "effect"
import { TestClock } from "effect/testing"
import { RefreshClient, RefreshError, type Session, SessionManager, SessionStore } from "moon-refresh"
import { MockRefreshClient } from "moon-refresh/testing"
import * as Examples from "../docs/examples/testing.js"

const tokensOf = (
  session: Session.Session
) => [Redacted.value(session.accessToken), Redacted.value(session.refreshToken)]
const expiryOf = (session: Session.Session) => DateTime.toEpochMillis(session.expiresAt)

/** Lets every fiber run until it waits on something, without moving the TestClock. */
const settle = TestClock.adjust(Duration.zero)

describe("MockRefreshClient", () => {
  describe("sessions and rotation", () => {
    it.effect("issueSession seeds a live session expiring the default hour after the Clock's now", () =>
      Effect.gen(function*() {
        yield* TestClock.setTime(1_000_000)
        const mock = yield* MockRefreshClient.make()
        const session = yield* mock.issueSession()
        expect(tokensOf(session)).toStrictEqual(["mock-access-token-1", "mock-refresh-token-1"])
        expect(expiryOf(session)).toBe(1_000_000 + 3_600_000)
        expect(session.user).toStrictEqual({ id: "mock-user-1", email: "user@example.com" })
        expect(yield* mock.isLive(session.refreshToken)).toBe(true)
        expect(yield* mock.stats).toMatchObject({ calls: 0, rotations: 0 })
      }))

    it.effect("issueSession takes a lifetime (zero: already expired) and a user", () =>
      Effect.gen(function*() {
        const mock = yield* MockRefreshClient.make({ lifetime: "5 minutes", user: { id: "u-default" } })
        expect(expiryOf(yield* mock.issueSession())).toBe(300_000)
        const expired = yield* mock.issueSession({ lifetime: 0, user: { id: "u-2", plan: "pro" } })
        expect(expiryOf(expired)).toBe(0)
        expect(expired.user).toStrictEqual({ id: "u-2", plan: "pro" })
        // The session's user carries over to the sessions its refreshes issue.
        const next = yield* mock.refresh(expired.refreshToken)
        expect(next.user).toStrictEqual({ id: "u-2", plan: "pro" })
      }))

    it.effect("a refresh with the newest token issues new tokens and spends the old one", () =>
      Effect.gen(function*() {
        const mock = yield* MockRefreshClient.make()
        const first = yield* mock.issueSession()
        yield* TestClock.adjust("10 minutes")
        const second = yield* mock.refresh(first.refreshToken)
        expect(tokensOf(second)).toStrictEqual(["mock-access-token-2", "mock-refresh-token-2"])
        expect(expiryOf(second)).toBe(600_000 + 3_600_000)
        expect(second.tokenType).toBe("bearer")
        expect(yield* mock.isLive(first.refreshToken)).toBe(false)
        expect(yield* mock.isLive(second.refreshToken)).toBe(true)
        const third = yield* mock.refresh(second.refreshToken)
        expect(yield* mock.isLive(third.refreshToken)).toBe(true)
        expect(yield* mock.stats).toMatchObject({ calls: 2, rotations: 2, reuseRejections: 0 })
      }))

    it.effect("rejects a spent token as Moon does, and revokes the whole session (the newest token too)", () =>
      Effect.gen(function*() {
        const mock = yield* MockRefreshClient.make()
        const first = yield* mock.issueSession()
        const second = yield* mock.refresh(first.refreshToken)

        const reuse = yield* Effect.flip(mock.refresh(first.refreshToken))
        expect(reuse).toBeInstanceOf(RefreshError.TokenRejectedError)
        expect(reuse).toMatchObject({ status: 500, message: "Invalid Refresh Token: Already Used" })
        expect(yield* mock.isLive(second.refreshToken)).toBe(false)
        const after = yield* Effect.flip(mock.refresh(second.refreshToken))
        expect(after.message).toBe("Invalid Refresh Token: Already Used")
        expect(yield* mock.stats).toMatchObject({ rotations: 1, reuseRejections: 2 })
        expect((yield* mock.calls).map((call) => call.outcome)).toStrictEqual([
          "rotated",
          "reuse-rejected",
          "reuse-rejected"
        ])
      }))

    it.effect("catches two concurrent refreshes of the same token: one wins, the other kills the session", () =>
      Effect.gen(function*() {
        const mock = yield* MockRefreshClient.make({ script: [MockRefreshClient.succeed({ delay: "100 millis" })] })
        const seeded = yield* mock.issueSession()
        const both = yield* Effect.forkChild(
          Effect.all([mock.refresh(seeded.refreshToken), mock.refresh(seeded.refreshToken)].map(Effect.result), {
            concurrency: "unbounded"
          })
        )
        yield* TestClock.adjust("100 millis")
        const results = yield* Fiber.join(both)
        expect(results.map((result) => result._tag).sort()).toStrictEqual(["Failure", "Success"])
        // The winner's new token is dead too: the double refresh signed the user out.
        for (const result of results) {
          if (result._tag === "Success") expect(yield* mock.isLive(result.success.refreshToken)).toBe(false)
          else expect(result.failure.message).toBe("Invalid Refresh Token: Already Used")
        }
      }))

    it.effect("answers Refresh Token Not Found to a token it never issued, or of a revoked session", () =>
      Effect.gen(function*() {
        const mock = yield* MockRefreshClient.make()
        const unknown = yield* Effect.flip(mock.refresh(Redacted.make("never-issued")))
        expect(unknown).toMatchObject({
          _tag: "TokenRejectedError",
          status: 500,
          message: "Invalid Refresh Token: Refresh Token Not Found"
        })

        const seeded = yield* mock.issueSession()
        yield* mock.revokeSession(seeded.refreshToken)
        expect(yield* mock.isLive(seeded.refreshToken)).toBe(false)
        const revoked = yield* Effect.flip(mock.refresh(seeded.refreshToken))
        expect(revoked.message).toBe("Invalid Refresh Token: Refresh Token Not Found")
        expect((yield* mock.stats).unknownTokens).toBe(2)
      }))

    it.effect("refuses a blank token as the real client does: TokenRejectedError without a status, no step used", () =>
      Effect.gen(function*() {
        const mock = yield* MockRefreshClient.make({ script: [MockRefreshClient.hang] })
        const error = yield* Effect.flip(mock.refresh(Redacted.make(" \t")))
        expect(error).toBeInstanceOf(RefreshError.TokenRejectedError)
        expect(error._tag === "TokenRejectedError" && error.status).toBeUndefined()
        expect(yield* mock.pendingSteps).toBe(1)
        expect((yield* mock.calls).map((call) => [call.step, call.outcome])).toStrictEqual([[undefined, "blank"]])
      }))
  })

  describe("named sessions", () => {
    it.effect("issueSession with a name gives tokens named after it; refreshes number on from 1", () =>
      Effect.gen(function*() {
        const mock = yield* MockRefreshClient.make()
        const seeded = yield* mock.issueSession({ name: "seed", lifetime: "10 minutes" })
        expect(tokensOf(seeded)).toStrictEqual(["mock-access-token-seed", "mock-refresh-token-seed"])
        expect(expiryOf(seeded)).toBe(600_000)
        expect(tokensOf(yield* mock.refresh(seeded.refreshToken))).toStrictEqual([
          "mock-access-token-1",
          "mock-refresh-token-1"
        ])
      }))

    it.effect("skips a number a test took as a name", () =>
      Effect.gen(function*() {
        const mock = yield* MockRefreshClient.make()
        const zero = yield* mock.issueSession({ name: "0" })
        yield* mock.issueSession({ name: "2" })
        const first = yield* mock.refresh(zero.refreshToken)
        const third = yield* mock.refresh(first.refreshToken)
        expect([first, third].map(tokensOf)).toStrictEqual([
          ["mock-access-token-1", "mock-refresh-token-1"],
          ["mock-access-token-3", "mock-refresh-token-3"]
        ])
      }))

    it.effect("a name already taken is a defect naming it", () =>
      Effect.gen(function*() {
        const mock = yield* MockRefreshClient.make()
        yield* mock.issueSession({ name: "other" })
        const exit = yield* Effect.exit(mock.issueSession({ name: "other" }))
        expect(Exit.isFailure(exit) && Cause.hasDies(exit.cause)).toBe(true)
        expect(Exit.isFailure(exit) && Cause.pretty(exit.cause)).toContain(`"other"`)
      }))
  })

  describe("reuse window", () => {
    it.effect("within the window, the token spent last gets the same new refresh token and a new access token", () =>
      Effect.gen(function*() {
        const mock = yield* MockRefreshClient.make({ reuseWindow: "10 seconds" })
        const seeded = yield* mock.issueSession()
        const rotated = yield* mock.refresh(seeded.refreshToken)
        yield* TestClock.adjust("10 seconds")
        const again = yield* mock.refresh(seeded.refreshToken)
        expect(tokensOf(again)).toStrictEqual(["mock-access-token-3", "mock-refresh-token-2"])
        expect(yield* mock.isLive(rotated.refreshToken)).toBe(true)

        yield* TestClock.adjust(1)
        const late = yield* Effect.flip(mock.refresh(seeded.refreshToken))
        expect(late.message).toBe("Invalid Refresh Token: Already Used")
        expect((yield* mock.calls).map((call) => call.outcome)).toStrictEqual([
          "rotated",
          "reuse-tolerated",
          "reuse-rejected"
        ])
        expect(yield* mock.stats).toMatchObject({ rotations: 1, reusesTolerated: 1, reuseRejections: 1 })
      }))

    it.effect("without one (the default), even a reuse at the same instant is rejected", () =>
      Effect.gen(function*() {
        const mock = yield* MockRefreshClient.make()
        const seeded = yield* mock.issueSession()
        yield* mock.refresh(seeded.refreshToken)
        expect((yield* Effect.flip(mock.refresh(seeded.refreshToken))).message).toBe(
          "Invalid Refresh Token: Already Used"
        )
        expect(yield* mock.stats).toMatchObject({ reusesTolerated: 0, reuseRejections: 1 })
      }))

    it.effect("with reuse: gotrue, a lost answer is recovered by the same token an hour later; a token two back is not", () =>
      Effect.gen(function*() {
        const mock = yield* MockRefreshClient.make({ reuse: "gotrue", script: [MockRefreshClient.lost()] })
        const seeded = yield* mock.issueSession()
        yield* Effect.flip(mock.refresh(seeded.refreshToken))
        yield* TestClock.adjust("1 hour")
        // The parent of the active token: the active session, whatever the time.
        const recovered = yield* mock.refresh(seeded.refreshToken)
        expect(tokensOf(recovered)).toStrictEqual(["mock-access-token-3", "mock-refresh-token-2"])
        yield* mock.refresh(recovered.refreshToken)
        // Now two rotations back and spent an hour ago: revoked, with the whole session.
        expect((yield* Effect.flip(mock.refresh(seeded.refreshToken))).message).toBe(
          "Invalid Refresh Token: Already Used"
        )
        expect(yield* mock.stats).toMatchObject({ rotations: 2, reusesTolerated: 1, reuseRejections: 1 })
      }))
  })

  describe("the script", () => {
    it.effect("succeeds when the script is empty, with the default lifetime", () =>
      Effect.gen(function*() {
        const mock = yield* MockRefreshClient.make({ lifetime: "2 hours" })
        let session = yield* mock.issueSession()
        for (let i = 0; i < 5; i++) session = yield* mock.refresh(session.refreshToken)
        expect(expiryOf(session)).toBe(7_200_000)
        expect((yield* mock.calls).map((call) => call.step)).toStrictEqual(Array(5).fill("Succeed"))
      }))

    it.effect("uses whenEmpty once the script is used up", () =>
      Effect.gen(function*() {
        const down = new RefreshError.ServerError({ status: 503, message: "service unavailable" })
        const mock = yield* MockRefreshClient.make({
          script: [MockRefreshClient.succeed()],
          whenEmpty: MockRefreshClient.fail(down)
        })
        const seeded = yield* mock.issueSession()
        const next = yield* mock.refresh(seeded.refreshToken)
        for (let i = 0; i < 3; i++) expect(yield* Effect.flip(mock.refresh(next.refreshToken))).toBe(down)
      }))

    it.effect("applies steps one per call in order, the queued ones after those given at make", () =>
      Effect.gen(function*() {
        const timeout = new RefreshError.TransportError({ reason: "Timeout", message: "no answer within 10s" })
        const mock = yield* MockRefreshClient.make({ script: [MockRefreshClient.fail(timeout)] })
        yield* mock.script(MockRefreshClient.succeed({ lifetime: "1 minute" }), MockRefreshClient.fail(timeout))
        expect(yield* mock.pendingSteps).toBe(3)
        const seeded = yield* mock.issueSession()

        expect(yield* Effect.flip(mock.refresh(seeded.refreshToken))).toBe(timeout)
        const next = yield* mock.refresh(seeded.refreshToken) // a Fail step leaves the token live
        expect(expiryOf(next)).toBe(60_000)
        expect(yield* Effect.flip(mock.refresh(next.refreshToken))).toBe(timeout)
        expect(yield* mock.pendingSteps).toBe(0)
        expect((yield* mock.calls).map((call) => [call.step, call.outcome])).toStrictEqual([
          ["Fail", "failed"],
          ["Succeed", "rotated"],
          ["Fail", "failed"]
        ])
      }))

    it.effect("sleeps a step's delay on the Clock, so TestClock drives it, and expires from the answer's time", () =>
      Effect.gen(function*() {
        const mock = yield* MockRefreshClient.make({
          script: [MockRefreshClient.succeed({ delay: "2 seconds", lifetime: "10 minutes" })]
        })
        const seeded = yield* mock.issueSession()
        const fiber = yield* Effect.forkChild(mock.refresh(seeded.refreshToken))
        yield* TestClock.adjust(1_999)
        expect(fiber.pollUnsafe()).toBeUndefined()
        expect((yield* mock.calls)[0]).toMatchObject({ outcome: "pending", startedAt: 0, endedAt: undefined })
        yield* TestClock.adjust(1)
        const session = yield* Fiber.join(fiber)
        expect(expiryOf(session)).toBe(2_000 + 600_000)
        expect((yield* mock.calls)[0]).toMatchObject({ outcome: "rotated", startedAt: 0, endedAt: 2_000 })
      }))

    it.effect("a Fail step fails after its delay with exactly the error given", () =>
      Effect.gen(function*() {
        const limited = new RefreshError.RateLimitedError({
          status: 429,
          retryAfter: Option.some(Duration.seconds(30)),
          message: "Request rate limit reached"
        })
        const mock = yield* MockRefreshClient.make({ script: [MockRefreshClient.fail(limited, { delay: 500 })] })
        const seeded = yield* mock.issueSession()
        const fiber = yield* Effect.forkChild(Effect.flip(mock.refresh(seeded.refreshToken)))
        yield* TestClock.adjust(499)
        expect(fiber.pollUnsafe()).toBeUndefined()
        yield* TestClock.adjust(1)
        expect(yield* Fiber.join(fiber)).toBe(limited)
        expect(yield* mock.isLive(seeded.refreshToken)).toBe(true)
      }))

    it.effect("a Hang step never answers, and is interruptible: the token stays live", () =>
      Effect.gen(function*() {
        const mock = yield* MockRefreshClient.make({ script: [MockRefreshClient.hang] })
        const seeded = yield* mock.issueSession()
        const fiber = yield* Effect.forkChild(mock.refresh(seeded.refreshToken))
        yield* TestClock.adjust("1 day")
        expect(fiber.pollUnsafe()).toBeUndefined()
        yield* Fiber.interrupt(fiber)
        const exit = yield* Effect.exit(Fiber.join(fiber))
        expect(Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause)).toBe(true)
        expect((yield* mock.calls)[0]).toMatchObject({ step: "Hang", outcome: "interrupted", endedAt: 86_400_000 })
        expect(yield* mock.stats).toMatchObject({ calls: 1, interruptions: 1, rotations: 0 })
        expect(yield* mock.isLive(seeded.refreshToken)).toBe(true)
      }))

    it.effect("a call interrupted during a Succeed's delay spends nothing", () =>
      Effect.gen(function*() {
        const mock = yield* MockRefreshClient.make({ script: [MockRefreshClient.succeed({ delay: "5 seconds" })] })
        const seeded = yield* mock.issueSession()
        const exit = yield* mock.refresh(seeded.refreshToken).pipe(
          Effect.timeout("1 second"),
          Effect.exit,
          Effect.forkChild
        )
        yield* TestClock.adjust("1 second")
        expect(Exit.isFailure(yield* Fiber.join(exit))).toBe(true)
        expect(yield* mock.isLive(seeded.refreshToken)).toBe(true)
        expect((yield* mock.stats).rotations).toBe(0)
      }))

    it.effect("a Lost step rotates, then fails with a TransportError: the caller's token is spent", () =>
      Effect.gen(function*() {
        const mock = yield* MockRefreshClient.make({ script: [MockRefreshClient.lost()] })
        const seeded = yield* mock.issueSession()
        const error = yield* Effect.flip(mock.refresh(seeded.refreshToken))
        expect(error).toMatchObject({ _tag: "TransportError", reason: "Network" })
        expect(RefreshError.isRetryable(error)).toBe(true)
        expect(yield* mock.isLive(seeded.refreshToken)).toBe(false)
        // What a client that retries with the token it still holds gets next.
        const retry = yield* Effect.flip(mock.refresh(seeded.refreshToken))
        expect(retry.message).toBe("Invalid Refresh Token: Already Used")
        expect((yield* mock.calls).map((call) => call.outcome)).toStrictEqual(["lost", "reuse-rejected"])
        expect(yield* mock.stats).toMatchObject({ rotations: 1, reuseRejections: 1 })
      }))

    it.effect("a Lost step fails with the error given", () =>
      Effect.gen(function*() {
        const gateway = new RefreshError.ServerError({ status: 504, message: "Gateway Timeout" })
        const mock = yield* MockRefreshClient.make({ script: [MockRefreshClient.lost({ error: gateway })] })
        const seeded = yield* mock.issueSession()
        expect(yield* Effect.flip(mock.refresh(seeded.refreshToken))).toBe(gateway)
      }))

    it.effect("accepts Step constructors and plain tagged objects as steps", () =>
      Effect.gen(function*() {
        const error = new RefreshError.ServerError({ status: 500, message: "boom" })
        const mock = yield* MockRefreshClient.make({
          script: [MockRefreshClient.Step.Fail({ error }), { _tag: "Succeed", lifetime: "1 minute" }]
        })
        const seeded = yield* mock.issueSession()
        expect(yield* Effect.flip(mock.refresh(seeded.refreshToken))).toBe(error)
        expect(expiryOf(yield* mock.refresh(seeded.refreshToken))).toBe(60_000)
        expect(MockRefreshClient.Step.$is("Hang")(MockRefreshClient.hang)).toBe(true)
      }))
  })

  describe("records", () => {
    it.effect("records each call's token, still Redacted, and never prints a token", () =>
      Effect.gen(function*() {
        const mock = yield* MockRefreshClient.make()
        const first = yield* mock.issueSession()
        const second = yield* mock.refresh(first.refreshToken)
        yield* mock.refresh(second.refreshToken)

        const tokens = yield* mock.tokens
        expect(tokens.every(Redacted.isRedacted)).toBe(true)
        expect(tokens.map(Redacted.value)).toStrictEqual(["mock-refresh-token-1", "mock-refresh-token-2"])
        const calls = yield* mock.calls
        expect(calls.map((call) => call.n)).toStrictEqual([1, 2])
        const printed = `${JSON.stringify(calls)} ${String(calls[0]!.refreshToken)} ${
          JSON.stringify(yield* mock.stats)
        }`
        for (const token of yield* mock.issuedTokens) expect(printed).not.toContain(Redacted.value(token))
        expect(printed).toContain("<redacted>")
      }))

    it.effect("lists every token it issued, for leak audits", () =>
      Effect.gen(function*() {
        const mock = yield* MockRefreshClient.make()
        const seeded = yield* mock.issueSession()
        yield* mock.refresh(seeded.refreshToken)
        expect((yield* mock.issuedTokens).map(Redacted.value)).toStrictEqual([
          "mock-access-token-1",
          "mock-refresh-token-1",
          "mock-access-token-2",
          "mock-refresh-token-2"
        ])
      }))

    it.effect("returns copies: a record read earlier does not change", () =>
      Effect.gen(function*() {
        const mock = yield* MockRefreshClient.make({ script: [MockRefreshClient.succeed({ delay: "1 second" })] })
        const seeded = yield* mock.issueSession()
        const fiber = yield* Effect.forkChild(mock.refresh(seeded.refreshToken))
        yield* settle
        const before = yield* mock.calls
        yield* TestClock.adjust("1 second")
        yield* Fiber.join(fiber)
        expect(before[0]!.outcome).toBe("pending")
        expect((yield* mock.calls)[0]!.outcome).toBe("rotated")
      }))
  })

  describe("options", () => {
    for (
      const [what, lifetime] of [
        ["-1 ms", -1],
        ["\"-5 seconds\"", "-5 seconds"],
        ["infinity", Duration.infinity]
      ] as const
    ) {
      it.effect(`refuses a lifetime of ${what} with a defect naming the option`, () =>
        Effect.gen(function*() {
          const exit = yield* Effect.exit(MockRefreshClient.make({ lifetime }))
          expect(Exit.isFailure(exit) && Cause.hasDies(exit.cause)).toBe(true)
          expect(Exit.isFailure(exit) && Cause.pretty(exit.cause)).toContain(`"lifetime"`)
        }))
    }

    for (const reuseWindow of [-1, "-5 seconds", Duration.infinity] as const) {
      it.effect(`refuses a reuseWindow of ${String(reuseWindow)} with the options' one wording`, () =>
        Effect.gen(function*() {
          const exit = yield* Effect.exit(MockRefreshClient.make({ reuseWindow }))
          expect(Exit.isFailure(exit) && Cause.hasDies(exit.cause)).toBe(true)
          expect(Exit.isFailure(exit) && Cause.pretty(exit.cause)).toContain(
            `MockRefreshClient: option "reuseWindow" must be a finite, non-negative duration`
          )
        }))
    }

    it.effect("refuses a reuse mode it does not know with the options' one wording", () =>
      Effect.gen(function*() {
        const exit = yield* Effect.exit(MockRefreshClient.make({ reuse: "lenient" as "gotrue" }))
        expect(Exit.isFailure(exit) && Cause.pretty(exit.cause)).toContain(
          `MockRefreshClient: option "reuse" must be one of "window", "gotrue"`
        )
      }))

    it.effect("refuses a lifetime with the options' one wording", () =>
      Effect.gen(function*() {
        const exit = yield* Effect.exit(MockRefreshClient.make({ lifetime: -1 }))
        expect(Exit.isFailure(exit) && Cause.pretty(exit.cause)).toContain(
          `MockRefreshClient: option "lifetime" must be a finite, non-negative duration`
        )
      }))

    it.effect("a step with a negative delay dies when it is used, naming the option", () =>
      Effect.gen(function*() {
        const mock = yield* MockRefreshClient.make({ script: [MockRefreshClient.succeed({ delay: -5 })] })
        const seeded = yield* mock.issueSession()
        const exit = yield* Effect.exit(mock.refresh(seeded.refreshToken))
        expect(Exit.isFailure(exit) && Cause.hasDies(exit.cause)).toBe(true)
        expect(Exit.isFailure(exit) && Cause.pretty(exit.cause)).toContain(`"delay"`)
      }))
  })

  describe("as a layer", () => {
    it.effect("provides RefreshClient and the controls, backed by the same mock", () =>
      Effect.gen(function*() {
        const mock = yield* MockRefreshClient.MockRefreshClient
        const seeded = yield* mock.issueSession()
        const next = yield* RefreshClient.refresh(seeded.refreshToken)
        expect(yield* mock.isLive(next.refreshToken)).toBe(true)
        expect((yield* mock.stats).calls).toBe(1)
      }).pipe(Effect.provide(MockRefreshClient.layer())))

    it.effect("keeps a SessionManager alive for a day: one refresh per expiry, no reuse", () =>
      Effect.gen(function*() {
        const mock = yield* MockRefreshClient.make({ lifetime: "1 hour" })
        const seeded = yield* mock.issueSession()
        const events: Array<string> = []
        yield* Effect.gen(function*() {
          const manager = yield* SessionManager.SessionManager
          yield* manager.events.pipe(
            Stream.runForEach((event) => Effect.sync(() => events.push(event._tag))),
            Effect.forkChild
          )
          yield* settle
          yield* TestClock.adjust("24 hours")
          const token = yield* manager.accessToken
          expect(yield* mock.isLive((yield* manager.session).refreshToken)).toBe(true)
          expect(Redacted.value(token)).toMatch(/^mock-access-token-\d+$/)
        }).pipe(
          Effect.provide(
            SessionManager.layer({ margin: "1 minute" }).pipe(
              Layer.provide(Layer.succeed(RefreshClient.RefreshClient, mock)),
              Layer.provide(SessionStore.layerMemory(seeded))
            )
          ),
          Effect.scoped
        )
        // A refresh every 59 minutes: 24 hours hold 24 of them.
        expect(yield* mock.stats).toMatchObject({ calls: 24, rotations: 24, reuseRejections: 0 })
        expect(events.filter((tag) => tag === "Refreshed")).toHaveLength(24)
      }))
  })
})

// The testing guide's examples are test bodies; running them keeps the guide true.
describe("docs/examples/testing.ts", () => {
  it.effect("refreshesAheadOfExpiry", () => Examples.refreshesAheadOfExpiry)
  it.effect("oneRefreshForManyReaders", () => Examples.oneRefreshForManyReaders)
  it.effect("ridesOutAnOutage", () => Examples.ridesOutAnOutage)
  it.effect("signsOutOnRejection", () => Examples.signsOutOnRejection)
  it.effect("lostAnswerSignsOut", () => Examples.lostAnswerSignsOut)
  it.effect("lostAnswerWithGoTrue", () => Examples.lostAnswerWithGoTrue)
  it.live("replaysAfterRefresh", () => Examples.replaysAfterRefresh)
  it.live("lostAnswerStrictAndGoTrue", () => Examples.lostAnswerStrictAndGoTrue)
  it.live("noTokenInTheOutput", () => Examples.noTokenInTheOutput)
  it.effect("timeoutOnTheTestClock", () => Examples.timeoutOnTheTestClock)
})

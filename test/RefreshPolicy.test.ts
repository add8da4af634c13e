import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Fiber, Option, Redacted, Schedule } from "effect"
import { TestClock } from "effect/testing"
import { RefreshClient, RefreshPolicy } from "moon-refresh"
import * as TestHttpClient from "./support/TestHttpClient.js"

const refreshToken = "refresh-token-secret-v1"

const session = {
  access_token: "access-token-secret-v2",
  refresh_token: "refresh-token-secret-v2",
  expires_in: 3600,
  token_type: "bearer",
  user: { id: "user-1" }
}

const serverError = TestHttpClient.json(500, { error: "database is down" })

/** Starts a refresh through `server` with `policy`, in a fiber, so the test can move the TestClock. */
const forkRefresh = (server: TestHttpClient.TestHttpClient, policy: RefreshPolicy.RefreshPolicy) =>
  RefreshClient.refresh(refreshToken).pipe(
    Effect.provide(RefreshClient.layer({ policy })),
    Effect.provide(server.layer),
    Effect.forkChild
  )

/** The delay before each retry: the time between one request and the next. */
const delaysOf = (server: TestHttpClient.TestHttpClient): Array<number> =>
  server.sentAt().slice(1).map((at, i) => at - server.sentAt()[i]!)

const unjittered = RefreshPolicy.exponential({
  base: Duration.millis(200),
  factor: 2,
  maxRetries: 5,
  maxDelay: Duration.seconds(10),
  maxElapsed: Duration.seconds(30),
  jitter: false
})

describe("RefreshPolicy.exponential", () => {
  it.effect("without jitter, waits exactly 200, 400, 800, 1600 and 3200 ms between attempts", () =>
    Effect.gen(function*() {
      const server = TestHttpClient.make(serverError)
      const fiber = yield* forkRefresh(server, unjittered)

      // Step the clock to one millisecond before each retry is due, then onto it.
      for (const [i, delay] of [200, 400, 800, 1600, 3200].entries()) {
        yield* TestClock.adjust(Duration.millis(delay - 1))
        expect(server.requests).toHaveLength(i + 1)
        yield* TestClock.adjust(Duration.millis(1))
        expect(server.requests).toHaveLength(i + 2)
      }

      const error = yield* Effect.flip(Fiber.join(fiber))
      expect(error._tag).toBe("ServerError")
      expect(server.sentAt()).toStrictEqual([0, 200, 600, 1400, 3000, 6200])
    }))

  it.effect("caps each delay at maxDelay", () =>
    Effect.gen(function*() {
      const server = TestHttpClient.make(serverError)
      const policy = RefreshPolicy.exponential({
        base: Duration.seconds(1),
        factor: 10,
        maxRetries: 3,
        maxDelay: Duration.seconds(2),
        maxElapsed: Duration.minutes(1),
        jitter: false
      })
      const fiber = yield* forkRefresh(server, policy)
      yield* TestClock.adjust(Duration.minutes(1))
      yield* Effect.flip(Fiber.join(fiber))
      expect(delaysOf(server)).toStrictEqual([1000, 2000, 2000])
    }))

  it.effect("starts no retry later than maxElapsed after the first failure", () =>
    Effect.gen(function*() {
      const server = TestHttpClient.make(serverError)
      const policy = RefreshPolicy.exponential({
        base: Duration.seconds(1),
        factor: 1,
        maxRetries: 100,
        maxDelay: Duration.seconds(10),
        maxElapsed: Duration.millis(3500),
        jitter: false
      })
      const fiber = yield* forkRefresh(server, policy)
      yield* TestClock.adjust(Duration.minutes(1))
      const error = yield* Effect.flip(Fiber.join(fiber))
      expect(error._tag).toBe("ServerError")
      // A fifth attempt would start at 4000 ms, past the 3500 ms budget.
      expect(server.sentAt()).toStrictEqual([0, 1000, 2000, 3000])
    }))
})

describe("RefreshPolicy.default", () => {
  it.effect("jitters each delay within 0.8x to 1.2x of 200, 400, 800, 1600 and 3200 ms", () =>
    Effect.gen(function*() {
      const nominal = [200, 400, 800, 1600, 3200]
      const allDelays: Array<number> = []
      // Several runs, so that a jitter that never moves a delay would be noticed.
      for (let run = 0; run < 5; run++) {
        const server = TestHttpClient.make(serverError)
        const fiber = yield* forkRefresh(server, RefreshPolicy.default)
        yield* TestClock.adjust(Duration.minutes(1))
        yield* Effect.flip(Fiber.join(fiber))

        const delays = delaysOf(server)
        expect(delays).toHaveLength(nominal.length)
        delays.forEach((delay, i) => {
          expect(delay).toBeGreaterThanOrEqual(nominal[i]! * 0.8)
          expect(delay).toBeLessThanOrEqual(nominal[i]! * 1.2)
        })
        allDelays.push(...delays)
      }
      expect(allDelays.some((delay, i) => delay !== nominal[i % nominal.length])).toBe(true)
    }))

  it.effect("makes six attempts in all, then surfaces the last error", () =>
    Effect.gen(function*() {
      const server = TestHttpClient.make(
        ...[1, 2, 3, 4, 5, 6, 7].map((n) => TestHttpClient.json(500, { error: `failure ${n}` }))
      )
      const fiber = yield* forkRefresh(server, RefreshPolicy.default)
      yield* TestClock.adjust(Duration.minutes(5))
      const error = yield* Effect.flip(Fiber.join(fiber))
      expect(server.requests).toHaveLength(6)
      expect(error).toMatchObject({ _tag: "ServerError", status: 500, message: "failure 6" })
    }))

  it.effect("rides out a 500 and a 503 and returns the session once the server recovers", () =>
    Effect.gen(function*() {
      const server = TestHttpClient.make(
        serverError,
        TestHttpClient.text(503, "Service Unavailable"),
        TestHttpClient.json(200, session)
      )
      const fiber = yield* forkRefresh(server, RefreshPolicy.default)
      yield* TestClock.adjust(Duration.minutes(1))
      const refreshed = yield* Fiber.join(fiber)
      expect(Redacted.value(refreshed.refreshToken)).toBe("refresh-token-secret-v2")
      expect(server.requests).toHaveLength(3)
    }))

  it.effect("retries a transport failure", () =>
    Effect.gen(function*() {
      const server = TestHttpClient.make(TestHttpClient.transportFailure(), TestHttpClient.json(200, session))
      const fiber = yield* forkRefresh(server, RefreshPolicy.default)
      yield* TestClock.adjust(Duration.minutes(1))
      const refreshed = yield* Fiber.join(fiber)
      expect(Redacted.value(refreshed.accessToken)).toBe("access-token-secret-v2")
      expect(server.requests).toHaveLength(2)
    }))

  it.effect("honours a Retry-After given in seconds", () =>
    Effect.gen(function*() {
      const server = TestHttpClient.make(
        TestHttpClient.json(429, { message: "slow down" }, { "retry-after": "5" }),
        TestHttpClient.json(200, session)
      )
      const fiber = yield* forkRefresh(server, RefreshPolicy.default)
      yield* TestClock.adjust(Duration.millis(4999))
      expect(server.requests).toHaveLength(1)
      yield* TestClock.adjust(Duration.millis(1))
      yield* Fiber.join(fiber)
      expect(server.sentAt()).toStrictEqual([0, 5000])
    }))

  it.effect("honours a Retry-After given as an HTTP-date, relative to the Clock", () =>
    Effect.gen(function*() {
      // Move the clock off the epoch so that "relative to now" is visible.
      yield* TestClock.adjust(Duration.seconds(1000))
      const retryAt = new Date(1_000_000 + 7000).toUTCString() // "Thu, 01 Jan 1970 00:16:47 GMT"
      const server = TestHttpClient.make(
        TestHttpClient.text(503, "maintenance", { "retry-after": retryAt }),
        TestHttpClient.json(200, session)
      )
      const fiber = yield* forkRefresh(server, RefreshPolicy.default)
      yield* TestClock.adjust(Duration.millis(6999))
      expect(server.requests).toHaveLength(1)
      yield* TestClock.adjust(Duration.millis(1))
      yield* Fiber.join(fiber)
      expect(server.sentAt()).toStrictEqual([1_000_000, 1_007_000])
    }))

  // Issue 22: the date was measured against the local clock only. With the
  // client 2 h behind the server, "in 7 s" read as 2 h 7 s (the 1 h cap, past
  // the policy's budget: no retry); 2 h ahead, as the past (a retry at once).
  for (
    const [what, skew] of [["2 h behind", 2 * 3_600_000], ["2 h ahead", -2 * 3_600_000]] as const
  ) {
    it.effect(`measures a Retry-After date against the answer's Date, the client's clock ${what}`, () =>
      Effect.gen(function*() {
        yield* TestClock.adjust(Duration.hours(3))
        const now = 3 * 3_600_000
        const server = now + skew
        const answer = TestHttpClient.text(503, "maintenance", {
          "date": new Date(server).toUTCString(),
          "retry-after": new Date(server + 7000).toUTCString()
        })
        const client = TestHttpClient.make(answer, TestHttpClient.json(200, session))
        const fiber = yield* forkRefresh(client, RefreshPolicy.default)
        yield* TestClock.adjust(Duration.millis(6999))
        expect(client.requests).toHaveLength(1)
        yield* TestClock.adjust(Duration.millis(1))
        yield* Fiber.join(fiber)
        expect(client.sentAt()).toStrictEqual([now, now + 7000])
      }))
  }

  it.effect("measures a Retry-After date against the Clock when the answer's Date is implausible", () =>
    Effect.gen(function*() {
      yield* TestClock.adjust(Duration.seconds(1000))
      // More than 366 days from the client's clock: a broken header, not a clock.
      const answer = TestHttpClient.text(503, "maintenance", {
        "date": new Date(Date.UTC(2100, 0, 1)).toUTCString(),
        "retry-after": new Date(1_000_000 + 7000).toUTCString()
      })
      const client = TestHttpClient.make(answer, TestHttpClient.json(200, session))
      const fiber = yield* forkRefresh(client, RefreshPolicy.default)
      yield* TestClock.adjust(Duration.seconds(7))
      yield* Fiber.join(fiber)
      expect(client.sentAt()).toStrictEqual([1_000_000, 1_007_000])
    }))

  it.effect("never shortens a delay when Retry-After asks for less than the backoff", () =>
    Effect.gen(function*() {
      const server = TestHttpClient.make(
        TestHttpClient.json(429, { message: "slow down" }, { "retry-after": "0" }),
        TestHttpClient.json(200, session)
      )
      const fiber = yield* forkRefresh(server, unjittered)
      yield* TestClock.adjust(Duration.minutes(1))
      yield* Fiber.join(fiber)
      expect(server.sentAt()).toStrictEqual([0, 200])
    }))

  it.effect("stops at once and surfaces the RateLimitedError when Retry-After would pass maxElapsed", () =>
    Effect.gen(function*() {
      const server = TestHttpClient.make(
        TestHttpClient.json(429, { message: "slow down" }, { "retry-after": "60" }),
        TestHttpClient.json(200, session)
      )
      const fiber = yield* forkRefresh(server, RefreshPolicy.default)
      // Not one second passes: the error must surface without waiting.
      yield* TestClock.adjust(Duration.millis(1))
      const exit = fiber.pollUnsafe()
      expect(exit).toBeDefined()

      const error = yield* Effect.flip(Fiber.join(fiber))
      expect(server.requests).toHaveLength(1)
      expect(error._tag).toBe("RateLimitedError")
      expect(error._tag === "RateLimitedError" && Option.map(error.retryAfter, Duration.toMillis)).toStrictEqual(
        Option.some(60_000)
      )
    }))
})

describe("RefreshPolicy.none", () => {
  it.effect("never retries: the first failure surfaces", () =>
    Effect.gen(function*() {
      const server = TestHttpClient.make(serverError, TestHttpClient.json(200, session))
      const fiber = yield* forkRefresh(server, RefreshPolicy.none)
      yield* TestClock.adjust(Duration.minutes(1))
      const error = yield* Effect.flip(Fiber.join(fiber))
      expect(error._tag).toBe("ServerError")
      expect(server.requests).toHaveLength(1)
    }))
})

describe("any policy", () => {
  it.effect("never retries a rejected token, even with a user-supplied Schedule.recurs(10)", () =>
    Effect.gen(function*() {
      const server = TestHttpClient.make(
        TestHttpClient.json(401, { error: "invalid_grant" }),
        TestHttpClient.json(200, session)
      )
      const fiber = yield* forkRefresh(server, Schedule.recurs(10))
      yield* TestClock.adjust(Duration.minutes(1))
      const error = yield* Effect.flip(Fiber.join(fiber))
      expect(error._tag).toBe("TokenRejectedError")
      expect(server.requests).toHaveLength(1)
    }))

  it.effect("never retries a 500 that says the refresh token was already used, even with Schedule.recurs(10)", () =>
    Effect.gen(function*() {
      const server = TestHttpClient.make(
        TestHttpClient.json(500, {
          error_code: "refresh_token_already_used",
          msg: "Invalid Refresh Token: Already Used"
        }),
        TestHttpClient.json(200, session)
      )
      const fiber = yield* forkRefresh(server, Schedule.recurs(10))
      yield* TestClock.adjust(Duration.minutes(1))
      const error = yield* Effect.flip(Fiber.join(fiber))
      expect(error._tag).toBe("TokenRejectedError")
      expect(server.requests).toHaveLength(1)
    }))

  it.effect("retries what is retryable with a user-supplied schedule", () =>
    Effect.gen(function*() {
      const server = TestHttpClient.make(serverError, serverError, TestHttpClient.json(200, session))
      const fiber = yield* forkRefresh(server, Schedule.spaced(Duration.seconds(1)))
      yield* TestClock.adjust(Duration.minutes(1))
      yield* Fiber.join(fiber)
      expect(server.sentAt()).toStrictEqual([0, 1000, 2000])
    }))
})

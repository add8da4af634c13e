import { describe, expect, it } from "@effect/vitest"
import type { Layer } from "effect"
import {
  Cause,
  Config,
  ConfigProvider,
  Context,
  DateTime,
  Duration,
  Effect,
  Exit,
  Fiber,
  Logger,
  Option,
  Redacted,
  References,
  Result,
  Tracer
} from "effect"
import { FetchHttpClient, HttpClient, HttpClientResponse } from "effect/http"
import { TestClock } from "effect/testing"
import type { Session } from "moon-refresh"
import { RefreshClient, RefreshError, RefreshPolicy } from "moon-refresh"
import { inspect } from "node:util"
import { maxMessageLength } from "../src/internal/message.js"
import { recordingTracer } from "./support/RecordingTracer.js"
import * as TestHttpClient from "./support/TestHttpClient.js"

// The refresh token the caller holds, and the tokens of the session the server issues.
const refreshToken = "refresh-token-secret-v1"
const newAccessToken = "eyJhbGciOiJIUzI1NiJ9.access-token-secret-v2.signature"
const newRefreshToken = "refresh-token-secret-v2"
const allTokens = [refreshToken, newAccessToken, newRefreshToken]

// 2025-11-25T19:46:40Z, far ahead of the TestClock, which starts at the epoch.
const expiresAtSeconds = 1764100000

const sessionBody = {
  access_token: newAccessToken,
  refresh_token: newRefreshToken,
  expires_in: 3600,
  expires_at: expiresAtSeconds,
  token_type: "bearer",
  user: { id: "user-1", email: "ada@example.com" }
}

/** A refresh as a user writes it, through `RefreshClient.layer(options)` over the double `server`. */
function refreshWith(server: TestHttpClient.TestHttpClient, options: RefreshClient.Options = {}) {
  return (token: string | Redacted.Redacted<string> = refreshToken) =>
    RefreshClient.refresh(token).pipe(Effect.provide(RefreshClient.layer(options)), Effect.provide(server.layer))
}

/** Refreshes once against a single reply, with no retries, and returns the error. */
const failureOf = (reply: TestHttpClient.Reply) =>
  Effect.flip(refreshWith(TestHttpClient.make(reply), { policy: RefreshPolicy.none })())

// `toEqual` cannot see inside a `Redacted` (two of them always compare equal),
// so sessions are compared through their revealed values.
const reveal = (session: Session.Session) => ({
  accessToken: Redacted.value(session.accessToken),
  refreshToken: Redacted.value(session.refreshToken),
  expiresAt: DateTime.toEpochMillis(session.expiresAt),
  tokenType: session.tokenType,
  user: session.user
})

const expectNoToken = (text: string) => {
  for (const token of allTokens) expect(text).not.toContain(token)
}

describe("the request", () => {
  it.effect("POSTs to https://beta.usemoon.ai/auth/refresh by default", () =>
    Effect.gen(function*() {
      const server = TestHttpClient.make(TestHttpClient.json(200, sessionBody))
      yield* refreshWith(server)()
      expect(server.requests).toHaveLength(1)
      expect(server.requests[0]!.method).toBe("POST")
      expect(server.requests[0]!.url).toBe("https://beta.usemoon.ai/auth/refresh")
    }))

  it.effect("sends exactly {\"refresh_token\": ...} as the JSON body", () =>
    Effect.gen(function*() {
      const server = TestHttpClient.make(TestHttpClient.json(200, sessionBody))
      yield* refreshWith(server)()
      const body = server.requests[0]!.body
      expect(body).toBe(JSON.stringify({ refresh_token: refreshToken }))
      expect(JSON.parse(body)).toStrictEqual({ refresh_token: refreshToken })
    }))

  it.effect("sends Content-Type and Accept application/json, and no Authorization header", () =>
    Effect.gen(function*() {
      const server = TestHttpClient.make(TestHttpClient.json(200, sessionBody))
      yield* refreshWith(server)()
      const headers = server.requests[0]!.headers
      expect(headers["content-type"]).toBe("application/json")
      expect(headers["accept"]).toBe("application/json")
      expect(headers["authorization"]).toBeUndefined()
    }))

  it.effect("keeps the base URL's path prefix and drops its trailing slash", () =>
    Effect.gen(function*() {
      const server = TestHttpClient.make(TestHttpClient.json(200, sessionBody))
      yield* refreshWith(server, { baseUrl: "https://gateway.example.com/moon/" })()
      expect(server.requests[0]!.url).toBe("https://gateway.example.com/moon/auth/refresh")
    }))

  it.effect("appends a custom path to the base URL", () =>
    Effect.gen(function*() {
      const server = TestHttpClient.make(TestHttpClient.json(200, sessionBody))
      yield* refreshWith(server, { baseUrl: "https://gateway.example.com/moon", path: "/v2/auth/refresh" })()
      expect(server.requests[0]!.url).toBe("https://gateway.example.com/moon/v2/auth/refresh")
    }))

  it.effect("never puts the refresh token in the URL", () =>
    Effect.gen(function*() {
      const server = TestHttpClient.make(TestHttpClient.json(200, sessionBody))
      yield* refreshWith(server)()
      const url = new URL(server.requests[0]!.url)
      expect(url.search).toBe("")
      expect(url.hash).toBe("")
      expect(decodeURIComponent(url.href)).not.toContain(refreshToken)
    }))

  it.effect("accepts the refresh token as a plain string or as a Redacted", () =>
    Effect.gen(function*() {
      const server = TestHttpClient.make(TestHttpClient.json(200, sessionBody))
      yield* refreshWith(server)(refreshToken)
      yield* refreshWith(server)(Redacted.make(refreshToken))
      expect(server.requests.map((request) => request.body)).toStrictEqual([
        JSON.stringify({ refresh_token: refreshToken }),
        JSON.stringify({ refresh_token: refreshToken })
      ])
    }))

  for (const [name, blank] of [["an empty", ""], ["a whitespace-only", " \t\n "]] as const) {
    it.effect(`refuses ${name} refresh token as TokenRejectedError without sending a request`, () =>
      Effect.gen(function*() {
        const server = TestHttpClient.make(TestHttpClient.json(200, sessionBody))
        const { spans, tracer } = recordingTracer()
        const error = yield* Effect.flip(refreshWith(server)(blank).pipe(Effect.withTracer(tracer)))
        expect(error._tag).toBe("TokenRejectedError")
        expect(error._tag === "TokenRejectedError" && error.status).toBeUndefined()
        expect(server.requests).toHaveLength(0)
        const span = spans.find((span) => span.name === "moon-refresh/refresh")
        expect(span?.attributes.get("moon.refresh.attempts")).toBe(0)
        expect(span?.attributes.get("moon.refresh.outcome")).toBe("TokenRejectedError")
      }))
  }
})

describe("a successful response", () => {
  it.effect("decodes a bare session body", () =>
    Effect.gen(function*() {
      const session = yield* refreshWith(TestHttpClient.make(TestHttpClient.json(200, sessionBody)))()
      expect(reveal(session)).toStrictEqual({
        accessToken: newAccessToken,
        refreshToken: newRefreshToken,
        // expires_in (3600 s) from receipt, on the TestClock at 0: expires_at is the server's clock.
        expiresAt: 3_600_000,
        tokenType: "bearer",
        user: { id: "user-1", email: "ada@example.com" }
      })
    }))

  it.effect("decodes a body wrapped in { token: ... } into the same Session as the bare body", () =>
    Effect.gen(function*() {
      const bare = yield* refreshWith(TestHttpClient.make(TestHttpClient.json(200, sessionBody)))()
      const wrapped = yield* refreshWith(TestHttpClient.make(TestHttpClient.json(200, { token: sessionBody })))()
      expect(reveal(wrapped)).toStrictEqual(reveal(bare))
    }))

  it.effect("prefers expires_in over expires_at: a duration needs no clock, so neither side's clock can stretch it", () =>
    Effect.gen(function*() {
      const server = TestHttpClient.make(TestHttpClient.json(200, { ...sessionBody, expires_in: 60 }))
      const session = yield* refreshWith(server)()
      expect(DateTime.toEpochMillis(session.expiresAt)).toBe(60_000)
    }))

  it.effect("derives the expiry from expires_in and the Clock when expires_at is absent", () =>
    Effect.gen(function*() {
      const { expires_at: _, ...withoutExpiresAt } = sessionBody
      yield* TestClock.adjust(Duration.hours(2))
      const server = TestHttpClient.make(TestHttpClient.json(200, { ...withoutExpiresAt, expires_in: 3600 }))
      const session = yield* refreshWith(server)()
      expect(DateTime.toEpochMillis(session.expiresAt)).toBe(Duration.toMillis(Duration.hours(3)))
    }))

  it.effect("keeps the extra fields of the server's user object", () =>
    Effect.gen(function*() {
      const user = {
        id: "user-1",
        email: "ada@example.com",
        role: "authenticated",
        app_metadata: { provider: "email" }
      }
      const session = yield* refreshWith(
        TestHttpClient.make(TestHttpClient.json(200, { token: { ...sessionBody, user } }))
      )()
      expect(session.user).toStrictEqual(user)
    }))
})

describe("a 2xx body that is not a session", () => {
  const { expires_at: _, ...withoutExpiresAt } = sessionBody
  const { expires_at: _e, expires_in: _i, ...withoutExpiry } = sessionBody
  const { access_token: _a, ...withoutAccessToken } = sessionBody
  const { refresh_token: _r, ...withoutRefreshToken } = sessionBody

  // Each case: the body, the field the message must name, and a value the message must not show.
  const cases: ReadonlyArray<readonly [string, unknown, string, string]> = [
    ["a missing access_token", withoutAccessToken, "access_token", newRefreshToken],
    [
      "an access_token that is not a string",
      { ...sessionBody, access_token: ["leaked-access-value"] },
      "access_token",
      "leaked-access-value"
    ],
    ["a missing refresh_token", withoutRefreshToken, "refresh_token", newAccessToken],
    [
      "a refresh_token that is not a string",
      { ...sessionBody, refresh_token: { value: "leaked-refresh-value" } },
      "refresh_token",
      "leaked-refresh-value"
    ],
    ["an empty refresh_token", { ...sessionBody, refresh_token: "" }, "refresh_token", newAccessToken],
    ["a missing user.id", { ...sessionBody, user: { email: "ada@example.com" } }, "user.id", newRefreshToken],
    ["a user.id that is not a string", { ...sessionBody, user: { id: 918273645 } }, "user.id", "918273645"],
    [
      "a missing expires_in (and no expires_at)",
      withoutExpiry,
      "expires_in",
      newRefreshToken
    ],
    [
      "an expires_in that is not a number",
      { ...withoutExpiresAt, expires_in: "3600 seconds" },
      "expires_in",
      "3600 seconds"
    ],
    [
      "a wrapped body missing token.refresh_token",
      { token: withoutRefreshToken },
      "token.refresh_token",
      newAccessToken
    ]
  ]

  for (const [name, body, field, secret] of cases) {
    it.effect(`is a MalformedResponseError naming the field, never its value: ${name}`, () =>
      Effect.gen(function*() {
        const error = yield* failureOf(TestHttpClient.json(200, body))
        expect(error._tag).toBe("MalformedResponseError")
        expect(error.message).toContain(`"${field}"`)
        expect(error.message).not.toContain(secret)
        expectNoToken(error.message)
      }))
  }

  it.effect("is a MalformedResponseError when the body is not JSON", () =>
    Effect.gen(function*() {
      const error = yield* failureOf(TestHttpClient.text(200, "OK, refreshed!"))
      expect(error).toMatchObject({ _tag: "MalformedResponseError", status: 200 })
    }))

  it.effect("is a MalformedResponseError when the body is JSON of neither shape", () =>
    Effect.gen(function*() {
      const error = yield* failureOf(TestHttpClient.json(200, { ok: true }))
      expect(error._tag).toBe("MalformedResponseError")
    }))

  it.effect("is not retried by the default policy", () =>
    Effect.gen(function*() {
      const server = TestHttpClient.make(TestHttpClient.text(200, "<html>not json</html>"))
      const fiber = yield* Effect.forkChild(refreshWith(server)())
      yield* TestClock.adjust(Duration.minutes(1))
      const error = yield* Effect.flip(Fiber.join(fiber))
      expect(error._tag).toBe("MalformedResponseError")
      expect(server.requests).toHaveLength(1)
    }))
})

describe("a failed response", () => {
  const messageForms: ReadonlyArray<readonly [string, TestHttpClient.Reply, string]> = [
    ["a JSON error field", TestHttpClient.json(500, { error: "database unavailable" }), "database unavailable"],
    ["a JSON message field", TestHttpClient.json(500, { message: "upstream timed out" }), "upstream timed out"],
    ["a JSON msg field", TestHttpClient.json(500, { code: 500, msg: "unexpected failure" }), "unexpected failure"],
    [
      "a JSON error_description field",
      TestHttpClient.json(500, { error: "server_error", error_description: "auth backend unreachable" }),
      "auth backend unreachable"
    ],
    ["a plain-text body", TestHttpClient.text(500, "Internal Server Error\n"), "Internal Server Error"],
    [
      "an HTML page (its title)",
      TestHttpClient.html(
        500,
        "<!DOCTYPE html><html><head><title>500 Internal Server Error</title><style>h1{}</style></head>"
          + "<body><h1>Something broke</h1><p>Try later.</p></body></html>"
      ),
      "500 Internal Server Error"
    ]
  ]

  for (const [form, reply, message] of messageForms) {
    it.effect(`turns a 500 with ${form} into a ServerError with that message`, () =>
      Effect.gen(function*() {
        const error = yield* failureOf(reply)
        expect(error).toMatchObject({ _tag: "ServerError", status: 500, message })
      }))
  }

  it.effect("caps a server's message at 500 characters", () =>
    Effect.gen(function*() {
      const error = yield* failureOf(TestHttpClient.text(500, "x".repeat(10_000)))
      expect(error._tag).toBe("ServerError")
      expect(error.message.length).toBe(maxMessageLength)
    }))

  it.effect("turns a 500 that says the refresh token was already used into TokenRejectedError, sent once", () =>
    Effect.gen(function*() {
      const server = TestHttpClient.make(
        TestHttpClient.json(500, {
          error_code: "refresh_token_already_used",
          msg: "Invalid Refresh Token: Already Used"
        }),
        TestHttpClient.json(200, sessionBody)
      )
      // The default policy, and all the time it could want: still one request.
      const fiber = yield* Effect.forkChild(refreshWith(server)())
      yield* TestClock.adjust(Duration.minutes(1))
      const error = yield* Effect.flip(Fiber.join(fiber))
      expect(error).toMatchObject({
        _tag: "TokenRejectedError",
        status: 500,
        message: "Invalid Refresh Token: Already Used"
      })
      expect(server.requests).toHaveLength(1)
    }))

  const deadTokenBodies: ReadonlyArray<readonly [string, TestHttpClient.Reply]> = [
    ["Refresh Token Not Found", TestHttpClient.json(500, { msg: "Invalid Refresh Token: Refresh Token Not Found" })],
    ["Session Expired", TestHttpClient.json(500, { message: "Invalid Refresh Token: Session Expired" })],
    ["the code session_not_found alone", TestHttpClient.json(500, { code: "session_not_found", message: "gone" })],
    ["the code session_expired alone", TestHttpClient.json(502, { error_code: "session_expired" })],
    ["a plain-text dead-token message", TestHttpClient.text(500, "Invalid Refresh Token: Already Used")]
  ]
  for (const [name, reply] of deadTokenBodies) {
    it.effect(`recognises a dead refresh token from ${name}`, () =>
      Effect.gen(function*() {
        const error = yield* failureOf(reply)
        expect(error._tag).toBe("TokenRejectedError")
      }))
  }

  for (const status of [400, 401, 403]) {
    it.effect(`turns a ${status} into TokenRejectedError and never retries it`, () =>
      Effect.gen(function*() {
        const server = TestHttpClient.make(TestHttpClient.json(status, { error: "invalid_grant" }))
        const fiber = yield* Effect.forkChild(refreshWith(server)())
        yield* TestClock.adjust(Duration.minutes(1))
        const error = yield* Effect.flip(Fiber.join(fiber))
        expect(error).toMatchObject({ _tag: "TokenRejectedError", status, message: "invalid_grant" })
        expect(server.requests).toHaveLength(1)
      }))
  }

  it.effect("turns a 429 into RateLimitedError carrying its Retry-After", () =>
    Effect.gen(function*() {
      const error = yield* failureOf(TestHttpClient.json(429, { message: "too many requests" }, { "retry-after": "7" }))
      expect(error).toMatchObject({ _tag: "RateLimitedError", status: 429, message: "too many requests" })
      expect(RefreshError.retryAfter(error).pipe(Option.map(Duration.toMillis))).toStrictEqual(Option.some(7000))
    }))

  it.effect("turns a 429 without Retry-After into RateLimitedError with no retryAfter", () =>
    Effect.gen(function*() {
      const error = yield* failureOf(TestHttpClient.text(429, "Too Many Requests"))
      expect(error._tag).toBe("RateLimitedError")
      expect(RefreshError.retryAfter(error)).toStrictEqual(Option.none())
    }))

  it.effect("turns a 503 with Retry-After into RateLimitedError", () =>
    Effect.gen(function*() {
      const error = yield* failureOf(
        TestHttpClient.html(503, "<title>Service Unavailable</title>", { "retry-after": "120" })
      )
      expect(error).toMatchObject({ _tag: "RateLimitedError", status: 503, message: "Service Unavailable" })
      expect(RefreshError.retryAfter(error).pipe(Option.map(Duration.toMillis))).toStrictEqual(Option.some(120_000))
    }))

  it.effect("turns a 503 without Retry-After into a ServerError", () =>
    Effect.gen(function*() {
      const error = yield* failureOf(TestHttpClient.text(503, "Service Unavailable"))
      expect(error).toMatchObject({ _tag: "ServerError", status: 503 })
    }))

  it.effect("turns a 404 (a wrong base URL) into a ServerError that is never retried", () =>
    Effect.gen(function*() {
      const server = TestHttpClient.make(TestHttpClient.text(404, "Not Found"))
      const fiber = yield* Effect.forkChild(refreshWith(server)())
      yield* TestClock.adjust(Duration.minutes(1))
      const error = yield* Effect.flip(Fiber.join(fiber))
      expect(error).toMatchObject({ _tag: "ServerError", status: 404, message: "Not Found" })
      expect(server.requests).toHaveLength(1)
    }))

  it.effect("turns a broken connection into TransportError with reason Network", () =>
    Effect.gen(function*() {
      const error = yield* failureOf(TestHttpClient.transportFailure("socket hang up"))
      expect(error).toMatchObject({ _tag: "TransportError", reason: "Network" })
      expect(error.message).toContain("socket hang up")
    }))
})

describe("the per-attempt timeout", () => {
  it.effect("fails an attempt with TransportError reason Timeout once the timeout passes", () =>
    Effect.gen(function*() {
      const server = TestHttpClient.make(TestHttpClient.hang)
      const fiber = yield* Effect.forkChild(
        refreshWith(server, { timeout: Duration.seconds(2), policy: RefreshPolicy.none })()
      )
      yield* TestClock.adjust(Duration.millis(1999))
      expect(fiber.pollUnsafe()).toBeUndefined()
      yield* TestClock.adjust(Duration.millis(1))
      const error = yield* Effect.flip(Fiber.join(fiber))
      expect(error).toMatchObject({ _tag: "TransportError", reason: "Timeout" })
      expect(server.requests[0]!.signal.aborted).toBe(true)
    }))

  it.effect("is 10 seconds by default", () =>
    Effect.gen(function*() {
      const server = TestHttpClient.make(TestHttpClient.hang)
      const fiber = yield* Effect.forkChild(refreshWith(server, { policy: RefreshPolicy.none })())
      yield* TestClock.adjust(Duration.millis(9999))
      expect(fiber.pollUnsafe()).toBeUndefined()
      yield* TestClock.adjust(Duration.millis(1))
      const error = yield* Effect.flip(Fiber.join(fiber))
      expect(error).toMatchObject({ _tag: "TransportError", reason: "Timeout" })
    }))

  it.effect("is retried per the policy, each attempt getting its own timeout", () =>
    Effect.gen(function*() {
      const server = TestHttpClient.make(
        TestHttpClient.hang,
        TestHttpClient.hang,
        TestHttpClient.json(200, sessionBody)
      )
      const policy = RefreshPolicy.exponential({
        base: Duration.millis(200),
        maxRetries: 5,
        maxDelay: Duration.seconds(10),
        maxElapsed: Duration.seconds(30),
        jitter: false
      })
      const fiber = yield* Effect.forkChild(refreshWith(server, { timeout: Duration.seconds(1), policy })())
      yield* TestClock.adjust(Duration.minutes(1))
      const session = yield* Fiber.join(fiber)
      expect(Redacted.value(session.refreshToken)).toBe(newRefreshToken)
      // 1 s timeout + 200 ms, then 1 s timeout + 400 ms.
      expect(server.sentAt()).toStrictEqual([0, 1200, 2600])
      // The two attempts that timed out were aborted, not left running.
      expect(server.requests.slice(0, 2).map((request) => request.signal.aborted)).toStrictEqual([true, true])
    }))

  it.effect("surfaces the last Timeout when every attempt times out", () =>
    Effect.gen(function*() {
      const server = TestHttpClient.make(TestHttpClient.hang)
      const policy = RefreshPolicy.exponential({
        base: Duration.millis(200),
        maxRetries: 2,
        maxDelay: Duration.seconds(10),
        maxElapsed: Duration.seconds(30),
        jitter: false
      })
      const fiber = yield* Effect.forkChild(refreshWith(server, { timeout: Duration.seconds(1), policy })())
      yield* TestClock.adjust(Duration.millis(3599))
      expect(fiber.pollUnsafe()).toBeUndefined()
      yield* TestClock.adjust(Duration.millis(1))
      const error = yield* Effect.flip(Fiber.join(fiber))
      expect(error).toMatchObject({ _tag: "TransportError", reason: "Timeout" })
      expect(server.requests).toHaveLength(3)
    }))
})

describe("interruption", () => {
  it.effect("interrupting a refresh aborts its HTTP request", () =>
    Effect.gen(function*() {
      const server = TestHttpClient.make(TestHttpClient.hang)
      const fiber = yield* Effect.forkChild(refreshWith(server)())
      // Let the request go out (no timer is due yet).
      yield* TestClock.adjust(Duration.millis(1))
      expect(server.requests).toHaveLength(1)
      expect(server.requests[0]!.signal.aborted).toBe(false)

      yield* Fiber.interrupt(fiber)
      expect(Exit.hasInterrupts(yield* Fiber.await(fiber))).toBe(true)
      expect(server.requests[0]!.signal.aborted).toBe(true)
    }))

  it.effect("interrupting a refresh that waits between retries sends no further request", () =>
    Effect.gen(function*() {
      const server = TestHttpClient.make(TestHttpClient.json(500, { error: "down" }))
      const fiber = yield* Effect.forkChild(refreshWith(server)())
      yield* TestClock.adjust(Duration.millis(1))
      yield* Fiber.interrupt(fiber)
      yield* TestClock.adjust(Duration.minutes(1))
      expect(server.requests).toHaveLength(1)
    }))
})

describe("secrets", () => {
  /** Every way an error can end up in front of someone. */
  const renderings = (error: RefreshError.RefreshError): Array<string> => [
    error.message,
    String(error),
    JSON.stringify(error),
    inspect(error, { depth: Infinity }),
    Cause.pretty(Cause.fail(error))
  ]

  const echoingReplies: ReadonlyArray<readonly [string, TestHttpClient.Reply]> = [
    ["a 500 JSON body", TestHttpClient.json(500, { error: `cannot refresh ${refreshToken}` })],
    ["a 500 plain-text body", TestHttpClient.text(500, `refresh_token=${refreshToken} failed`)],
    ["a 502 HTML page", TestHttpClient.html(502, `<title>Bad Gateway for ${refreshToken}</title>`)],
    ["a 401 body", TestHttpClient.json(401, { error_description: `unknown refresh token ${refreshToken}` })],
    [
      "a 500 dead-token body",
      TestHttpClient.json(500, { msg: `Invalid Refresh Token: Already Used (${refreshToken})` })
    ],
    ["a 429 body", TestHttpClient.json(429, { message: `slow down, ${refreshToken}` }, { "retry-after": "1" })],
    [
      "a 2xx body with a bad field",
      TestHttpClient.json(200, { ...sessionBody, access_token: 42, refresh_token: refreshToken })
    ],
    [
      "a 2xx dead-token body",
      TestHttpClient.json(200, { error: "invalid_grant", error_description: `Invalid Refresh Token: ${refreshToken}` })
    ]
  ]

  for (const [name, reply] of echoingReplies) {
    it.effect(`keeps the token out of every rendering of the error when the server echoes it in ${name}`, () =>
      Effect.gen(function*() {
        const error = yield* failureOf(reply)
        for (const rendering of renderings(error)) expectNoToken(rendering)
      }))
  }

  it.effect("replaces an echoed refresh token with <redacted> in a server error's message", () =>
    Effect.gen(function*() {
      const error = yield* failureOf(TestHttpClient.json(500, { error: `cannot refresh ${refreshToken} right now` }))
      expect(error).toMatchObject({ _tag: "ServerError", message: "cannot refresh <redacted> right now" })
    }))

  it.effect("keeps tokens out of a timeout's and a transport failure's error", () =>
    Effect.gen(function*() {
      const network = yield* failureOf(TestHttpClient.transportFailure())
      const timeoutFiber = yield* Effect.forkChild(
        Effect.flip(refreshWith(TestHttpClient.make(TestHttpClient.hang), { policy: RefreshPolicy.none })())
      )
      yield* TestClock.adjust(Duration.seconds(10))
      const timeout = yield* Fiber.join(timeoutFiber)
      for (const error of [network, timeout]) {
        for (const rendering of renderings(error)) expectNoToken(rendering)
      }
    }))

  it.effect("logs no token at any level, through failed attempts and the final success", () =>
    Effect.gen(function*() {
      const lines: Array<string> = []
      const capture = Logger.make((options) => {
        lines.push(Logger.formatLogFmt.log(options), Logger.formatJson.log(options))
      })
      const server = TestHttpClient.make(
        TestHttpClient.json(500, { error: `cannot refresh ${refreshToken}` }),
        TestHttpClient.transportFailure(),
        TestHttpClient.json(429, { message: `slow down ${refreshToken}` }, { "retry-after": "1" }),
        TestHttpClient.html(502, `<title>Bad Gateway ${refreshToken}</title>`),
        TestHttpClient.json(200, sessionBody)
      )
      const fiber = yield* refreshWith(server)().pipe(
        Effect.provide(Logger.layer([capture])),
        Effect.provideService(References.MinimumLogLevel, "All"),
        Effect.forkChild
      )
      yield* TestClock.adjust(Duration.minutes(1))
      yield* Fiber.join(fiber)

      expect(server.requests).toHaveLength(5)
      // Each failed attempt is logged (twice: logfmt and JSON), so the check below is not vacuous.
      expect(lines.length).toBeGreaterThanOrEqual(8)
      for (const line of lines) expectNoToken(line)
    }))

  it.effect("puts no token in any span attribute or span event", () =>
    Effect.gen(function*() {
      const { spans, tracer } = recordingTracer()
      const server = TestHttpClient.make(
        TestHttpClient.json(500, { error: `cannot refresh ${refreshToken}` }),
        TestHttpClient.json(200, sessionBody)
      )
      const fiber = yield* refreshWith(server)().pipe(
        Effect.provideService(References.MinimumLogLevel, "All"),
        Effect.withTracer(tracer),
        Effect.forkChild
      )
      yield* TestClock.adjust(Duration.minutes(1))
      yield* Fiber.join(fiber)

      expect(spans.length).toBeGreaterThanOrEqual(1) // the refresh span; the platform's is off for this POST
      expect(spans.every((span) => span.attributes.size > 0)).toBe(true)
      for (const span of spans) {
        expectNoToken(span.name)
        for (const [key, value] of span.attributes) expectNoToken(`${key}=${String(value)} ${JSON.stringify(value)}`)
        for (const [name, attributes] of span.events) expectNoToken(`${name} ${JSON.stringify(attributes)}`)
      }
    }))
})

describe("tracing", () => {
  it.effect("wraps a refresh in the span moon-refresh/refresh with its attempts and outcome", () =>
    Effect.gen(function*() {
      const { spans, tracer } = recordingTracer()
      const server = TestHttpClient.make(
        TestHttpClient.json(500, { error: "down" }),
        TestHttpClient.transportFailure(),
        TestHttpClient.json(200, sessionBody)
      )
      const fiber = yield* refreshWith(server)().pipe(Effect.withTracer(tracer), Effect.forkChild)
      yield* TestClock.adjust(Duration.minutes(1))
      yield* Fiber.join(fiber)

      const refreshSpans = spans.filter((span) => span.name === "moon-refresh/refresh")
      expect(refreshSpans).toHaveLength(1)
      const span = refreshSpans[0]!
      expect(span.attributes.get("moon.refresh.attempts")).toBe(3)
      expect(span.attributes.get("moon.refresh.outcome")).toBe("success")
      expect(span.status._tag).toBe("Ended")
    }))

  it.effect("records the error's tag as the outcome of a failed refresh", () =>
    Effect.gen(function*() {
      const { spans, tracer } = recordingTracer()
      const server = TestHttpClient.make(TestHttpClient.json(401, { error: "invalid_grant" }))
      yield* Effect.flip(refreshWith(server)().pipe(Effect.withTracer(tracer)))

      const span = spans.find((span) => span.name === "moon-refresh/refresh")
      expect(span?.attributes.get("moon.refresh.attempts")).toBe(1)
      expect(span?.attributes.get("moon.refresh.outcome")).toBe("TokenRejectedError")
    }))

  it.effect("records an interrupted refresh as such, its span ended", () =>
    Effect.gen(function*() {
      const { spans, tracer } = recordingTracer()
      const server = TestHttpClient.make(TestHttpClient.hang)
      const fiber = yield* refreshWith(server)().pipe(Effect.withTracer(tracer), Effect.forkChild)
      yield* TestClock.adjust(Duration.millis(100))
      yield* Fiber.interrupt(fiber)

      const span = spans.find((span) => span.name === "moon-refresh/refresh")
      expect(span?.attributes.get("moon.refresh.attempts")).toBe(1)
      expect(span?.attributes.get("moon.refresh.outcome")).toBe("interrupted")
      expect(span?.status._tag).toBe("Ended")
    }))

  it.effect("a failed attempt's debug log is an event of the refresh span", () =>
    Effect.gen(function*() {
      const { spans, tracer } = recordingTracer()
      const server = TestHttpClient.make(TestHttpClient.transportFailure(), TestHttpClient.json(200, sessionBody))
      const fiber = yield* refreshWith(server)().pipe(
        Effect.withTracer(tracer),
        Effect.provideService(References.MinimumLogLevel, "Debug"),
        Effect.forkChild
      )
      yield* TestClock.adjust(Duration.minutes(1))
      yield* Fiber.join(fiber)

      const span = spans.find((span) => span.name === "moon-refresh/refresh")
      expect(span?.events.map(([name]) => name)).toContain("moon-refresh: refresh attempt failed")
    }))

  it.effect("opens no platform HTTP span for the POST, whose exit would hold the raw request and its token", () =>
    Effect.gen(function*() {
      const { spans, tracer } = recordingTracer()
      yield* refreshWith(TestHttpClient.make(TestHttpClient.json(200, sessionBody)))().pipe(Effect.withTracer(tracer))

      expect(spans.map((span) => span.name)).toStrictEqual(["moon-refresh/refresh"])
    }))

  for (const clock of ["TestClock", "live clock"] as const) {
    const test = clock === "live clock" ? it.live : it.effect
    test(`sends no trace headers even when the client's own tracer predicate lets the platform trace it (${clock})`, () =>
      Effect.gen(function*() {
        const { tracer } = recordingTracer()
        const server = TestHttpClient.make(TestHttpClient.json(200, sessionBody))
        // A predicate set on the client replaces ours inside `execute`: the
        // platform opens its span, and would send its headers with it (the
        // one-shot body keeps the token to one hop all the same).
        const traced = server.client.pipe(
          HttpClient.transform((effect) => Effect.provideService(effect, HttpClient.TracerDisabledWhen, () => false))
        )
        yield* RefreshClient.refresh(refreshToken).pipe(
          Effect.provide(RefreshClient.layer()),
          Effect.provideService(HttpClient.HttpClient, traced),
          Effect.withTracer(tracer)
        )
        expect(Object.keys(server.requests[0]!.headers).filter((name) => /traceparent|^b3$|x-b3/i.test(name)))
          .toStrictEqual([])
      }))
  }

  it.live("on the live clock: the refresh span is the parent inside the client, and the caller's own values stay", () =>
    Effect.gen(function*() {
      const { spans, tracer } = recordingTracer()
      const seen: Array<{ parent: string | undefined; init: unknown; propagation: boolean }> = []
      const client = HttpClient.make((request, _url, _signal, fiber) => {
        const parent = Context.getOption(fiber.context, Tracer.ParentSpan)
        seen.push({
          parent: Option.isSome(parent) && parent.value._tag === "Span" ? parent.value.name : undefined,
          init: Context.getOption(fiber.context, FetchHttpClient.RequestInit).pipe(Option.getOrUndefined),
          propagation: fiber.getRef(HttpClient.TracerPropagationEnabled)
        })
        return Effect.succeed(
          HttpClientResponse.fromWeb(request, new Response(JSON.stringify(sessionBody), { status: 200 }))
        )
      })
      const callers = Effect.all([
        References.TracerEnabled,
        HttpClient.TracerDisabledWhen,
        HttpClient.TracerPropagationEnabled,
        Tracer.DisablePropagation,
        References.UnhandledLogLevel,
        Effect.serviceOption(FetchHttpClient.RequestInit),
        Effect.serviceOption(Tracer.ParentSpan)
      ])
      const program = Effect.gen(function*() {
        const before = yield* callers
        yield* RefreshClient.refresh(refreshToken)
        const after = yield* callers
        return { before, after }
      }).pipe(
        Effect.provide(RefreshClient.layer()),
        Effect.provideService(HttpClient.HttpClient, client),
        Effect.withTracer(tracer)
      )
      const { after, before } = yield* program
      expect(after).toStrictEqual(before)
      expect(seen).toStrictEqual([{ parent: "moon-refresh/refresh", init: { redirect: "manual" }, propagation: false }])
      expect(spans.map((span) => span.name)).toStrictEqual(["moon-refresh/refresh"])
    }))

  it.live("on the live clock: an interrupted refresh is recorded as such, its span ended", () =>
    Effect.gen(function*() {
      const { spans, tracer } = recordingTracer()
      const server = TestHttpClient.make(TestHttpClient.hang)
      const fiber = yield* refreshWith(server)().pipe(Effect.withTracer(tracer), Effect.forkChild)
      while (server.requests.length === 0) yield* Effect.sleep(Duration.millis(1))
      yield* Fiber.interrupt(fiber)

      const span = spans.find((span) => span.name === "moon-refresh/refresh")
      expect(span?.attributes.get("moon.refresh.attempts")).toBe(1)
      expect(span?.attributes.get("moon.refresh.outcome")).toBe("interrupted")
      expect(span?.status._tag).toBe("Ended")
      // The attempt was interrupted too: the request's signal is aborted.
      expect(server.requests[0]!.signal.aborted).toBe(true)
    }))

  it.effect("sends no trace-propagation headers to Moon", () =>
    Effect.gen(function*() {
      const { tracer } = recordingTracer()
      const server = TestHttpClient.make(TestHttpClient.json(200, sessionBody))
      yield* refreshWith(server)().pipe(Effect.withTracer(tracer))
      expect(Object.keys(server.requests[0]!.headers).filter((name) => /traceparent|^b3$|x-b3/i.test(name)))
        .toStrictEqual([])
    }))
})

describe("configuration", () => {
  /** Builds the layer and runs a refresh; returns the exit and whether any request went out. */
  const buildWith = <E>(layer: Layer.Layer<RefreshClient.RefreshClient, E, HttpClient.HttpClient>) =>
    Effect.gen(function*() {
      const server = TestHttpClient.make(TestHttpClient.json(200, sessionBody))
      const exit = yield* RefreshClient.refresh(refreshToken).pipe(
        Effect.provide(layer),
        Effect.provide(server.layer),
        Effect.exit
      )
      return { exit, requests: server.requests }
    })

  const defectMessage = (exit: Exit.Exit<unknown, unknown>): string =>
    Exit.isFailure(exit)
      ? Result.match(Cause.findDefect(exit.cause), {
        onFailure: () => `not a defect: ${Cause.pretty(exit.cause)}`,
        onSuccess: (defect) => (defect instanceof Error ? defect.message : String(defect))
      })
      : "succeeded"

  const refusedBaseUrls: ReadonlyArray<readonly [string, string]> = [
    ["something that is not a URL", "not a url"],
    ["http: to a non-loopback host", "http://example.com"],
    ["a scheme other than http(s)", "ftp://example.com"],
    ["a query string", "https://example.com/?tenant=1"],
    ["credentials", "https://admin:s3cret-password@example.com"]
  ]
  for (const [what, baseUrl] of refusedBaseUrls) {
    it.effect(`refuses a baseUrl with ${what} when the layer is built, naming the option`, () =>
      Effect.gen(function*() {
        const { exit, requests } = yield* buildWith(RefreshClient.layer({ baseUrl }))
        const message = defectMessage(exit)
        expect(message).toContain("baseUrl")
        expect(message).not.toContain("s3cret-password")
        expect(requests).toHaveLength(0)
      }))
  }

  for (
    const [what, timeout] of [
      ["zero", Duration.zero],
      ["0 ms", 0],
      ["-1000 ms", -1000],
      ["infinity", Duration.infinity]
    ] as const
  ) {
    it.effect(`refuses a timeout of ${what} when the layer is built, naming the option`, () =>
      Effect.gen(function*() {
        const { exit, requests } = yield* buildWith(RefreshClient.layer({ timeout }))
        expect(defectMessage(exit)).toContain("timeout")
        expect(requests).toHaveLength(0)
      }))
  }

  for (
    const [baseUrl, url] of [
      ["http://127.0.0.1:1234", "http://127.0.0.1:1234/auth/refresh"],
      ["http://localhost", "http://localhost/auth/refresh"],
      ["http://[::1]:8080/", "http://[::1]:8080/auth/refresh"]
    ] as const
  ) {
    it.effect(`accepts http: to the loopback host ${baseUrl}`, () =>
      Effect.gen(function*() {
        const { exit, requests } = yield* buildWith(RefreshClient.layer({ baseUrl }))
        expect(Exit.isSuccess(exit)).toBe(true)
        expect(requests.map((request) => request.url)).toStrictEqual([url])
      }))
  }

  const withEnv = (env: Record<string, string>) =>
    Effect.provideService(ConfigProvider.ConfigProvider, ConfigProvider.fromEnvRecord(env))

  it.effect("layerConfig reads the base URL from MOON_BASE_URL", () =>
    Effect.gen(function*() {
      const { exit, requests } = yield* buildWith(RefreshClient.layerConfig()).pipe(
        withEnv({ MOON_BASE_URL: "http://127.0.0.1:1234" })
      )
      expect(Exit.isSuccess(exit)).toBe(true)
      expect(requests.map((request) => request.url)).toStrictEqual(["http://127.0.0.1:1234/auth/refresh"])
    }))

  it.effect("layerConfig uses https://beta.usemoon.ai when MOON_BASE_URL is not set", () =>
    Effect.gen(function*() {
      const { requests } = yield* buildWith(RefreshClient.layerConfig()).pipe(withEnv({}))
      expect(requests.map((request) => request.url)).toStrictEqual(["https://beta.usemoon.ai/auth/refresh"])
    }))

  for (const bad of ["not a url", "http://example.com"]) {
    it.effect(`layerConfig fails with a ConfigError when MOON_BASE_URL is ${JSON.stringify(bad)}`, () =>
      Effect.gen(function*() {
        const { exit, requests } = yield* buildWith(RefreshClient.layerConfig()).pipe(withEnv({ MOON_BASE_URL: bad }))
        expect(requests).toHaveLength(0)
        const error = Exit.isFailure(exit) ? Cause.findErrorOption(exit.cause) : Option.none()
        expect(Option.isSome(error) && error.value instanceof Config.ConfigError).toBe(true)
      }))
  }

  it.effect("layerConfig's ConfigError names the MOON_BASE_URL setting", () =>
    Effect.gen(function*() {
      const { exit } = yield* buildWith(RefreshClient.layerConfig()).pipe(
        withEnv({ MOON_BASE_URL: "http://example.com" })
      )
      const error = Exit.isFailure(exit) ? Cause.findErrorOption(exit.cause) : Option.none()
      expect(Option.map(error, String)).toStrictEqual(Option.some(expect.stringContaining("MOON_BASE_URL")))
    }))
})

describe("clock skew", () => {
  // The TestClock stays at 0; the server's Date header says where its clock is.
  const at = (millis: number) => ({ date: new Date(millis).toUTCString() })
  // The skew matters only for an expires_at sent alone: expires_in needs no clock.
  const { expires_in: _expiresIn, ...atOnly } = sessionBody

  it.effect("moves expires_at onto our clock when the server's clock is ahead", () =>
    Effect.gen(function*() {
      const serverNow = 3_600_000 // the server is one hour ahead of us
      const body = { ...atOnly, expires_at: (serverNow + 600_000) / 1000 }
      const session = yield* refreshWith(TestHttpClient.make(TestHttpClient.json(200, body, at(serverNow))))()
      expect(DateTime.toEpochMillis(session.expiresAt)).toBe(600_000)
    }))

  it.effect("moves expires_at onto our clock when the server's clock is behind", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(7_200_000)
      const serverNow = 3_600_000 // one hour behind us
      const body = { ...atOnly, expires_at: (serverNow + 600_000) / 1000 }
      const session = yield* refreshWith(TestHttpClient.make(TestHttpClient.json(200, body, at(serverNow))))()
      expect(DateTime.toEpochMillis(session.expiresAt)).toBe(7_200_000 + 600_000)
    }))

  it.effect("leaves expires_in alone whatever the server's clock says", () =>
    Effect.gen(function*() {
      const { expires_at: _, ...body } = sessionBody
      const session = yield* refreshWith(TestHttpClient.make(TestHttpClient.json(200, body, at(86_400_000))))()
      expect(DateTime.toEpochMillis(session.expiresAt)).toBe(3_600_000)
    }))

  it.effect("ignores differences under five seconds, the noise of a Date header", () =>
    Effect.gen(function*() {
      const body = { ...atOnly, expires_at: 600 }
      const session = yield* refreshWith(TestHttpClient.make(TestHttpClient.json(200, body, at(4_000))))()
      expect(DateTime.toEpochMillis(session.expiresAt)).toBe(600_000)
    }))
})

describe("more bad input", () => {
  for (const path of ["", "/auth/refresh?x=1", "/auth#frag", "auth refresh"]) {
    it.effect(`refuses the path ${JSON.stringify(path)} when the layer is built, naming the option`, () =>
      Effect.gen(function*() {
        const exit = yield* Effect.exit(
          refreshWith(TestHttpClient.make(TestHttpClient.json(200, sessionBody)), { path })()
        )
        expect(Exit.isFailure(exit) && Cause.hasDies(exit.cause)).toBe(true)
        expect(Cause.pretty((exit as Exit.Failure<unknown, unknown>).cause)).toContain(`option "path"`)
      }))
  }

  it.effect("layerConfig refuses a non-positive timeout with a ConfigError", () =>
    Effect.gen(function*() {
      const server = TestHttpClient.make(TestHttpClient.json(200, sessionBody))
      const exit = yield* RefreshClient.refresh(refreshToken).pipe(
        Effect.provide(RefreshClient.layerConfig({ timeout: Config.succeed(Duration.zero) })),
        Effect.provide(server.layer),
        Effect.exit
      )
      expect(Exit.isFailure(exit)).toBe(true)
      const failure = Cause.findErrorOption((exit as Exit.Failure<unknown, unknown>).cause)
      expect(Option.isSome(failure) && failure.value instanceof Config.ConfigError).toBe(true)
      expect(server.requests).toHaveLength(0)
    }))

  it.effect("keeps a 429's Retry-After when its body is too large to read", () =>
    Effect.gen(function*() {
      const huge = "x".repeat(1024 * 1024 + 1)
      const error = yield* failureOf(TestHttpClient.text(429, huge, { "retry-after": "7" }))
      expect(error._tag).toBe("RateLimitedError")
      expect(RefreshError.retryAfter(error)).toEqual(Option.some(Duration.seconds(7)))
      expect(error.message).toContain("not read")
    }))
})

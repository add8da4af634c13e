import { describe, expect, it } from "@effect/vitest"
import {
  Cause,
  Config,
  ConfigProvider,
  DateTime,
  Duration,
  Effect,
  Exit,
  Layer,
  Option,
  Redacted,
  Result
} from "effect"
import { HttpClient, HttpClientResponse } from "effect/http"
import { TestClock } from "effect/testing"
import { RefreshClient, RefreshError, RefreshPolicy, Session, SessionManager, SessionStore } from "moon-refresh"
import { configErrorOf, defectOf, failureOf } from "./support/Exits.js"
import * as TestHttpClient from "./support/TestHttpClient.js"

// What every public entry point does with bad input: a typed error, a defect
// naming the option at layer build, or a documented clamp. Never a crash at
// request time, never a hang. docs/06-bad-input.md is this file as a table.

const refreshToken = "refresh-token-secret-v1"

// 2023-11-14T22:13:20Z: a TestClock time at which "in the past" has room.
const now = 1_700_000_000_000
const nowSeconds = now / 1000

const session = {
  access_token: "access-token-secret-v2",
  refresh_token: "refresh-token-secret-v2",
  expires_in: 3600,
  token_type: "bearer",
  user: { id: "user-1", email: "ada@example.com" }
}

/** One refresh, no retries, through `layer` over a double answering `reply`. */
const refreshWith = (
  reply: TestHttpClient.Reply,
  token: string | Redacted.Redacted<string> = refreshToken,
  options: RefreshClient.Options = {}
) => {
  const server = TestHttpClient.make(reply)
  return RefreshClient.refresh(token).pipe(
    Effect.provide(RefreshClient.layer({ policy: RefreshPolicy.none, ...options })),
    Effect.provide(server.layer),
    Effect.exit,
    Effect.map((exit) => ({ exit, requests: server.requests.length }))
  )
}

// The variables as given, an empty one included (as Effect 3's `fromMap` did):
// Effect 4's environment providers treat "" as unset unless told otherwise.
const withEnv = (env: Record<string, string>) =>
  Effect.provideService(
    ConfigProvider.ConfigProvider,
    ConfigProvider.fromEnvRecord(env, { preserveEmptyStrings: true })
  )

/**
 * Lets every fiber run until it waits on something, without moving the
 * TestClock: what Effect 3's `TestClock.adjust(Duration.zero)` did (it waited,
 * a real timer turn at a time, for every fiber to be suspended). Effect 4's
 * yields once to the fiber scheduler; a response body is read through
 * promises, a few turns of the event loop. Ten turns, each a `setTimeout(0)`
 * and `TestClock.adjust(0)`: nothing here waits on real I/O, so that does not
 * depend on the machine's load.
 */
const settle = Effect.repeat(
  Effect.andThen(
    Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, 0))),
    TestClock.adjust(Duration.zero)
  ),
  { times: 9 }
)

/** Builds a RefreshClient layer and makes one refresh, reporting the exit and how many requests went out. */
const buildAndRefresh = <E>(layer: Layer.Layer<RefreshClient.RefreshClient, E, HttpClient.HttpClient>) => {
  const server = TestHttpClient.make(TestHttpClient.json(200, session))
  return RefreshClient.refresh(refreshToken).pipe(
    Effect.provide(layer),
    Effect.provide(server.layer),
    Effect.exit,
    Effect.map((exit) => ({ exit, requests: server.requests.length }))
  )
}

/**
 * An HTTP double whose body is a stream of 64 KiB chunks, `total` bytes in
 * all, produced only when pulled: it counts what the client read and whether
 * it cancelled the rest.
 */
const streamingServer = (status: number, total: number, headers: Record<string, string> = {}) => {
  const chunk = new Uint8Array(64 * 1024).fill(0x78)
  const state = { pulled: 0, cancelled: false }
  const client = HttpClient.make((request) =>
    Effect.sync(() => {
      const body = new ReadableStream<Uint8Array>({
        pull: (controller) => {
          if (state.pulled >= total) return controller.close()
          state.pulled += chunk.length
          controller.enqueue(chunk)
        },
        cancel: () => {
          state.cancelled = true
        }
      }, { highWaterMark: 0 })
      return HttpClientResponse.fromWeb(request, new Response(body, { status, headers }))
    })
  )
  return { layer: Layer.succeed(HttpClient.HttpClient, client), state }
}

const MiB = 1024 * 1024

describe("a blank refresh token", () => {
  for (
    const [name, token] of [
      ["an empty string", ""],
      ["spaces", "   "],
      ["tabs and newlines", "\t\n\r"],
      ["a Redacted whitespace", Redacted.make("  \u00a0 ")]
    ] as const
  ) {
    it.effect(`RefreshClient.refresh refuses ${name} with TokenRejectedError, without a request`, () =>
      Effect.gen(function*() {
        const { exit, requests } = yield* refreshWith(TestHttpClient.json(200, session), token)
        const error = failureOf(exit)
        expect(error).toBeInstanceOf(RefreshError.TokenRejectedError)
        expect(error._tag === "TokenRejectedError" && error.status).toBeUndefined()
        expect(error.message).toBe("refresh token is blank; no request was sent")
        expect(requests).toBe(0)
      }))
  }

  it.effect("SessionManager signs out a session whose refresh token is blank, without a request", () =>
    Effect.gen(function*() {
      const server = TestHttpClient.make(TestHttpClient.json(200, session))
      const stored = Session.unsafeMake({
        accessToken: "access-token-secret-v1",
        refreshToken: "  ",
        expiresAt: 0,
        user: { id: "user-1" }
      })
      const exit = yield* Effect.gen(function*() {
        const manager = yield* SessionManager.SessionManager
        const read = yield* Effect.exit(manager.accessToken)
        return { read, current: yield* manager.current }
      }).pipe(
        Effect.provide(
          SessionManager.layer({ autoRefresh: false }).pipe(
            Layer.provide(RefreshClient.layer({ policy: RefreshPolicy.none })),
            Layer.provide(SessionStore.layerMemory(stored)),
            Layer.provide(server.layer)
          )
        )
      )
      expect(failureOf(exit.read as Exit.Exit<unknown, RefreshError.RefreshError>)._tag).toBe("TokenRejectedError")
      expect(Option.isNone(exit.current)).toBe(true)
      expect(server.requests).toHaveLength(0)
    }))

  it("Session.make returns an InvalidSessionError naming an empty token; Session.unsafeMake throws it", () => {
    const input = { accessToken: "", refreshToken: "r", expiresAt: 0, user: { id: "u" } }
    const built = Session.make(input)
    expect(Result.isFailure(built) && built.failure).toMatchObject({
      _tag: "InvalidSessionError",
      field: "accessToken",
      message: "Session.make: accessToken must be a non-empty string"
    })
    expect(() => Session.unsafeMake(input)).toThrow(Session.InvalidSessionError)
  })
})

describe("a bad base URL", () => {
  for (
    const [what, baseUrl] of [
      ["not a URL", "beta.usemoon.ai"],
      ["empty", ""],
      ["http: to a public host", "http://beta.usemoon.ai"],
      ["http: to a private, non-loopback address", "http://10.0.0.5:8080"]
    ] as const
  ) {
    it.effect(`RefreshClient.layer dies at build, naming "baseUrl", when it is ${what}`, () =>
      Effect.gen(function*() {
        const { exit, requests } = yield* buildAndRefresh(RefreshClient.layer({ baseUrl }))
        expect(defectOf(exit)).toContain(`RefreshClient: option "baseUrl"`)
        expect(requests).toBe(0)
      }))

    it.effect(`RefreshClient.layerConfig fails with a ConfigError naming MOON_BASE_URL when it is ${what}`, () =>
      Effect.gen(function*() {
        const { exit, requests } = yield* buildAndRefresh(RefreshClient.layerConfig()).pipe(
          withEnv({ MOON_BASE_URL: baseUrl })
        )
        expect(String(configErrorOf(exit))).toContain("MOON_BASE_URL")
        expect(requests).toBe(0)
      }))
  }

  it.effect("RefreshClient.layerConfig names \"baseUrl\" when the URL came from the baseUrl option", () =>
    Effect.gen(function*() {
      const { exit } = yield* buildAndRefresh(
        RefreshClient.layerConfig({ baseUrl: Config.succeed("http://beta.usemoon.ai") })
      )
      expect(String(configErrorOf(exit))).toContain("baseUrl")
    }))

  it.effect("accepts http: to a loopback host (local servers and tests)", () =>
    Effect.gen(function*() {
      const { exit, requests } = yield* buildAndRefresh(RefreshClient.layer({ baseUrl: "http://127.0.0.1:8787" }))
      expect(Exit.isSuccess(exit)).toBe(true)
      expect(requests).toBe(1)
    }))
})

describe("a negative margin or timeout", () => {
  for (const timeout of [-1000, "-5 seconds", 0] as const) {
    it.effect(`RefreshClient.layer dies at build, naming "timeout", for ${JSON.stringify(timeout)}`, () =>
      Effect.gen(function*() {
        const { exit, requests } = yield* buildAndRefresh(RefreshClient.layer({ timeout }))
        expect(defectOf(exit)).toContain(`option "timeout"`)
        expect(requests).toBe(0)
      }))
  }

  it.effect("RefreshClient.layerConfig fails with a ConfigError for a zero timeout", () =>
    Effect.gen(function*() {
      const { exit, requests } = yield* buildAndRefresh(
        RefreshClient.layerConfig({ timeout: Config.succeed(Duration.zero) })
      )
      expect(String(configErrorOf(exit))).toContain("timeout")
      expect(requests).toBe(0)
    }))

  const buildManager = (options: SessionManager.Options) =>
    Effect.exit(
      Effect.scoped(
        Layer.build(
          SessionManager.layer(options).pipe(
            Layer.provide(Layer.succeed(RefreshClient.RefreshClient, { refresh: () => Effect.never })),
            Layer.provide(SessionStore.layerMemory())
          )
        )
      )
    )

  for (
    const [option, value] of [
      ["margin", -1],
      ["margin", -60_000],
      ["cooldown", -1],
      ["maxCooldown", -1],
      ["margin", Duration.infinity],
      ["margin", "-5 seconds"]
    ] as const
  ) {
    it.effect(`SessionManager.layer dies at build, naming "${option}", for ${typeof value === "string" ? JSON.stringify(value) : String(value)}`, () =>
      Effect.gen(function*() {
        const exit = yield* buildManager({ [option]: value })
        expect(defectOf(exit)).toContain(`SessionManager: option "${option}" must be a finite, non-negative duration`)
      }))
  }
})

describe("a response body over 1 MiB", () => {
  it.effect("a 200 streamed without Content-Length is refused after reading at most 1 MiB, and the rest cancelled", () =>
    Effect.gen(function*() {
      const server = streamingServer(200, 100 * MiB, { "content-type": "application/json" })
      const exit = yield* RefreshClient.refresh(refreshToken).pipe(
        Effect.provide(RefreshClient.layer({ policy: RefreshPolicy.none })),
        Effect.provide(server.layer),
        Effect.exit
      )
      expect(failureOf(exit)).toMatchObject({
        _tag: "MalformedResponseError",
        status: 200,
        message: "response body is larger than 1048576 bytes"
      })
      // One chunk past the limit at most: the refusal comes as the count crosses it.
      expect(server.state.pulled).toBeLessThanOrEqual(MiB + 64 * 1024)
      expect(server.state.cancelled).toBe(true)
    }))

  it.effect("a 200 declaring a Content-Length over 1 MiB is refused without reading a byte", () =>
    Effect.gen(function*() {
      const server = streamingServer(200, 100 * MiB, { "content-length": String(100 * MiB) })
      const exit = yield* RefreshClient.refresh(refreshToken).pipe(
        Effect.provide(RefreshClient.layer({ policy: RefreshPolicy.none })),
        Effect.provide(server.layer),
        Effect.exit
      )
      expect(failureOf(exit)._tag).toBe("MalformedResponseError")
      expect(server.state.pulled).toBe(0)
    }))

  it.effect("a 503 with Retry-After and a huge body keeps its status and Retry-After, read at most 1 MiB", () =>
    Effect.gen(function*() {
      const server = streamingServer(503, 100 * MiB, { "retry-after": "30", "content-type": "text/html" })
      const exit = yield* RefreshClient.refresh(refreshToken).pipe(
        Effect.provide(RefreshClient.layer({ policy: RefreshPolicy.none })),
        Effect.provide(server.layer),
        Effect.exit
      )
      const error = failureOf(exit)
      expect(error).toMatchObject({ _tag: "RateLimitedError", status: 503 })
      expect(RefreshError.retryAfter(error)).toStrictEqual(Option.some(Duration.seconds(30)))
      expect(error.message).toBe("HTTP 503 (body over 1048576 bytes, not read)")
      expect(server.state.pulled).toBeLessThanOrEqual(MiB + 64 * 1024)
    }))

  it.effect("a body of exactly 1 MiB is read (the limit is inclusive)", () =>
    Effect.gen(function*() {
      const padding = "x".repeat(MiB - JSON.stringify({ ...session, padding: "" }).length)
      const { exit } = yield* refreshWith(TestHttpClient.json(200, { ...session, padding }))
      expect(Exit.isSuccess(exit)).toBe(true)
    }))
})

describe("a Retry-After of a year", () => {
  for (
    const [form, value] of [
      ["delay-seconds", String(365 * 24 * 3600)],
      ["an HTTP-date", new Date(now + 365 * 24 * 3600 * 1000).toUTCString()],
      ["40 digits of seconds", "9".repeat(40)]
    ] as const
  ) {
    it.effect(`is capped at 1 hour on the RateLimitedError (${form})`, () =>
      Effect.gen(function*() {
        yield* TestClock.setTime(now)
        const { exit } = yield* refreshWith(
          TestHttpClient.json(429, { msg: "Request rate limit reached" }, { "retry-after": value })
        )
        expect(RefreshError.retryAfter(failureOf(exit))).toStrictEqual(Option.some(Duration.hours(1)))
      }))
  }

  it.effect("ends the default policy's retries at once: its 30 s budget cannot wait an hour", () =>
    Effect.gen(function*() {
      const server = TestHttpClient.make(
        TestHttpClient.json(429, { msg: "Request rate limit reached" }, { "retry-after": "31536000" }),
        TestHttpClient.json(200, session)
      )
      const fiber = yield* RefreshClient.refresh(refreshToken).pipe(
        Effect.provide(RefreshClient.layer()),
        Effect.provide(server.layer),
        Effect.forkChild
      )
      yield* settle
      const exit = Option.fromUndefinedOr(fiber.pollUnsafe())
      expect(Option.map(exit, (exit) => failureOf(exit)._tag)).toStrictEqual(Option.some("RateLimitedError"))
      expect(server.requests).toHaveLength(1)
    }))

  it.effect("an unparseable Retry-After is ignored (no retryAfter)", () =>
    Effect.gen(function*() {
      for (const value of ["soon", "", "1e3"]) {
        const { exit } = yield* refreshWith(TestHttpClient.json(429, {}, { "retry-after": value }))
        expect(RefreshError.retryAfter(failureOf(exit))).toStrictEqual(Option.none())
      }
    }))

  it.effect("a Retry-After in the past means now: zero", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(now)
      // "-5" is not delay-seconds; Date.parse reads it as a date (in 2001), which is past.
      for (const value of ["Wed, 21 Oct 2015 07:28:00 GMT", "-5"]) {
        const { exit } = yield* refreshWith(TestHttpClient.json(429, {}, { "retry-after": value }))
        expect(RefreshError.retryAfter(failureOf(exit))).toStrictEqual(Option.some(Duration.zero))
      }
    }))
})

describe("an expiry that is not in the future", () => {
  const { expires_in: _, ...withoutExpiry } = session
  const cases: ReadonlyArray<readonly [string, Record<string, unknown>, "expires_in" | "expires_at"]> = [
    ["an expires_in of zero", { ...withoutExpiry, expires_in: 0 }, "expires_in"],
    ["a negative expires_in", { ...withoutExpiry, expires_in: -3600 }, "expires_in"],
    ["an expires_at in the past", { ...withoutExpiry, expires_at: nowSeconds - 60 }, "expires_at"],
    ["an expires_at of exactly now", { ...withoutExpiry, expires_at: nowSeconds }, "expires_at"],
    ["an expires_at of 0", { ...withoutExpiry, expires_at: 0 }, "expires_at"],
    // A DateTime holds whole milliseconds: an expiry half a millisecond away is now.
    ["an expires_in under a millisecond", { ...withoutExpiry, expires_in: 0.0005 }, "expires_in"],
    [
      "an expires_in of 0 beside a valid expires_at (expires_in wins: a duration needs no clock)",
      { ...session, expires_in: 0, expires_at: nowSeconds + 3600 },
      "expires_in"
    ]
  ]
  for (const [what, body, field] of cases) {
    it.effect(`${what} is a MalformedResponseError naming "${field}"`, () =>
      Effect.gen(function*() {
        yield* TestClock.setTime(now)
        const { exit } = yield* refreshWith(TestHttpClient.json(200, body))
        const error = failureOf(exit)
        expect(error._tag).toBe("MalformedResponseError")
        expect(error.message).toBe(`response is not a session: invalid field "${field}"`)
      }))
  }

  it.effect("an expires_at in the past beside a valid expires_in is not used: the expiry is now + expires_in", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(now)
      const { exit } = yield* refreshWith(TestHttpClient.json(200, { ...session, expires_at: nowSeconds - 60 }))
      expect(Exit.isSuccess(exit) && DateTime.toEpochMillis(exit.value.expiresAt)).toBe(now + 3_600_000)
    }))

  it.effect("an expires_in that is not a finite number is a MalformedResponseError naming it", () =>
    Effect.gen(function*() {
      for (const value of ["3600", null, true, { seconds: 3600 }]) {
        const { exit } = yield* refreshWith(TestHttpClient.json(200, { ...withoutExpiry, expires_in: value }))
        expect(failureOf(exit).message).toContain(`"expires_in"`)
      }
    }))

  // Past the last date JavaScript can represent: refused like any unusable expiry.
  for (
    const [what, body] of [
      ["an expires_at past the year 275760", { ...withoutExpiry, expires_at: 1e13 }],
      ["an expires_in of 1e300 seconds", { ...withoutExpiry, expires_in: 1e300 }]
    ] as const
  ) {
    it.effect(`${what} is a MalformedResponseError, not a defect`, () =>
      Effect.gen(function*() {
        yield* TestClock.setTime(now)
        const { exit } = yield* refreshWith(TestHttpClient.json(200, body))
        expect(Exit.isFailure(exit) && Cause.hasDies(exit.cause)).toBe(false)
        expect(Exit.isFailure(exit) && Cause.findErrorOption(exit.cause).pipe(Option.map((e) => e._tag)))
          .toStrictEqual(Option.some("MalformedResponseError"))
      }))
  }

  // A Date header more than a year from our clock is more likely broken than
  // the clock: it is not used to correct the expiry.
  it.effect("a Date header at the end of time does not turn a valid session into a defect; it is ignored", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(now)
      const { exit } = yield* refreshWith(
        TestHttpClient.json(200, session, { date: new Date(8.64e15).toUTCString() })
      )
      expect(Exit.isFailure(exit) && Cause.hasDies(exit.cause)).toBe(false)
      expect(Exit.isSuccess(exit) && DateTime.toEpochMillis(exit.value.expiresAt)).toBe(now + 3600 * 1000)
    }))
})

describe("a user object of an unexpected shape", () => {
  it.effect("keeps extra fields, nested ones included, as they came", () =>
    Effect.gen(function*() {
      const user = {
        id: "user-1",
        email: "ada@example.com",
        app_metadata: { provider: "email", providers: ["email", "google"] },
        user_metadata: { avatar: { url: "https://example.com/a.png", sizes: [32, 64] } },
        identities: [{ provider: "google", identity_data: { sub: "123" } }],
        is_anonymous: false,
        phone: ""
      }
      const { exit } = yield* refreshWith(TestHttpClient.json(200, { ...session, user }))
      expect(Exit.isSuccess(exit) && exit.value.user).toStrictEqual(user)
    }))

  it.effect("a null email is absent from the session's user", () =>
    Effect.gen(function*() {
      const { exit } = yield* refreshWith(
        TestHttpClient.json(200, { ...session, user: { id: "user-1", email: null, phone: "15550100" } })
      )
      expect(Exit.isSuccess(exit) && exit.value.user).toStrictEqual({ id: "user-1", phone: "15550100" })
    }))

  const malformed: ReadonlyArray<readonly [string, unknown, string]> = [
    ["a user without id", { email: "ada@example.com" }, `missing field "user.id"`],
    ["a numeric id", { id: 42 }, `invalid field "user.id"`],
    ["a null id", { id: null }, `invalid field "user.id"`],
    ["an email that is not a string", { id: "user-1", email: 42 }, `invalid field "user.email"`],
    ["a user that is a string", "user-1", `invalid field "user"`],
    ["a user that is an array", [{ id: "user-1" }], `invalid field "user"`],
    ["a null user", null, `invalid field "user"`]
  ]
  for (const [what, user, problem] of malformed) {
    it.effect(`${what} is a MalformedResponseError: ${problem}`, () =>
      Effect.gen(function*() {
        const { exit } = yield* refreshWith(TestHttpClient.json(200, { ...session, user }))
        const error = failureOf(exit)
        expect(error._tag).toBe("MalformedResponseError")
        expect(error.message).toBe(`response is not a session: ${problem}`)
      }))
  }

  it.effect("a missing user is a MalformedResponseError naming it", () =>
    Effect.gen(function*() {
      const { user: _, ...withoutUser } = session
      const { exit } = yield* refreshWith(TestHttpClient.json(200, withoutUser))
      expect(failureOf(exit).message).toBe(`response is not a session: missing field "user"`)
    }))
})

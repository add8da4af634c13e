/**
 * Regressions: a failed refresh reported as the wrong error, or an error that
 * says less than it should.
 *
 * One case per bug that was found and fixed, named by what broke, with the
 * commit that fixed it. Each case fails if its bug comes back. When you fix
 * a bug, add its case to the file of its area (test/regressions/*.test.ts).
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Layer, Option, Schema } from "effect"
import { HttpClient, HttpClientError } from "effect/http"
import { RefreshClient, RefreshError, RefreshPolicy } from "moon-refresh"
import * as TestHttpClient from "../support/TestHttpClient.js"
import { expectRefreshError, refreshAgainst, refreshToken } from "./harness.js"

describe("what an error says", () => {
  // d140fc1: the message was the platform's description, or only its reason
  // ("Transport"); fetch keeps the real reason two `cause`s down.
  it.effect("a connection refused under fetch's \"fetch failed\" names ECONNREFUSED", () =>
    Effect.gen(function*() {
      // How FetchHttpClient reports a refused connection.
      const refused = Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:9"), { code: "ECONNREFUSED" })
      const client = HttpClient.make((request) =>
        Effect.fail(
          new HttpClientError.HttpClientError({
            reason: new HttpClientError.TransportError({
              request,
              cause: new TypeError("fetch failed", { cause: refused })
            })
          })
        )
      )
      const exit = yield* RefreshClient.refresh(refreshToken).pipe(
        Effect.provide(RefreshClient.layer({ policy: RefreshPolicy.none })),
        Effect.provide(Layer.succeed(HttpClient.HttpClient, client)),
        Effect.exit
      )
      expect(expectRefreshError(exit)).toMatchObject({
        _tag: "TransportError",
        reason: "Network",
        message: "connect ECONNREFUSED 127.0.0.1:9 (ECONNREFUSED)"
      })
    }))

  // d140fc1: a body over the size limit made any non-2xx a ServerError, so a
  // 429 lost its status class and its Retry-After.
  it.effect("a 429 whose body is too large to read is still a RateLimitedError with its Retry-After", () =>
    Effect.gen(function*() {
      const { exit } = yield* refreshAgainst([
        TestHttpClient.text(429, "x".repeat(1024 * 1024 + 1), { "retry-after": "7" })
      ])
      const error = expectRefreshError(exit)
      expect(error).toMatchObject({
        _tag: "RateLimitedError",
        status: 429,
        message: "HTTP 429 (body over 1048576 bytes, not read)"
      })
      expect(RefreshError.retryAfter(error)).toStrictEqual(Option.some(Duration.seconds(7)))
    }))
})

describe("recognising an error", () => {
  // e6db21e: isRefreshError accepted anything whose `_tag` was one of the five
  // names, so a plain object or another library's error passed as ours.
  it("isRefreshError refuses an object that only carries a refresh error's _tag", () => {
    class ServerError extends Schema.TaggedError<ServerError>("another-library/ServerError")("ServerError", {
      status: Schema.Number,
      message: Schema.String
    }) {}
    const tags = ["TransportError", "ServerError", "RateLimitedError", "TokenRejectedError", "MalformedResponseError"]
    for (const _tag of tags) {
      expect(RefreshError.isRefreshError({ _tag, status: 500, message: "look-alike" })).toBe(false)
    }
    expect(RefreshError.isRefreshError(new ServerError({ status: 500, message: "look-alike" }))).toBe(false)
    expect(RefreshError.isRefreshError(new RefreshError.ServerError({ status: 500, message: "ours" }))).toBe(true)
    // Ours stays ours through its schema (events and stores decode errors).
    const decoded = Schema.decodeUnknownSync(RefreshError.RefreshError)({
      _tag: "ServerError",
      status: 500,
      message: ""
    })
    expect(RefreshError.isRefreshError(decoded)).toBe(true)
  })
})

import { describe, expect, it } from "@effect/vitest"
import { Duration, Option } from "effect"
import { RefreshError } from "moon-refresh"
import { capMessage, maxMessageLength } from "../src/internal/message.js"

describe("RefreshError", () => {
  it("retries transport failures, 5xx and rate limits, never a rejected token or a malformed answer", () => {
    expect(RefreshError.isRetryable(new RefreshError.TransportError({ reason: "Network", message: "reset" }))).toBe(
      true
    )
    expect(RefreshError.isRetryable(new RefreshError.TransportError({ reason: "Timeout", message: "slow" }))).toBe(true)
    expect(RefreshError.isRetryable(new RefreshError.ServerError({ status: 502, message: "bad gateway" }))).toBe(true)
    expect(
      RefreshError.isRetryable(
        new RefreshError.RateLimitedError({ status: 429, retryAfter: Option.some(Duration.seconds(1)), message: "" })
      )
    ).toBe(true)
    expect(RefreshError.isRetryable(new RefreshError.ServerError({ status: 404, message: "not found" }))).toBe(false)
    expect(RefreshError.isRetryable(new RefreshError.TokenRejectedError({ status: 401, message: "dead" }))).toBe(false)
    expect(RefreshError.isRetryable(new RefreshError.MalformedResponseError({ status: 200, message: "x" }))).toBe(
      false
    )
  })

  it("caps messages at 500 characters and collapses whitespace", () => {
    const capped = capMessage(`a\n\n  b ${"x".repeat(1000)}`)
    expect(capped.length).toBe(maxMessageLength)
    expect(capped.startsWith("a b x")).toBe(true)
  })
})

/**
 * Regressions: tokens that reached an error message, a span or a log.
 *
 * One case per bug that was found and fixed, named by what broke, with the
 * commit that fixed it. Each case fails if its bug comes back. When you fix
 * a bug, add its case to the file of its area (test/regressions/*.test.ts).
 */
import { FetchHttpClient } from "@effect/platform"
import { describe, expect, it } from "@effect/vitest"
import { Cause, Effect, Redacted, Schedule } from "effect"
import { RefreshClient, RefreshPolicy } from "moon-refresh"
import * as Http from "node:http"
import { inspect } from "node:util"
import { makeCapture, renderExit } from "../support/FaultMatrixRunner.js"
import { recordingTracer } from "../support/RecordingTracer.js"
import * as TestHttpClient from "../support/TestHttpClient.js"
import { expectRefreshError, refreshAgainst, refreshToken, sessionBody } from "./harness.js"

/** Every way an error ends up in front of someone. */
const renderings = (error: unknown): ReadonlyArray<string> => [
  String(error),
  JSON.stringify(error),
  inspect(error, { depth: Infinity }),
  Cause.pretty(Cause.fail(error))
]

const expectAbsent = (texts: ReadonlyArray<string>, secrets: ReadonlyArray<string>) => {
  for (const text of texts) {
    for (const secret of secrets) expect(text).not.toContain(secret)
  }
}

describe("a token in an error message", () => {
  // d32b1b8: only non-2xx bodies were scrubbed; a 2xx carrying a dead-token
  // error was read into the TokenRejectedError's message as it came.
  it.effect("a 2xx dead-token answer that echoes the refresh token does not put it in the message", () =>
    Effect.gen(function*() {
      const { exit } = yield* refreshAgainst([
        TestHttpClient.json(200, {
          error: "invalid_grant",
          error_description: `Invalid Refresh Token: ${refreshToken}`
        })
      ])
      const error = expectRefreshError(exit)
      expect(error).toMatchObject({ _tag: "TokenRejectedError", message: "Invalid Refresh Token: <redacted>" })
      expectAbsent(renderings(error), [refreshToken])
    }))

  // 7092f96: the request's token was removed from the raw body text, before
  // JSON parsing; an echo the server escaped (`\/`) came out whole once parsed.
  it.effect("an echo of the refresh token that the server's JSON escaped is masked too", () =>
    Effect.gen(function*() {
      const token = "Ab3/xY9+kL0/pQ7="
      const body = `{"message":"invalid refresh token ${token.replaceAll("/", "\\/")}"}`
      const { exit } = yield* refreshAgainst([{ _tag: "Respond", status: 500, body, headers: {} }], token)
      const error = expectRefreshError(exit)
      expect(error._tag).toBe("TokenRejectedError")
      expectAbsent([error.message, ...renderings(error)], [token])
    }))

  // 7092f96: a body that is not a JSON object (cut short, behind a prefix, an
  // array) became the message verbatim, and only the request's own token was
  // masked: the session's tokens, relayed by a proxy, went into the error.
  const planted = { access: "tok.access-0123456789abcdef", refresh: "tok.refresh-0123456789abcdef" }
  const sessionText = JSON.stringify({
    access_token: planted.access,
    refresh_token: planted.refresh,
    expires_in: 3600,
    user: { id: "user-1" }
  })
  for (
    const [what, status, body] of [
      ["a 502 relaying a session cut short", 502, sessionText.slice(0, 80)],
      ["a 500 relaying a session behind an XSSI prefix", 500, `)]}',\n${sessionText}`],
      ["a 200 JSON array holding a session and a dead-token phrase", 200, `[${sessionText}, "session_expired"]`]
    ] as const
  ) {
    it.effect(`${what} puts none of the body's tokens in the error`, () =>
      Effect.gen(function*() {
        const { exit } = yield* refreshAgainst([{ _tag: "Respond", status, body, headers: {} }])
        const error = expectRefreshError(exit)
        expectAbsent([error.message, ...renderings(error)], [planted.access, planted.refresh])
      }))
  }
})

describe("a token in a span or a log", () => {
  // 269c509: the platform's `http.client POST` span ended with the raw request
  // and response, whose bodies hold the refresh token and the new tokens; a
  // tracer that serialises exits wrote them out.
  it.effect("the refresh POST opens no platform span whose exit holds the request and response bodies", () =>
    Effect.gen(function*() {
      const { spans, tracer } = recordingTracer()
      const { exit } = yield* refreshAgainst([TestHttpClient.json(200, sessionBody)]).pipe(Effect.withTracer(tracer))
      expect(exit._tag).toBe("Success")
      expect(spans.map((span) => span.name)).toStrictEqual(["moon-refresh/refresh"])
      const ends = spans.flatMap((span) => span.status._tag === "Ended" ? renderExit(span.status.exit) : [])
      expect(ends.length).toBeGreaterThan(0)
      expectAbsent(ends, [refreshToken, sessionBody.access_token, sessionBody.refresh_token])
    }))

  // 269c509: when a chunked answer is cut mid-body, the HTTP stack's lost
  // fiber was logged ("Fiber terminated with an unhandled error") with the raw
  // ResponseError, whose request prints its JSON body: the refresh token.
  it.scopedLive("a chunked answer cut mid-body logs no lost fiber holding the refresh token", () => {
    const capturing = makeCapture()
    const token = "refresh-token-that-must-not-leak-0123456789"
    return capturing.around(
      Effect.gen(function*() {
        const server = Http.createServer((request, response) => {
          request.resume()
          request.on("end", () => {
            response.writeHead(200, { "content-type": "application/json" })
            response.write(`{"access_token":"a.b.c","token_type":"bearer",`)
            setTimeout(() => request.socket.destroy(), 20)
          })
        })
        yield* Effect.acquireRelease(
          Effect.async<void>((resume) => {
            server.listen(0, "127.0.0.1", () => resume(Effect.void))
          }),
          () =>
            Effect.async<void>((resume) => {
              server.close(() => resume(Effect.void))
            })
        )
        const address = server.address()
        const port = typeof address === "object" && address !== null ? address.port : 0
        const client = yield* RefreshClient.make({ baseUrl: `http://127.0.0.1:${port}`, policy: RefreshPolicy.none })

        const error = yield* Effect.flip(client.refresh(Redacted.make(token)))
        expect(error._tag === "TransportError" && error.reason).toBe("Network")
        // The lost fiber is logged after the refresh has failed: wait until it is (a hang guard bounds the wait).
        yield* Effect.sync(() => capturing.capture.logs.length > 0).pipe(
          Effect.repeat({ schedule: Schedule.spaced("5 millis"), until: (logged) => logged }),
          Effect.timeout("15 seconds")
        )
        expect(capturing.capture.logs.length).toBeGreaterThan(0)
        expectAbsent([...capturing.capture.texts, ...capturing.spanTexts()], [token, token.slice(0, 12)])
      }).pipe(Effect.provide(FetchHttpClient.layer))
    )
  })
})

/**
 * Regressions: tokens that reached an error message, a span or a log.
 *
 * One case per bug that was found and fixed, named by what broke, with the
 * commit that fixed it. Each case fails if its bug comes back. When you fix
 * a bug, add its case to the file of its area (test/regressions/*.test.ts).
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, DateTime, Deferred, Effect, Exit, Fiber, Layer, Option, Redacted, Schedule, Stream } from "effect"
import { FetchHttpClient, HttpClient, HttpClientError, HttpClientResponse } from "effect/http"
import type { HttpClientRequest } from "effect/http"
import { RefreshClient, RefreshPolicy, Session, SessionManager, SessionStore } from "moon-refresh"
import * as Http from "node:http"
import { inspect } from "node:util"
import { makeCapture, renderAll, renderExit } from "../support/FaultMatrixRunner.js"
import { recordingTracer } from "../support/RecordingTracer.js"
import * as TestHttpClient from "../support/TestHttpClient.js"
import { expectRefreshError, refreshAgainst, refreshToken, sessionBody, settle } from "./harness.js"

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
  it.live("a chunked answer cut mid-body logs no lost fiber holding the refresh token", () => {
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
          Effect.callback<void>((resume) => {
            server.listen(0, "127.0.0.1", () => resume(Effect.void))
          }),
          () =>
            Effect.callback<void>((resume) => {
              server.close(() => resume(Effect.void))
            })
        )
        const address = server.address()
        const port = typeof address === "object" && address !== null ? address.port : 0
        const client = yield* RefreshClient.make({ baseUrl: `http://127.0.0.1:${port}`, policy: RefreshPolicy.none })

        const error = yield* Effect.flip(client.refresh(Redacted.make(token)))
        expect(error._tag === "TransportError" && error.reason).toBe("Network")
        // Lines are logged once the refresh has failed (the failed attempt's; Effect 3 also logged the lost
        // fiber, which Effect 4 would report at References.UnhandledLogLevel): wait until one is (a hang
        // guard bounds the wait).
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

describe("a token echoed by the HTTP layer's own error", () => {
  // Issue 22: a test interceptor's "no match for request <body>" (or any error
  // of the HTTP stack that prints the request) went into
  // TransportError.message whole, and from there into the manager's WARN log
  // line and its RefreshFailed event.
  //
  // A token with characters that JSON and URLs escape, so that each way of
  // writing it is a different string.
  const token = "rt\"quote\\back/slash+plus =eq&amp-0123456789abcdef"
  const forms = [
    token,
    JSON.stringify(token).slice(1, -1),
    encodeURIComponent(token),
    new URLSearchParams({ t: token }).toString().slice(2)
  ]
  // The body as the double's transport reads it: a stream body (the refresh's, on Node) is run.
  const requestBody = (request: HttpClientRequest.HttpClientRequest): Effect.Effect<string> =>
    request.body._tag === "Stream"
      ? Effect.map(Effect.orDie(Stream.mkUint8Array(request.body.stream)), (bytes) => new TextDecoder().decode(bytes))
      : Effect.succeed(request.body._tag === "Uint8Array" ? new TextDecoder().decode(request.body.body) : "")

  type Answer = (
    request: HttpClientRequest.HttpClientRequest
  ) => Effect.Effect<HttpClientResponse.HttpClientResponse, HttpClientError.HttpClientError>

  // Each way an HTTP stack's error can echo the request, as the client
  // double's answer, and what the refresh fails with.
  const echoes: ReadonlyArray<readonly [string, Answer, "TransportError" | "defect"]> = [
    [
      "an interceptor's error holding the JSON body (escaped)",
      (request) =>
        Effect.flatMap(requestBody(request), (body) =>
          Effect.fail(
            new HttpClientError.HttpClientError({
              reason: new HttpClientError.TransportError({
                request,
                cause: new Error(`no match for request POST ${request.url} ${body}`)
              })
            })
          )),
      "TransportError"
    ],
    // A defect stays one (a bug is not a network error), scrubbed all the same.
    [
      "an interceptor that throws, echoing the JSON body",
      (request) =>
        Effect.flatMap(requestBody(request), (body) =>
          Effect.sync(() => {
            throw new Error(`no match for request POST ${request.url} ${body}`)
          })),
      "defect"
    ],
    ["a description holding the token as it is", (request) =>
      Effect.fail(
        new HttpClientError.HttpClientError({
          reason: new HttpClientError.TransportError({ request, description: `unexpected token ${token}` })
        })
      ), "TransportError"],
    ["a cause two levels down holding it URL-encoded and form-encoded", (request) =>
      Effect.fail(
        new HttpClientError.HttpClientError({
          reason: new HttpClientError.TransportError({
            request,
            cause: new TypeError("fetch failed", {
              cause: new Error(`refused ?refresh_token=${forms[2]} (form: token=${forms[3]})`)
            })
          })
        })
      ), "TransportError"],
    [
      "a body read that fails with an error echoing the request",
      (request) =>
        Effect.map(requestBody(request), (body) =>
          HttpClientResponse.fromWeb(
            request,
            new Response(
              new ReadableStream({
                pull: (controller) => controller.error(new Error(`stream reset while answering ${body}`))
              }),
              { status: 200, headers: { "content-type": "application/json" } }
            )
          )),
      "TransportError"
    ]
  ]

  for (const [what, answer, outcome] of echoes) {
    it.effect(`${what}: no message, log line, event or span attribute holds the token`, () => {
      const capturing = makeCapture()
      const echoing = HttpClient.make((request) => answer(request))
      return capturing.around(Effect.gen(function*() {
        const seeded = Session.unsafeMake({
          accessToken: "access-token-seeded",
          refreshToken: token,
          expiresAt: DateTime.makeUnsafe(60 * 60 * 1000),
          user: { id: "user-1" }
        })
        const manager = yield* SessionManager.make({ autoRefresh: false }).pipe(
          Effect.provide(RefreshClient.layer({ baseUrl: "https://auth.example.com", policy: RefreshPolicy.none })),
          Effect.provide(Layer.succeed(HttpClient.HttpClient, echoing)),
          Effect.provide(SessionStore.layerMemory(seeded))
        )
        const published: Array<SessionManager.SessionEvent> = []
        const listening = yield* Deferred.make<void>()
        const events = yield* Effect.forkChild(Stream.runForEach(manager.events, (event) =>
          Effect.andThen(
            Effect.sync(() => published.push(event)),
            Deferred.succeed(listening, void 0)
          )))
        yield* Deferred.await(listening)
        const exit = yield* Effect.exit(manager.refresh)
        yield* settle
        yield* Fiber.interrupt(events)

        if (outcome === "defect") {
          expect(Exit.isFailure(exit) && Cause.hasDies(exit.cause)).toBe(true)
          // The defect still says what happened, without the token.
          expect(Cause.pretty(Exit.isFailure(exit) ? exit.cause : Cause.empty)).toContain("no match for request")
        } else {
          const error = Exit.isFailure(exit) ? Cause.findErrorOption(exit.cause) : Option.none()
          expect(Option.isSome(error) && error.value._tag).toBe(outcome)
          // What was seen is checked, so the check is not vacuous.
          expect(published.map((event) => event._tag)).toContain("RefreshFailed")
          expect(capturing.capture.logs.some((line) => line.includes("refresh failed"))).toBe(true)
        }
        expect(capturing.capture.spans.map((span) => span.name)).toContain("moon-refresh/refresh")

        const everything = [
          ...renderExit(exit),
          ...published.flatMap(renderAll),
          ...capturing.capture.texts,
          ...capturing.spanTexts()
        ]
        expectAbsent(everything, [...forms, token.slice(0, 12)])
      }))
    })
  }
})

describe("no token leaves in what a refresh fails with (review findings)", () => {
  // A cause holding an interruption beside a defect went out as it came: the
  // defect's message echoed the body and its `cause` held the request.
  it.effect("a defect beside an interruption leaves scrubbed, and the interruption stays", () =>
    Effect.gen(function*() {
      const token = "rt-echoed-beside-an-interrupt-0123456789"
      const echoing = HttpClient.make((request) =>
        Effect.flatMap(
          request.body._tag === "Stream"
            ? Effect.orDie(Stream.mkUint8Array(request.body.stream))
            : Effect.succeed(new Uint8Array(0)),
          (bytes) =>
            Effect.failCause(Cause.combine(
              Cause.die(new Error(`no match for ${new TextDecoder().decode(bytes)}`, { cause: request })),
              Cause.interrupt(7)
            ))
        )
      )
      const exit = yield* RefreshClient.refresh(Redacted.make(token)).pipe(
        Effect.provide(RefreshClient.layer({ baseUrl: "https://auth.example.com", policy: RefreshPolicy.none })),
        Effect.provideService(HttpClient.HttpClient, echoing),
        Effect.exit
      )
      expect(Exit.isFailure(exit) && Cause.hasInterrupts(exit.cause) && Cause.hasDies(exit.cause)).toBe(true)
      const cause = Exit.isFailure(exit) ? exit.cause : Cause.empty
      // The defect still says what happened, without the token or the request.
      expect(Cause.pretty(cause)).toContain("no match for")
      for (const text of [Cause.pretty(cause), inspect(cause, { depth: 20 })]) {
        expect(text).not.toContain(token)
        expect(text).not.toContain("auth.example.com/auth/refresh")
      }
    }))

  // The token-field scrubber knew only snake_case names.
  it.effect("an echoed body's token fields are masked in camelCase, kebab-case and any letter case", () =>
    Effect.gen(function*() {
      const others = ["rt-other-1111", "at-other-2222", "id-other-3333", "rt-other-4444", "pr-other-5555"]
      const body = `could not refresh {"refreshToken":"${others[0]}","accessToken":"${others[1]}","idToken":"${
        others[2]
      }","Refresh-Token":"${others[3]}","providerRefreshToken":"${others[4]}"}`
      const { exit } = yield* refreshAgainst([TestHttpClient.text(500, body)])
      const error = expectRefreshError(exit)
      expect(error.message).toContain("could not refresh")
      for (const other of others) expect(error.message).not.toContain(other)
    }))
})

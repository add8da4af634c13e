import { describe, expect, it } from "@effect/vitest"
import type { Scope } from "effect"
import { Cause, Clock, Context, Duration, Effect, Fiber, Layer, Logger, References, Stream } from "effect"
import { FetchHttpClient, HttpClient, HttpClientRequest, HttpClientResponse } from "effect/http"
import { TestClock } from "effect/testing"
import { AuthHttpClient, RefreshClient, RefreshError, SessionManager, SessionStore } from "moon-refresh"
import { MockRefreshClient } from "moon-refresh/testing"
import { inspect } from "node:util"
import { recordingTracer } from "./support/RecordingTracer.js"

const minute = 60_000
const hour = 60 * minute
const url = "https://api.example.com/me"

/**
 * Lets every fiber run until it waits on something, without moving the TestClock.
 * Effect 3's `TestClock.adjust` waited a real timer turn, in which promises
 * in flight (a response body being read) settle; Effect 4's yields to the
 * fiber scheduler only. A 401's body is read through web streams, a few
 * turns of the event loop (three, for 50 at once): ten turns are taken here,
 * each followed by `TestClock.adjust(0)`. Nothing here waits on real I/O, so
 * the count does not depend on the machine's load.
 */
const settle = Effect.repeat(
  Effect.andThen(
    Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, 0))),
    TestClock.adjust(Duration.zero)
  ),
  { times: 9 }
)

/**
 * The API the signed requests go to: it accepts only the access tokens in
 * `accepted`, answers 401 to anything else, and records the `Authorization`
 * header of every request with the TestClock time it arrived.
 */
const makeApi = (options: { readonly accepted: ReadonlyArray<string>; readonly latency?: Duration.Input }) => {
  const received: Array<{ readonly authorization: string | undefined; readonly at: number }> = []
  const accepted = new Set(options.accepted)
  const client = HttpClient.make((request) =>
    Effect.gen(function*() {
      const authorization = request.headers["authorization"]
      received.push({ authorization, at: yield* Clock.currentTimeMillis })
      if (options.latency !== undefined) yield* Effect.sleep(options.latency)
      const ok = authorization !== undefined && accepted.has(authorization.replace(/^Bearer /, ""))
      return HttpClientResponse.fromWeb(
        request,
        new Response(ok ? "{\"id\":\"user-1\"}" : "{\"error\":\"invalid JWT\"}", {
          status: ok ? 200 : 401,
          headers: { "content-type": "application/json" }
        })
      )
    })
  )
  return {
    accept: (token: string) => accepted.add(token),
    received,
    authorizations: () => received.map((request) => request.authorization),
    layer: Layer.succeed(HttpClient.HttpClient, client)
  }
}

type Api = ReturnType<typeof makeApi>

const callCount = (mock: MockRefreshClient.Service) => Effect.map(mock.stats, (stats) => stats.calls)

interface Harness {
  readonly http: AuthHttpClient.Service
  readonly manager: SessionManager.Service
  readonly refresh: MockRefreshClient.Service
}

/**
 * An AuthHttpClient over `api`, with a manager holding a session the mock
 * issued, `mock-access-token-0` valid for an hour (unless `signedIn` is false).
 */
const withClient = <A, E>(
  setup: {
    readonly api: Pick<Api, "layer">
    readonly signedIn?: boolean
    /** The mock's options. Default: every call issues a one-hour session after 1 s. */
    readonly refresh?: MockRefreshClient.Options
  },
  body: (harness: Harness) => Effect.Effect<A, E, Scope.Scope>
) =>
  Effect.gen(function*() {
    const refresh = yield* MockRefreshClient.make(
      setup.refresh ?? { whenEmpty: MockRefreshClient.succeed({ delay: "1 second" }) }
    )
    const session = setup.signedIn === false ? undefined : yield* refresh.issueSession({ name: "0", lifetime: hour })
    const manager = SessionManager.layer({ autoRefresh: false }).pipe(
      Layer.provide(Layer.merge(Layer.succeed(RefreshClient.RefreshClient, refresh), SessionStore.layerMemory(session)))
    )
    const context = yield* Layer.build(
      Layer.provideMerge(AuthHttpClient.layer(), Layer.merge(manager, setup.api.layer))
    )
    return yield* body({
      http: Context.get(context, AuthHttpClient.AuthHttpClient),
      manager: Context.get(context, SessionManager.SessionManager),
      refresh
    })
  }).pipe(Effect.scoped)

describe("AuthHttpClient", () => {
  it.effect("sends Authorization: Bearer <access token> with every request", () => {
    const api = makeApi({ accepted: ["mock-access-token-0"] })
    return withClient({ api }, ({ http, refresh }) =>
      Effect.gen(function*() {
        const response = yield* http.get(url)
        expect(response.status).toBe(200)
        yield* http.post(url)
        expect(api.authorizations()).toStrictEqual(["Bearer mock-access-token-0", "Bearer mock-access-token-0"])
        expect(yield* callCount(refresh)).toBe(0)
      }))
  })

  it.effect("fails with NoSessionError, sending nothing, when nobody is signed in", () => {
    const api = makeApi({ accepted: [] })
    return withClient({ api, signedIn: false }, ({ http }) =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(http.get(url))
        expect(error._tag).toBe("NoSessionError")
        expect(api.received).toHaveLength(0)
      }))
  })

  it.effect("50 concurrent requests that all get 401 cause one refresh and 50 replays with the new token", () => {
    // The server revoked mock-access-token-0 although it has not expired; only the refreshed token works.
    const api = makeApi({ accepted: ["mock-access-token-1"] })
    return withClient({ api }, ({ http, refresh }) =>
      Effect.gen(function*() {
        const requests = yield* Effect.forkChild(
          Effect.all(Array.from({ length: 50 }, () => http.get(url)), { concurrency: "unbounded" })
        )
        yield* settle
        expect(yield* callCount(refresh)).toBe(1)
        yield* TestClock.adjust("1 second")
        const responses = yield* Fiber.join(requests)
        expect(responses.map((response) => response.status)).toStrictEqual(Array.from({ length: 50 }, () => 200))
        expect(yield* callCount(refresh)).toBe(1)
        const authorizations = api.authorizations()
        expect(authorizations).toHaveLength(100)
        expect(authorizations.filter((value) => value === "Bearer mock-access-token-0")).toHaveLength(50)
        expect(authorizations.filter((value) => value === "Bearer mock-access-token-1")).toHaveLength(50)
      }))
  })

  it.effect("returns a second 401 as it is: exactly two sends and one refresh, never a loop", () => {
    const api = makeApi({ accepted: [] })
    return withClient({ api }, ({ http, refresh }) =>
      Effect.gen(function*() {
        const request = yield* Effect.forkChild(http.get(url))
        yield* settle
        yield* TestClock.adjust("1 hour")
        const response = yield* Fiber.join(request)
        expect(response.status).toBe(401)
        expect(yield* response.json).toStrictEqual({ error: "invalid JWT" })
        expect(api.authorizations()).toStrictEqual(["Bearer mock-access-token-0", "Bearer mock-access-token-1"])
        expect(yield* callCount(refresh)).toBe(1)
      }))
  })

  it.effect("replays with the current token, without refreshing, when the session changed while the request was out", () => {
    const api = makeApi({ accepted: ["mock-access-token-new"], latency: "1 second" })
    return withClient({ api }, ({ http, manager, refresh }) =>
      Effect.gen(function*() {
        const request = yield* Effect.forkChild(http.get(url))
        yield* settle
        yield* manager.signIn(yield* refresh.issueSession({ name: "new", lifetime: 2 * hour }))
        yield* TestClock.adjust("1 second")
        yield* TestClock.adjust("1 second")
        const response = yield* Fiber.join(request)
        expect(response.status).toBe(200)
        expect(api.authorizations()).toStrictEqual(["Bearer mock-access-token-0", "Bearer mock-access-token-new"])
        expect(yield* callCount(refresh)).toBe(0)
      }))
  })

  it.effect("joins a refresh already in flight when its request gets a 401", () => {
    const api = makeApi({ accepted: ["mock-access-token-1"] })
    return withClient({ api }, ({ http, manager, refresh }) =>
      Effect.gen(function*() {
        const refreshing = yield* Effect.forkChild(manager.refresh)
        yield* settle
        const request = yield* Effect.forkChild(http.get(url))
        yield* settle
        yield* TestClock.adjust("1 second")
        expect((yield* Fiber.join(request)).status).toBe(200)
        yield* Fiber.join(refreshing)
        expect(yield* callCount(refresh)).toBe(1)
        expect(api.authorizations()).toStrictEqual(["Bearer mock-access-token-0", "Bearer mock-access-token-1"])
      }))
  })

  it.effect("does not replay a request whose body is a stream (it cannot be sent twice)", () => {
    const api = makeApi({ accepted: ["mock-access-token-1"] })
    return withClient({ api }, ({ http, refresh }) =>
      Effect.gen(function*() {
        const streamed = HttpClientRequest.post(url).pipe(
          HttpClientRequest.bodyStream(Stream.make(new TextEncoder().encode("{\"a\":1}")))
        )
        const request = yield* Effect.forkChild(http.execute(streamed))
        yield* settle
        yield* TestClock.adjust("1 second")
        const response = yield* Fiber.join(request)
        expect(response.status).toBe(401)
        // Returned unread: the caller can still read why it was refused.
        expect(yield* response.text).toBe("{\"error\":\"invalid JWT\"}")
        expect(api.authorizations()).toStrictEqual(["Bearer mock-access-token-0"])
        // The session was refreshed all the same: the next request carries the new token.
        expect(yield* callCount(refresh)).toBe(1)
        expect((yield* http.get(url)).status).toBe(200)
      }))
  })

  it.effect("fails with the refresh's typed error when the refresh a 401 needed fails", () => {
    const api = makeApi({ accepted: [] })
    const unavailable = new RefreshError.ServerError({ status: 503, message: "service unavailable" })
    const refresh = { whenEmpty: MockRefreshClient.fail(unavailable, { delay: "100 millis" }) }
    return withClient({ api, refresh }, ({ http }) =>
      Effect.gen(function*() {
        const request = yield* Effect.forkChild(Effect.flip(http.get(url)))
        yield* settle
        yield* TestClock.adjust("1 second")
        expect((yield* Fiber.join(request))._tag).toBe("ServerError")
        expect(api.received).toHaveLength(1)
      }))
  })

  it.effect("never puts the Authorization header value in logs or span attributes", () => {
    const api = makeApi({ accepted: ["mock-access-token-1"] })
    const { spans, tracer } = recordingTracer()
    const lines: Array<string> = []
    const capture = Logger.make((options) => {
      lines.push(Logger.formatLogFmt.log(options), Logger.formatJson.log(options))
      lines.push(inspect(options.message, { depth: 10 }), Cause.pretty(options.cause))
    })
    return withClient({ api }, ({ http }) =>
      Effect.gen(function*() {
        const request = yield* Effect.forkChild(
          http.get(url).pipe(
            // What a user might log: the response and the request it answers.
            Effect.tap((response) => Effect.logDebug("got", response, response.request)),
            Effect.withSpan("user-request")
          )
        )
        yield* settle
        yield* TestClock.adjust("1 second")
        expect((yield* Fiber.join(request)).status).toBe(200)
        // A failed request (its error holds the signed request) logged with its cause, too.
        const error = yield* Effect.flip(http.get("http://[not a url"))
        // Effect 3's `RequestError`: in Effect 4, an `HttpClientError` whose reason is the request's.
        expect(error._tag === "HttpClientError" && error.reason._tag).toBe("InvalidUrlError")
        yield* Effect.logError("request failed", error)
        yield* Effect.logError(Cause.fail(error))
      })).pipe(
        Effect.withTracer(tracer),
        // Effect 4 records no header on a client span unless asked (Effect 3
        // recorded them all): asked here, so the spans hold the header to check.
        Effect.provideService(HttpClient.TracerHeaderFilter, () => true),
        Effect.provide(Logger.layer([capture])),
        Effect.provideService(References.MinimumLogLevel, "All"),
        Effect.map(() => {
          // The tokens were sent, so the checks below are not vacuous.
          expect(api.authorizations()).toContain("Bearer mock-access-token-1")
          expect(lines.length).toBeGreaterThan(0)
          // The signed request itself was logged: its header shows as redacted.
          expect(lines.some((line) => line.includes("\"authorization\":\"<redacted>\""))).toBe(true)
          const clientSpans = spans.filter((span) => span.attributes.has("http.request.header.authorization"))
          // The 401 and its replay: the header is recorded, redacted.
          expect(clientSpans.map((span) => span.attributes.get("http.request.header.authorization"))).toStrictEqual([
            "<redacted>",
            "<redacted>"
          ])
          const everything = [
            ...lines,
            ...spans.flatMap((span) => [
              span.name,
              ...[...span.attributes].map(([key, value]) => `${key}=${String(value)} ${JSON.stringify(value)}`),
              ...span.events.map(([name, attributes]) => `${name} ${JSON.stringify(attributes)}`)
            ])
          ]
          for (const text of everything) {
            for (
              const token of [
                "mock-access-token-0",
                "mock-access-token-1",
                "mock-refresh-token-0",
                "mock-refresh-token-1"
              ]
            ) {
              expect(text).not.toContain(token)
            }
          }
        })
      )
  })

  describe("under FetchHttpClient, where fetch follows redirects itself", () => {
    /**
     * A `fetch` for the API: the first call answers 401 as if fetch had
     * followed a redirect to `landedAt` (fetch drops the header on its way
     * there), later ones 200 for the accepted token. Records each call's URL
     * and `Authorization` header.
     */
    const makeFetch = (landedAt: string) => {
      const calls: Array<{ readonly url: string; readonly authorization: string | null }> = []
      const fetch: typeof globalThis.fetch = (input, init) => {
        const authorization = new Headers(init?.headers).get("authorization")
        calls.push({ url: String(input), authorization })
        const ok = calls.length > 1 && authorization === "Bearer mock-access-token-1"
        const response = new Response(ok ? "{\"id\":\"user-1\"}" : "{\"error\":\"no token\"}", {
          status: ok ? 200 : 401
        })
        if (calls.length === 1) {
          Object.defineProperties(response, { redirected: { value: true }, url: { value: landedAt } })
        }
        return Promise.resolve(response)
      }
      return { calls, fetch }
    }

    for (
      const [where, provide] of [
        // The platform's own example of a custom fetch: given to the client's layer only.
        [
          "given to FetchHttpClient.layer only",
          (fetch: typeof globalThis.fetch) =>
            FetchHttpClient.layer.pipe(Layer.provide(Layer.succeed(FetchHttpClient.Fetch, fetch)))
        ],
        [
          "in the program's context",
          (fetch: typeof globalThis.fetch) =>
            FetchHttpClient.layer.pipe(Layer.provideMerge(Layer.succeed(FetchHttpClient.Fetch, fetch)))
        ]
      ] as const
    ) {
      it.effect(`a 401 fetch got from another origin after a redirect spends no token (a Fetch ${where})`, () => {
        const api = makeFetch("https://elsewhere.example/me")
        return withClient({ api: { layer: provide(api.fetch) } }, ({ http, refresh }) =>
          Effect.gen(function*() {
            const response = yield* http.get(url)
            expect(response.status).toBe(401)
            expect(yield* callCount(refresh)).toBe(0)
            // The user's fetch was the one called, once, and with the bearer (fetch drops it at the redirect).
            expect(api.calls).toStrictEqual([{ url, authorization: "Bearer mock-access-token-0" }])
          }))
      })

      it.effect(`a 401 fetch got from the same origin after a redirect refreshes and replays (a Fetch ${where})`, () => {
        const api = makeFetch("https://api.example.com/me/")
        return withClient({ api: { layer: provide(api.fetch) } }, ({ http, refresh }) =>
          Effect.gen(function*() {
            const request = yield* Effect.forkChild(http.get(url))
            yield* settle
            yield* TestClock.adjust("1 second")
            expect((yield* Fiber.join(request)).status).toBe(200)
            expect(yield* callCount(refresh)).toBe(1)
            expect(api.calls.map((call) => call.authorization)).toStrictEqual([
              "Bearer mock-access-token-0",
              "Bearer mock-access-token-1"
            ])
          }))
      })
    }
  })
})

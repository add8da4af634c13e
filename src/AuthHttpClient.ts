/**
 * An `HttpClient` that signs requests with the session's access token, and on
 * a 401 refreshes once (joining any refresh already in flight) and replays the
 * request once. A second 401 is returned as it is: never a loop.
 *
 * The token goes to the origin of the request it was put on and nowhere
 * else: a redirect to another origin drops the header, as `fetch`, curl and
 * `HttpClient.followRedirects()` do, and a 401 from another origin than the
 * token's causes no refresh. With `origins`, only requests to those origins
 * carry the token at all.
 *
 * @since 0.1.0
 */
import type * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as HttpClient from "effect/http/HttpClient"
import type * as HttpClientError from "effect/http/HttpClientError"
import * as HttpClientRequest from "effect/http/HttpClientRequest"
import type * as HttpClientResponse from "effect/http/HttpClientResponse"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Result from "effect/Result"
import type * as Tracer from "effect/Tracer"
import { answeredElsewhere, drain, originOf, sendNoting, type Trip } from "./internal/http.js"
import * as Metrics from "./internal/metrics.js"
import * as Options_ from "./internal/options.js"
import * as SessionManager from "./SessionManager.js"

/**
 * The client: an `HttpClient` whose errors are the transport's and the
 * session's. A request fails with `NoSessionError` when nobody is signed in,
 * and with the refresh's typed error when a refresh it needed failed.
 *
 * @since 1.0.0
 * @category models
 */
export interface Service
  extends HttpClient.HttpClient.With<HttpClientError.HttpClientError | SessionManager.SessionError>
{}

/**
 * The tag of the client: `yield* AuthHttpClient.AuthHttpClient` gives the
 * {@link Service}. (Before 1.0 the tag and the client's type were one
 * interface of this name; the client's type is now {@link Service}.)
 *
 * @since 0.1.0
 * @category tags
 */
export class AuthHttpClient extends Context.Service<AuthHttpClient, Service>()("moon-refresh/AuthHttpClient") {}

/**
 * @since 0.2.0
 * @category models
 */
export interface Options {
  /**
   * The origins (scheme, host and port, e.g. `"https://api.example.com"`)
   * whose requests carry the access token. A request to any other origin is
   * sent as it is, without the token, and its 401 never causes a refresh.
   * Omitted: every request is signed. Either way, a redirect to another
   * origin than the request's drops the `Authorization` header (even to
   * another origin listed here): `fetch` and `HttpClient.followRedirects()`
   * drop it themselves.
   */
  readonly origins?: ReadonlyArray<string> | undefined
}

const owner = "AuthHttpClient"

const newTrip = (): Trip => ({ first: undefined })

// The one check of the options: each origin must be a URL's origin, written as one.
const resolveOrigins = (
  options: Options
): Result.Result<ReadonlySet<string> | undefined, Options_.Invalid> => {
  if (options.origins === undefined) return Result.succeed(undefined)
  const origins = new Set<string>()
  for (const input of options.origins) {
    const origin = originOf(input)
    if (origin === undefined || origin === "null" || origin !== input.replace(/\/$/, "")) {
      return Result.fail({
        owner,
        option: "origins",
        reason: `must list origins such as "https://api.example.com" (scheme, host and port; no path): got ${
          JSON.stringify(input.slice(0, 100))
        }`
      })
    }
    origins.add(origin)
  }
  return Result.succeed(origins)
}

// Bounded attributes only: the method, never the URL (its query may hold anything).
const replayOptions = (request: HttpClientRequest.HttpClientRequest): Tracer.SpanOptionsNoTrace => ({
  attributes: { "http.request.method": request.method }
})

const requestOrigin = (request: HttpClientRequest.HttpClientRequest): string | undefined =>
  Option.match(HttpClientRequest.toUrl(request), {
    onNone: () => undefined,
    onSome: (url) => url.origin
  })

/**
 * Wraps `client` with the `SessionManager` in context.
 *
 * A request whose body is a stream cannot be sent twice: its 401 is returned
 * without a replay (the session is still refreshed for the next request).
 *
 * Dies (a defect naming the option) when an origin is not one.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  client: HttpClient.HttpClient,
  options: Options = {}
): Effect.Effect<Service, never, SessionManager.SessionManager> =>
  Effect.flatMap(Options_.orDie(resolveOrigins(options)), (origins) => build(client, origins))

const build = (
  client: HttpClient.HttpClient,
  origins: ReadonlySet<string> | undefined
): Effect.Effect<Service, never, SessionManager.SessionManager> =>
  Effect.gen(function*() {
    const manager = yield* SessionManager.SessionManager
    // The metrics go to the registry of the context the client was built in.
    const context = yield* Effect.context<never>()
    const allowed = (request: HttpClientRequest.HttpClientRequest) => {
      const origin = origins === undefined ? undefined : requestOrigin(request)
      return origins === undefined || (origin !== undefined && origins.has(origin))
    }
    // Every signed request: `trip` notes the origin the bearer was sent to,
    // to tell whether the answer came from there.
    const send = (request: HttpClientRequest.HttpClientRequest, trip: Trip) => sendNoting(client, request, trip)

    // The request came back 401 from its own origin: refresh (or take the
    // token another request just got) and send it once more. In the span
    // `moon-refresh/AuthHttpClient.replay`, the parent of the refresh it starts.
    const replay = (
      request: HttpClientRequest.HttpClientRequest,
      token: Redacted.Redacted<string>,
      response: HttpClientResponse.HttpClientResponse
    ) =>
      Effect.useSpan("moon-refresh/AuthHttpClient.replay", replayOptions(request), (span) =>
        Effect.onExit(
          Effect.withParentSpan(refreshAndResend(request, token, response, span), span, { captureStackTrace: false }),
          (exit) =>
            Effect.sync(() => {
              // A stream body is not sent again: no replay to count.
              if (request.body._tag === "Stream") return
              const outcome = Exit.isSuccess(exit) && exit.value.status !== 401 ? "succeeded" : "failed"
              span.attribute("moon.auth.outcome", outcome)
              Metrics.replayed(outcome, context)
            })
        ))

    const refreshAndResend = (
      request: HttpClientRequest.HttpClientRequest,
      token: Redacted.Redacted<string>,
      response: HttpClientResponse.HttpClientResponse,
      span: Tracer.Span
    ): Effect.Effect<
      HttpClientResponse.HttpClientResponse,
      HttpClientError.HttpClientError | SessionManager.SessionError
    > =>
      Effect.gen(function*() {
        // A stream body cannot be sent twice: that 401 goes back to the caller
        // unread. Any other 401 is drained to free the connection.
        const replayable = request.body._tag !== "Stream"
        if (replayable) yield* drain(response)
        // If the session changed while the request was out (another request's
        // refresh, a proactive one), the new token is already there: no refresh.
        const current = yield* manager.current
        const changed = Option.isSome(current) &&
          Redacted.value(current.value.accessToken) !== Redacted.value(token)
        span.attribute("moon.auth.refreshed", !changed)
        const next = changed ? yield* manager.accessToken : (yield* manager.refresh).accessToken
        span.attribute("moon.auth.replayed", replayable)
        if (!replayable) return response
        return yield* send(HttpClientRequest.bearerToken(request, next), newTrip())
      })

    // The path every request takes: two steps, no generator (this is the
    // per-request cost of the client, measured against a fixed header).
    const signed = (
      request: HttpClientRequest.HttpClientRequest
    ): Effect.Effect<
      HttpClientResponse.HttpClientResponse,
      HttpClientError.HttpClientError | SessionManager.SessionError
    > =>
      Effect.flatMap(manager.accessToken, (token) => {
        Metrics.requestsSigned.updateUnsafe(1, context)
        const sent = HttpClientRequest.bearerToken(request, token)
        const trip = newTrip()
        return Effect.flatMap(send(sent, trip), (response) =>
          // A 401 from another origin than the bearer's (after a redirect)
          // says nothing about our token: it spends none.
          response.status !== 401 || answeredElsewhere(trip, sent, response)
            ? Effect.succeed(response)
            : replay(request, token, response))
      })

    const unsigned = Effect.sync(() => Metrics.requestsUnsignedNotAllowed.updateUnsafe(1, context))
    const execute = (request: HttpClientRequest.HttpClientRequest) =>
      // Another origin: sent as it is, and its 401 is its own business.
      allowed(request) ? signed(request) : Effect.andThen(unsigned, client.execute(request))

    return HttpClient.makeWith<never, never, HttpClientError.HttpClientError | SessionManager.SessionError, never>(
      (request) => Effect.flatMap(request, execute),
      Effect.succeed
    )
  })

/**
 * Wraps the `HttpClient` in context: without options, every request is
 * signed, whatever its host (right for a program that talks to one API);
 * with `origins`, only requests to those origins. Either way a redirect to
 * another origin drops the token. Dies (a defect naming the option) when an
 * origin is not one.
 *
 * @example
 * ```ts
 * import { Effect, Layer } from "effect"
 * import { FetchHttpClient } from "effect/http"
 * import { AuthHttpClient, RefreshClient, SessionManager, SessionStore } from "moon-refresh"
 *
 * const HttpLive = AuthHttpClient.layer().pipe(
 *   Layer.provideMerge(SessionManager.layer()),
 *   Layer.provide(RefreshClient.layer()),
 *   Layer.provide(SessionStore.layerMemory()),
 *   Layer.provide(FetchHttpClient.layer)
 * )
 *
 * const me = Effect.gen(function*() {
 *   const http = yield* AuthHttpClient.AuthHttpClient
 *   const response = yield* http.get("https://beta.usemoon.ai/accounts")
 *   return yield* response.json
 * }).pipe(Effect.provide(HttpLive))
 *
 * // Moon's API gets the token; requests anywhere else go out without it.
 * const MoonOnly = AuthHttpClient.layer({ origins: ["https://beta.usemoon.ai"] })
 * ```
 *
 * @since 1.0.0
 * @category layers
 */
export const layer = (
  options?: Options
): Layer.Layer<AuthHttpClient, never, HttpClient.HttpClient | SessionManager.SessionManager> =>
  Layer.effect(AuthHttpClient, Effect.flatMap(HttpClient.HttpClient, (client) => make(client, options)))

/**
 * {@link layer} with the options read from `Config`: one `Config` of them,
 * or a `Config` per option. An origin that is not one is a
 * `Config.ConfigError` naming `origins`.
 *
 * @example
 * ```ts
 * import { Config, Schema } from "effect"
 * import { AuthHttpClient } from "moon-refresh"
 *
 * // API_ORIGINS=https://beta.usemoon.ai,https://api.example.com
 * const HttpLive = AuthHttpClient.layerConfig({ origins: Config.Array(Schema.String, "API_ORIGINS") })
 * ```
 *
 * @since 1.0.0
 * @category layers
 */
export const layerConfig = (
  config: Config.Wrap<Options>
): Layer.Layer<AuthHttpClient, Config.ConfigError, HttpClient.HttpClient | SessionManager.SessionManager> =>
  Layer.effect(
    AuthHttpClient,
    Effect.flatMap(
      Options_.fromConfig(config, resolveOrigins),
      (origins) => Effect.flatMap(HttpClient.HttpClient, (client) => build(client, origins))
    )
  )

/**
 * Signs only requests to `options.origins`.
 *
 * @deprecated Use {@link layer}`(options)`: one layer function, options
 * optional (`layerWith` is kept for 0.3 code and goes in 2.0).
 *
 * @since 0.2.0
 * @category layers
 */
export const layerWith = (
  options: Options
): Layer.Layer<AuthHttpClient, never, HttpClient.HttpClient | SessionManager.SessionManager> => layer(options)

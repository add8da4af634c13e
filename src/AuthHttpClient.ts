/**
 * An `HttpClient` that signs every request with the session's access token,
 * and on a 401 refreshes once (joining any refresh already in flight) and
 * replays the request once. A second 401 is returned as it is: never a loop.
 *
 * @since 0.1.0
 */
import { HttpClient, type HttpClientError, HttpClientRequest, type HttpClientResponse } from "@effect/platform"
import { Context, Effect, Layer, Option, Redacted } from "effect"
import * as SessionManager from "./SessionManager.js"

/**
 * An `HttpClient` whose errors are the transport's and the session's: a
 * request fails with `NoSessionError` when nobody is signed in, and with the
 * refresh's typed error when a refresh it needed failed.
 *
 * @since 0.1.0
 * @category models
 */
export interface AuthHttpClient
  extends HttpClient.HttpClient.With<HttpClientError.HttpClientError | SessionManager.SessionError>
{}

/**
 * @since 0.1.0
 * @category tags
 */
export const AuthHttpClient: Context.Tag<AuthHttpClient, AuthHttpClient> = Context.GenericTag<AuthHttpClient>(
  "moon-refresh/AuthHttpClient"
)

const withToken = (request: HttpClientRequest.HttpClientRequest, token: Redacted.Redacted<string>) =>
  HttpClientRequest.bearerToken(request, token)

/**
 * Wraps `client` with the `SessionManager` in context.
 *
 * A request whose body is a stream cannot be sent twice: its 401 is returned
 * without a replay (the session is still refreshed for the next request).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  client: HttpClient.HttpClient
): Effect.Effect<AuthHttpClient, never, SessionManager.SessionManager> =>
  Effect.map(SessionManager.SessionManager, (manager) => {
    const execute = (
      request: HttpClientRequest.HttpClientRequest
    ): Effect.Effect<
      HttpClientResponse.HttpClientResponse,
      HttpClientError.HttpClientError | SessionManager.SessionError
    > =>
      Effect.gen(function*() {
        const token = yield* manager.accessToken
        const response = yield* client.execute(withToken(request, token))
        if (response.status !== 401) return response
        // A stream body cannot be sent twice: that 401 goes back to the caller
        // unread. Any other 401 is drained to free the connection.
        const replayable = request.body._tag !== "Stream"
        if (replayable) yield* Effect.ignore(response.arrayBuffer)
        // If the session changed while the request was out (another request's
        // refresh, a proactive one), the new token is already there: no refresh.
        const current = yield* manager.current
        const changed = Option.isSome(current) &&
          Redacted.value(current.value.accessToken) !== Redacted.value(token)
        const next = changed ? yield* manager.accessToken : (yield* manager.refresh).accessToken
        if (!replayable) return response
        yield* Effect.annotateCurrentSpan("moon.auth.replayed", true)
        return yield* client.execute(withToken(request, next))
      })
    return HttpClient.makeWith<never, never, HttpClientError.HttpClientError | SessionManager.SessionError, never>(
      (request) => Effect.flatMap(request, execute),
      Effect.succeed
    )
  })

/**
 * Wraps the `HttpClient` in context.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<AuthHttpClient, never, HttpClient.HttpClient | SessionManager.SessionManager> = Layer
  .effect(AuthHttpClient, Effect.flatMap(HttpClient.HttpClient, make))

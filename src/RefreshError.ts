/**
 * The ways a refresh can fail, as `Schema.TaggedError` classes.
 *
 * Every error carries what a caller needs to decide what to do next (a status,
 * a `Retry-After`, a short message) and never a token: messages are read from
 * the server's body, capped, and never include the request.
 *
 * @since 0.1.0
 */
import type * as Duration from "effect/Duration"
import * as Option from "effect/Option"
import * as Predicate from "effect/Predicate"
import * as Schema from "effect/Schema"

/**
 * Every refresh error carries this key, which is how {@link isRefreshError}
 * recognises one: a plain object with a matching `_tag` is not an error of ours.
 *
 * @since 0.2.0
 * @category symbols
 */
export const TypeId: unique symbol = Symbol.for("moon-refresh/RefreshError")

/**
 * @since 0.2.0
 * @category symbols
 */
export type TypeId = typeof TypeId

/**
 * The network failed, or one attempt took longer than its timeout.
 *
 * @since 0.1.0
 * @category errors
 */
export class TransportError extends Schema.TaggedError<TransportError>("moon-refresh/TransportError")(
  "TransportError",
  {
    reason: Schema.Literals(["Network", "Timeout"]),
    message: Schema.String
  }
) {
  /** @since 0.2.0 */
  get [TypeId](): TypeId {
    return TypeId
  }

  /** The tag, as in Effect 3 (the schema's identifier is namespaced). */
  override get name(): "TransportError" {
    return "TransportError"
  }
}

/**
 * The server answered with a status that is not a session and not a verdict on
 * the token: a 5xx; a 401 or 403 whose body is not the auth server's JSON
 * error (a proxy's or firewall's page); a redirect (3xx, or status 0 for a
 * browser's opaque redirect), which is refused so the token never leaves the
 * configured URL; status 0 also when the token was not sent, or the client
 * sent the request twice (the message says which); or an unexpected status
 * such as a 404 from a wrong base URL.
 * Only 5xx and those 401/403 are retryable (see {@link isRetryable}).
 *
 * @since 0.1.0
 * @category errors
 */
export class ServerError extends Schema.TaggedError<ServerError>("moon-refresh/ServerError")(
  "ServerError",
  {
    status: Schema.Number,
    message: Schema.String
  }
) {
  /** @since 0.2.0 */
  get [TypeId](): TypeId {
    return TypeId
  }

  /** The tag, as in Effect 3 (the schema's identifier is namespaced). */
  override get name(): "ServerError" {
    return "ServerError"
  }
}

/**
 * The server asked us to slow down: a 429, or a 503 with `Retry-After`.
 * `retryAfter` is the server's wish, already capped at one hour.
 *
 * @since 0.1.0
 * @category errors
 */
export class RateLimitedError extends Schema.TaggedError<RateLimitedError>("moon-refresh/RateLimitedError")(
  "RateLimitedError",
  {
    status: Schema.Number,
    retryAfter: Schema.Option(Schema.Duration),
    message: Schema.String
  }
) {
  /** @since 0.2.0 */
  get [TypeId](): TypeId {
    return TypeId
  }

  /** The tag, as in Effect 3 (the schema's identifier is namespaced). */
  override get name(): "RateLimitedError" {
    return "RateLimitedError"
  }
}

/**
 * The refresh token is dead: a 400, a 401/403 with the auth server's JSON
 * error, or any status whose body carries one of Supabase's dead-token
 * messages or codes, or a blank token refused
 * before any request was sent (then `status` is absent). Terminal: retrying
 * cannot help, the user has to sign in again.
 *
 * @since 0.1.0
 * @category errors
 */
export class TokenRejectedError extends Schema.TaggedError<TokenRejectedError>("moon-refresh/TokenRejectedError")(
  "TokenRejectedError",
  {
    status: Schema.optional(Schema.Number),
    message: Schema.String
  }
) {
  /** @since 0.2.0 */
  get [TypeId](): TypeId {
    return TypeId
  }

  /** The tag, as in Effect 3 (the schema's identifier is namespaced). */
  override get name(): "TokenRejectedError" {
    return "TokenRejectedError"
  }
}

/**
 * A 2xx answer whose body is not a session: not JSON, too large, or a field
 * missing, of the wrong type or out of bounds. The message names the field,
 * never its value.
 *
 * `rotatedRefreshToken`: the body was refused but carried a well-formed new
 * refresh token, so the server did rotate and the token that was sent is
 * spent. Keep this one (the `SessionManager` saves it like any rotation):
 * dropping it would sign the user out for good.
 *
 * @since 0.1.0
 * @category errors
 */
export class MalformedResponseError extends Schema.TaggedError<MalformedResponseError>(
  "moon-refresh/MalformedResponseError"
)(
  "MalformedResponseError",
  {
    status: Schema.Number,
    message: Schema.String,
    // A `Redacted` on both sides, whose JSON encoding fails: encoding an error
    // must never write the token out.
    rotatedRefreshToken: Schema.optional(Schema.Redacted(Schema.String, { disallowJsonEncode: true }))
  }
) {
  /** @since 0.2.0 */
  get [TypeId](): TypeId {
    return TypeId
  }

  /** The tag, as in Effect 3 (the schema's identifier is namespaced). */
  override get name(): "MalformedResponseError" {
    return "MalformedResponseError"
  }
}

/**
 * @since 0.1.0
 * @category models
 */
export type RefreshError =
  | TransportError
  | ServerError
  | RateLimitedError
  | TokenRejectedError
  | MalformedResponseError

/**
 * The schema of every refresh error, for events and persistence.
 *
 * @since 0.1.0
 * @category schemas
 */
export const RefreshError: Schema.Union<
  readonly [
    typeof TransportError,
    typeof ServerError,
    typeof RateLimitedError,
    typeof TokenRejectedError,
    typeof MalformedResponseError
  ]
> = Schema.Union([TransportError, ServerError, RateLimitedError, TokenRejectedError, MalformedResponseError])

/**
 * Whether `u` is one of the refresh errors above, by its type id (not by its
 * `_tag`, which any object can carry).
 *
 * @since 0.1.0
 * @category guards
 */
export const isRefreshError = (u: unknown): u is RefreshError => Predicate.hasProperty(u, TypeId)

/**
 * Whether trying again could succeed: network failures, timeouts, 5xx, rate
 * limits, and a 401 or 403 that did not come from the auth server (an HTML
 * page from a proxy). A rejected token, a malformed answer, a redirect or an
 * unexpected 4xx are final.
 *
 * @since 0.1.0
 * @category predicates
 */
export const isRetryable = (error: RefreshError): boolean => {
  switch (error._tag) {
    case "TransportError":
    case "RateLimitedError":
      return true
    case "ServerError":
      // A 401/403 is a ServerError only when its body was not the auth
      // server's (a proxy's or firewall's page): worth another try.
      return error.status >= 500 || error.status === 401 || error.status === 403
    case "TokenRejectedError":
    case "MalformedResponseError":
      return false
  }
}

/**
 * The server's `Retry-After`, when the error carries one.
 *
 * @since 0.1.0
 * @category getters
 */
export const retryAfter = (error: RefreshError): Option.Option<Duration.Duration> =>
  error._tag === "RateLimitedError" ? error.retryAfter : Option.none()

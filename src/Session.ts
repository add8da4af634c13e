/**
 * A Moon session: the two tokens (always `Redacted`), when the access token
 * expires, and the server's user object.
 *
 * `MoonResponse` decodes the body of `POST /auth/refresh` into a `Session`, in
 * either of the two shapes Moon is known to send (bare, or wrapped in
 * `{ token: … }`). Every field is checked; a failure names the field, never
 * its value.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as DateTime from "effect/DateTime"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { dual, identity } from "effect/Function"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import * as SchemaTransformation from "effect/SchemaTransformation"
import * as Schema_ from "./internal/sessionSchema.js"
import * as Wire from "./internal/wire.js"

/**
 * The server's user object. `id` is required and `email` typed when present;
 * every other field the server sends is kept as it came.
 *
 * @since 0.1.0
 * @category schemas
 */
export const User: typeof Schema_.User = Schema_.User

/**
 * @since 0.1.0
 * @category models
 */
export type User = Schema_.User

/**
 * A session. Printing it, `JSON.stringify`, `util.inspect` and logging show
 * `<redacted>` for both tokens. Encoding it with its schema (what a
 * `SessionStore` persists) writes the tokens in clear. `issuedAt` (since
 * 0.3.0) is when the server issued the tokens, set by the refresh client.
 *
 * @since 0.1.0
 * @category models
 */
export const Session: typeof Schema_.Session = Schema_.Session

/**
 * @since 0.1.0
 * @category models
 */
export type Session = Schema_.Session

/**
 * What {@link make} accepts: tokens as strings or `Redacted`, the expiry as
 * anything `DateTime.make` understands (a `Date`, epoch milliseconds, an ISO string).
 *
 * @since 0.1.0
 * @category models
 */
export interface MakeInput {
  readonly accessToken: string | Redacted.Redacted<string>
  readonly refreshToken: string | Redacted.Redacted<string>
  readonly expiresAt: DateTime.DateTime | Date | number | string
  readonly tokenType?: string | undefined
  readonly user: User
  /** When the tokens were issued: see {@link Session.issuedAt}. */
  readonly issuedAt?: DateTime.DateTime | Date | number | string | undefined
}

const toRedacted = (value: string | Redacted.Redacted<string>): Redacted.Redacted<string> =>
  Redacted.isRedacted(value) ? value : Redacted.make(value)

/**
 * A value given to {@link make} is not a session: a token is empty, the expiry
 * is not a date, or the user has no string `id`. `field` names the input;
 * the message never holds a token.
 *
 * @since 0.2.0
 * @category errors
 */
export class InvalidSessionError extends Schema.TaggedError<InvalidSessionError>("moon-refresh/InvalidSessionError")(
  "InvalidSessionError",
  {
    field: Schema.Literals(["accessToken", "refreshToken", "expiresAt", "tokenType", "user", "issuedAt"]),
    message: Schema.String
  }
) {
  /** The tag, as in Effect 3 (the schema's identifier is namespaced). */
  override get name(): "InvalidSessionError" {
    return "InvalidSessionError"
  }
}

const invalid = (field: InvalidSessionError["field"], why: string) =>
  Result.fail(new InvalidSessionError({ field, message: `Session.make: ${field} ${why}` }))

// The decoded side: a user as a session holds it (no `email: null`).
const isUser = Schema.is(User)

/**
 * Builds a session from plain values, or says which input is wrong. Use it
 * where the values come from outside (a form, a file, another library);
 * a `Result` can be yielded in `Effect.gen`.
 *
 * @example
 * ```ts
 * import { Result } from "effect"
 * import { Session } from "moon-refresh"
 *
 * const built = Session.make({
 *   accessToken: "eyJ…",
 *   refreshToken: "v1.refresh",
 *   expiresAt: Date.now() + 3_600_000,
 *   user: { id: "user-1" }
 * })
 * if (Result.isFailure(built)) console.error(built.failure.message)
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (input: MakeInput): Result.Result<Session, InvalidSessionError> => {
  const accessToken = toRedacted(input.accessToken)
  const refreshToken = toRedacted(input.refreshToken)
  // Checked here rather than by the class constructor, whose error would print the value.
  if (typeof Redacted.value(accessToken) !== "string" || Redacted.value(accessToken) === "") {
    return invalid("accessToken", "must be a non-empty string")
  }
  if (typeof Redacted.value(refreshToken) !== "string" || Redacted.value(refreshToken) === "") {
    return invalid("refreshToken", "must be a non-empty string")
  }
  const expiresAt = DateTime.make(input.expiresAt)
  if (Option.isNone(expiresAt)) return invalid("expiresAt", "is not a valid date")
  const tokenType = input.tokenType ?? "bearer"
  if (typeof tokenType !== "string") return invalid("tokenType", "must be a string")
  if (!isUser(input.user)) return invalid("user", "must be an object with a string id")
  const issuedAt = input.issuedAt === undefined ? undefined : DateTime.make(input.issuedAt)
  if (issuedAt !== undefined && Option.isNone(issuedAt)) return invalid("issuedAt", "is not a valid date")
  // Every field was checked above: no second run of the checks in the constructor.
  return Result.succeed(
    new Session(
      {
        accessToken,
        refreshToken,
        expiresAt: DateTime.toUtc(expiresAt.value),
        tokenType,
        user: input.user,
        ...(issuedAt === undefined ? {} : { issuedAt: DateTime.toUtc(issuedAt.value) })
      },
      { disableChecks: true }
    )
  )
}

/**
 * {@link make} for values you control (tests, fixtures): throws the
 * `InvalidSessionError` instead of returning it. Until 0.2.0 this was `make`.
 *
 * @since 0.2.0
 * @category constructors
 */
export const unsafeMake = (input: MakeInput): Session => Result.getOrThrowWith(make(input), identity)

/**
 * Whether the access token expires within `duration` of the `Clock`'s now
 * (or has already expired). Data-first or data-last.
 *
 * @since 0.1.0
 * @category predicates
 */
export const expiresWithin: {
  (duration: Duration.Input): (self: Session) => Effect.Effect<boolean>
  (self: Session, duration: Duration.Input): Effect.Effect<boolean>
} = dual(
  2,
  (self: Session, duration: Duration.Input): Effect.Effect<boolean> =>
    Effect.map(
      Clock.currentTimeMillis,
      (now) => DateTime.toEpochMillis(self.expiresAt) - now <= Duration.toMillis(duration)
    )
)

/**
 * Decodes the body of a successful `POST /auth/refresh` into a {@link Session}.
 * Accepts the bare and the `{ token: … }` shapes; derives `expiresAt` from
 * `expires_in` and the `Clock` (a duration needs no clock comparison), else
 * from `expires_at`. An expiry that is not in the future, or more than 30 days
 * away, is refused and the error names the field: such a session would be
 * useless the moment it arrives, or is a unit mistake (`expires_at` in
 * milliseconds).
 *
 * Encoding writes the bare shape, with both `expires_at` and `expires_in`.
 *
 * @since 0.1.0
 * @category schemas
 */
export const MoonResponse: Schema.Codec<Session, unknown> = Schema.Unknown.pipe(
  // `Unknown` on the wire side, not a union of the two shapes: the shape is
  // chosen by hand in `decode`, so a failure names the fields of the shape
  // actually sent.
  Schema.decodeTo(
    Schema.toType(Session),
    SchemaTransformation.transformEffect<Session, unknown>({
      decode: (input) => Effect.flatMap(Clock.currentTimeMillis, (now) => Wire.decode(input, now)),
      encode: (session) =>
        Effect.map(Clock.currentTimeMillis, (now) => {
          const expiresAt = DateTime.toEpochMillis(session.expiresAt)
          return {
            access_token: Redacted.value(session.accessToken),
            refresh_token: Redacted.value(session.refreshToken),
            expires_at: Math.floor(expiresAt / 1000),
            expires_in: Math.max(0, Math.round((expiresAt - now) / 1000)),
            token_type: session.tokenType,
            user: session.user
          }
        })
    })
  )
)

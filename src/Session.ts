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
import { Clock, DateTime, Duration, Effect, Option, ParseResult, Predicate, Redacted, Schema } from "effect"
import * as AST from "effect/SchemaAST"
import * as RefreshError from "./RefreshError.js"

/**
 * The server's user object. `id` is required and `email` typed when present;
 * every other field the server sends is kept as it came.
 *
 * @since 0.1.0
 * @category schemas
 */
export const User = Schema.Struct(
  {
    id: Schema.String,
    // Supabase sends `null` for a user without an email (phone sign-in).
    email: Schema.optionalWith(Schema.String, { nullable: true })
  },
  Schema.Record({ key: Schema.String, value: Schema.Unknown })
)

/**
 * @since 0.1.0
 * @category models
 */
export type User = typeof User.Type

const Token = Schema.Redacted(Schema.String.pipe(Schema.nonEmptyString()))

/**
 * A session. Printing it, `JSON.stringify`, `util.inspect` and logging show
 * `<redacted>` for both tokens. Encoding it with its schema (what a
 * `SessionStore` persists) writes the tokens in clear.
 *
 * @since 0.1.0
 * @category models
 */
export class Session extends Schema.Class<Session>("moon-refresh/Session")({
  accessToken: Token,
  refreshToken: Token,
  expiresAt: Schema.DateTimeUtc,
  tokenType: Schema.String,
  user: User
}) {}

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
}

const redact = (value: string | Redacted.Redacted<string>): Redacted.Redacted<string> =>
  Redacted.isRedacted(value) ? value : Redacted.make(value)

/**
 * Builds a session from plain values. Throws (a programming error) when a token
 * is empty or the expiry is not a date.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (input: MakeInput): Session => {
  const expiresAt = DateTime.make(input.expiresAt)
  if (Option.isNone(expiresAt)) {
    throw new globalThis.Error("Session.make: expiresAt is not a valid date")
  }
  return new Session({
    accessToken: redact(input.accessToken),
    refreshToken: redact(input.refreshToken),
    expiresAt: DateTime.toUtc(expiresAt.value),
    tokenType: input.tokenType ?? "bearer",
    user: input.user
  })
}

/**
 * Whether the access token expires within `duration` of the `Clock`'s now
 * (or has already expired).
 *
 * @since 0.1.0
 * @category predicates
 */
export const expiresWithin: {
  (duration: Duration.DurationInput): (self: Session) => Effect.Effect<boolean>
  (self: Session, duration: Duration.DurationInput): Effect.Effect<boolean>
} = ((...args: Array<any>) => {
  if (args.length === 1) return (self: Session) => expiresWithinImpl(self, args[0])
  return expiresWithinImpl(args[0], args[1])
}) as any

const expiresWithinImpl = (self: Session, duration: Duration.DurationInput): Effect.Effect<boolean> =>
  Effect.map(
    Clock.currentTimeMillis,
    (now) => DateTime.toEpochMillis(self.expiresAt) - now <= Duration.toMillis(duration)
  )

// ---------------------------------------------------------------------------
// The wire format
// ---------------------------------------------------------------------------

const WireToken = Schema.String.pipe(
  Schema.filter((s) => s.trim().length > 0, { message: () => "must be a non-empty string" })
)

/**
 * A Supabase session as Moon sends it (snake_case). `expires_at` is unix
 * seconds; when absent, `expires_in` (seconds from now) is used.
 *
 * @since 0.1.0
 * @category schemas
 */
export const SupabaseSession = Schema.Struct({
  access_token: WireToken,
  refresh_token: WireToken,
  expires_in: Schema.optional(Schema.Number.pipe(Schema.finite())),
  expires_at: Schema.optional(Schema.Number.pipe(Schema.finite())),
  token_type: Schema.optional(Schema.String),
  user: User,
  provider_token: Schema.optional(Schema.NullOr(Schema.String)),
  provider_refresh_token: Schema.optional(Schema.NullOr(Schema.String))
})

/**
 * @since 0.1.0
 * @category models
 */
export type SupabaseSession = typeof SupabaseSession.Type

/**
 * The two body shapes Moon sends, as a plain schema (for checking a body
 * yourself): a bare Supabase session, or one wrapped in `{ token: … }`.
 * {@link MoonResponse} accepts the same shapes but picks the shape by hand,
 * so its errors name the fields of the shape that was sent.
 *
 * @since 0.1.0
 * @category schemas
 */
export const MoonWireBody = Schema.Union(
  Schema.Struct({ token: SupabaseSession }),
  SupabaseSession
)

const maxDateMillis = 8.64e15

const toSession = (
  wire: SupabaseSession,
  nowMillis: number,
  ast: AST.AST,
  actual: unknown
) => {
  let expiresAtMillis: number
  if (wire.expires_at !== undefined) {
    expiresAtMillis = wire.expires_at * 1000
  } else if (wire.expires_in !== undefined) {
    expiresAtMillis = nowMillis + wire.expires_in * 1000
  } else {
    return ParseResult.fail(
      new ParseResult.Pointer(
        "expires_in",
        actual,
        new ParseResult.Missing(new AST.Type(AST.numberKeyword), "is missing")
      )
    )
  }
  // Whole milliseconds, as a DateTime stores them: an expiry 0.5 ms away is now.
  expiresAtMillis = Math.floor(expiresAtMillis)
  const field = wire.expires_at !== undefined ? "expires_at" : "expires_in"
  if (expiresAtMillis <= nowMillis) {
    return ParseResult.fail(
      new ParseResult.Pointer(field, actual, new ParseResult.Type(ast, undefined, "is not in the future"))
    )
  }
  // Past the last date JavaScript can represent (year 275760): refuse, not throw.
  if (!(expiresAtMillis <= maxDateMillis)) {
    return ParseResult.fail(
      new ParseResult.Pointer(field, actual, new ParseResult.Type(ast, undefined, "is beyond the representable dates"))
    )
  }
  // Every field was checked by the decode above; validating again in the
  // constructor costs more than the rest of the decode and grows a global cache.
  return ParseResult.succeed(
    new Session({
      accessToken: Redacted.make(wire.access_token),
      refreshToken: Redacted.make(wire.refresh_token),
      expiresAt: DateTime.unsafeMake(expiresAtMillis),
      tokenType: wire.token_type ?? "bearer",
      user: wire.user
    }, true)
  )
}

/**
 * Decodes a wire body as if the time were `nowMillis`: the refresh client
 * passes the server's time (from its `Date` header) to correct clock skew.
 *
 * @internal
 */
export const decodeWireAt = (
  input: unknown,
  now: number,
  ast: AST.AST = Schema.Unknown.ast
): Effect.Effect<Session, ParseResult.ParseIssue> => {
  // Decide the shape first, so a failure names the fields of the shape
  // that was sent instead of listing both alternatives of a union.
  if (isWrapped(input)) {
    return ParseResult.decodeUnknown(SupabaseSession)(input.token).pipe(
      Effect.flatMap((wire) => toSession(wire, now, ast, input.token)),
      Effect.mapError((issue) => new ParseResult.Pointer("token", input, issue))
    )
  }
  return ParseResult.decodeUnknown(SupabaseSession)(input).pipe(
    Effect.flatMap((wire) => toSession(wire, now, ast, input))
  )
}

const isWrapped = (u: unknown): u is { readonly token: unknown } => Predicate.isRecord(u) && Predicate.isRecord(u.token)

/**
 * Decodes the body of a successful `POST /auth/refresh` into a {@link Session}.
 * Accepts the bare and the `{ token: … }` shapes; derives `expiresAt` from
 * `expires_at`, else from `expires_in` and the `Clock`. An expiry that is not in
 * the future is refused: such a session would be useless the moment it arrives.
 *
 * Encoding writes the bare shape, with both `expires_at` and `expires_in`.
 *
 * @since 0.1.0
 * @category schemas
 */
export const MoonResponse: Schema.Schema<Session, unknown> = Schema.transformOrFail(
  // `Unknown` on the wire side, not `MoonWireBody`: the shape is chosen by hand
  // in `decode`, so a failure names the fields of the shape actually sent.
  Schema.Unknown,
  Schema.typeSchema(Session),
  {
    strict: true,
    decode: (input, _options, ast) => Effect.flatMap(Clock.currentTimeMillis, (now) => decodeWireAt(input, now, ast)),
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
  }
)

/**
 * Describes a decoding failure by the fields involved, never by their values:
 * `ParseResult`'s own formatters print the offending input, which here would
 * be a token.
 *
 * @since 0.1.0
 * @category utils
 */
export const describeIssue = (issue: ParseResult.ParseIssue): string => {
  const problems = ParseResult.ArrayFormatter.formatIssueSync(issue).map(({ _tag, path }) => {
    const field = path.length === 0 ? "body" : `field "${path.map(String).join(".")}"`
    switch (_tag) {
      case "Missing":
        return `missing ${field}`
      case "Unexpected":
        return `unexpected ${field}`
      default:
        return `invalid ${field}`
    }
  })
  return RefreshError.capMessage(`response is not a session: ${[...new Set(problems)].join(", ")}`)
}

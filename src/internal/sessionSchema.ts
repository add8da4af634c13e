/**
 * The schemas of a session and of Moon's wire body: a leaf module, so the
 * wire decoder (`wire.ts`) and the public `Session` module, which uses that
 * decoder, both import it and neither imports the other.
 *
 * Not public API: the package's exports keep `internal/` private (the public
 * `Session` module re-exports what users need).
 */
import * as Option from "effect/Option"
import * as Predicate from "effect/Predicate"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import * as SchemaTransformation from "effect/SchemaTransformation"

// Supabase sends `null` for a user without an email (phone sign-in): read as
// an absent email, so the decoded user never holds `email: null`.
const Email = Schema.optional(Schema.NullOr(Schema.String)).pipe(
  Schema.decodeTo(
    Schema.optional(Schema.String),
    SchemaTransformation.transformOptional<string | undefined, string | null | undefined>({
      decode: Option.filter(Predicate.isNotNull),
      encode: (email) => email
    })
  )
)

/**
 * The server's user object. `id` is required and `email` typed when present;
 * every other field the server sends is kept as it came.
 *
 * @since 0.1.0
 * @category schemas
 */
export const User = Schema.StructWithRest(
  Schema.Struct({
    id: Schema.String,
    email: Email
  }),
  [Schema.Record(Schema.String, Schema.Unknown)]
)

/**
 * @since 0.1.0
 * @category models
 */
export type User = typeof User.Type

const revealed = (u: Redacted.Redacted<unknown>): unknown => {
  try {
    return Redacted.value(u)
  } catch {
    return undefined // wiped
  }
}

// A token in memory: a `Redacted` non-empty string. Declared here rather than
// `Schema.Redacted`, whose parse wraps the value in a new `Redacted` each time
// a session is constructed: a session built from another (a rotation that
// keeps the access token) keeps the same `Redacted`, as it did in Effect 3,
// so holders can still compare a token by reference.
const RedactedToken = Schema.declare(
  (u: unknown): u is Redacted.Redacted<string> => Redacted.isRedacted(u) && typeof revealed(u) === "string",
  { expected: "Redacted<string>" }
).check(Schema.makeFilter((token) => revealed(token) !== "", { message: "must be a non-empty string" }))

// A token is a non-empty string on the wire and in storage, a `Redacted` in
// memory (what `Schema.RedactedFromValue` does, into the schema above).
const Token = Schema.NonEmptyString.pipe(
  Schema.decodeTo(
    RedactedToken,
    SchemaTransformation.transform({ decode: (token) => Redacted.make(token), encode: Redacted.value })
  )
)

/**
 * A session. Printing it, `JSON.stringify`, `util.inspect` and logging show
 * `<redacted>` for both tokens. Encoding it with its schema (what a
 * `SessionStore` persists) writes the tokens in clear, and the dates as ISO
 * strings.
 *
 * @since 0.1.0
 * @category models
 */
export class Session extends Schema.Class<Session>("moon-refresh/Session")({
  accessToken: Token,
  refreshToken: Token,
  expiresAt: Schema.DateTimeUtcFromString,
  tokenType: Schema.String,
  user: User,
  /**
   * When the server issued the tokens, on this machine's clock: the refresh
   * client sets it from the answer. With it, every holder of a shared session
   * knows the token's lifetime (and so when to refresh it), however late it
   * learns of it. Absent on sessions built without it.
   *
   * @since 0.3.0
   */
  issuedAt: Schema.optional(Schema.DateTimeUtcFromString)
}) {}

// ---------------------------------------------------------------------------
// The wire format
// ---------------------------------------------------------------------------

const WireToken = Schema.String.check(
  Schema.makeFilter((s: string) => s.trim().length > 0, { message: "must be a non-empty string" })
)

/**
 * A Supabase session as Moon sends it (snake_case). `expires_in` is seconds
 * from receipt and is what the expiry is computed from; `expires_at` (unix
 * seconds, the server's clock) is used only when `expires_in` is absent.
 *
 * @since 0.1.0
 * @category schemas
 */
export const SupabaseSession = Schema.Struct({
  access_token: WireToken,
  refresh_token: WireToken,
  expires_in: Schema.optional(Schema.Finite),
  expires_at: Schema.optional(Schema.Finite),
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

/**
 * Turns a decoded wire body into a `Session`: picks the body's shape, derives
 * the expiry, refuses one that is past or unrepresentable. Used by
 * `Session.MoonResponse` (with the `Clock`'s now) and by the refresh client
 * (with the time corrected for the server's clock). A refused body is
 * described by its fields, never their values (`describeIssue`).
 *
 * Not public API: the package's exports keep `internal/` private.
 */
import * as DateTime from "effect/DateTime"
import * as Effect from "effect/Effect"
import * as Predicate from "effect/Predicate"
import * as Redacted from "effect/Redacted"
import * as Result from "effect/Result"
import * as SchemaIssue from "effect/SchemaIssue"
import * as SchemaParser from "effect/SchemaParser"
import { capMessage } from "./message.js"
import { Session, SupabaseSession } from "./sessionSchema.js"

/**
 * The longest lifetime accepted for an access token. Supabase's longest is a
 * week; anything past this is a unit mistake (`expires_at` in milliseconds
 * reads as 56,000 years) or a broken server, and trusting it would hand out
 * an expired token for as long.
 */
export const maxLifetimeMillis = 30 * 24 * 60 * 60 * 1000

const refuse = (field: string, why: string): SchemaIssue.Issue =>
  new SchemaIssue.Pointer([field], new SchemaIssue.InvalidValue({ message: why }))

/**
 * When the access token expires, on our clock. `expires_in` is a duration and
 * needs no clock at all: received + expires_in. `expires_at` alone is the
 * server's clock, moved onto ours by `skew` (server minus ours, 0 when the
 * `Date` header is absent or implausible). When both are sent, `expires_in`
 * wins: a wrong clock on either side cannot stretch or shrink it.
 */
const expiryOf = (
  wire: typeof SupabaseSession.Type,
  receivedAt: number,
  skew: number
): Result.Result<number, SchemaIssue.Issue> => {
  const field = wire.expires_in !== undefined ? "expires_in" : "expires_at"
  const raw = wire.expires_in !== undefined
    ? receivedAt + wire.expires_in * 1000
    : wire.expires_at !== undefined
    ? wire.expires_at * 1000 - skew
    : undefined
  if (raw === undefined) {
    return Result.fail(new SchemaIssue.Pointer(["expires_in"], new SchemaIssue.MissingKey(undefined)))
  }
  // Whole milliseconds, as a DateTime stores them: an expiry 0.5 ms away is now.
  const expiresAt = Math.floor(raw)
  if (expiresAt <= receivedAt) return Result.fail(refuse(field, "is not in the future"))
  if (expiresAt - receivedAt > maxLifetimeMillis) {
    return Result.fail(refuse(field, "is more than 30 days away"))
  }
  return Result.succeed(expiresAt)
}

// Every field was checked by the decode above, so the constructor skips the
// checks (`disableChecks`); Effect 4 has no public way to skip its structural
// pass as well, which costs little here (the token schema keeps each
// `Redacted` as it is).
const toSession = (
  wire: typeof SupabaseSession.Type,
  receivedAt: number,
  skew: number
): Result.Result<Session, SchemaIssue.Issue> =>
  Result.map(expiryOf(wire, receivedAt, skew), (expiresAt) =>
    new Session({
      accessToken: Redacted.make(wire.access_token),
      refreshToken: Redacted.make(wire.refresh_token),
      expiresAt: DateTime.makeUnsafe(expiresAt),
      tokenType: wire.token_type ?? "bearer",
      user: wire.user,
      issuedAt: DateTime.makeUnsafe(receivedAt)
    }, { disableChecks: true }))

const decodeSupabase = SchemaParser.decodeUnknownResult(SupabaseSession)

/**
 * Decodes a wire body received at `receivedAt` (our clock). `skew` is how far
 * the server's clock is ahead of ours (negative: behind), used only for an
 * `expires_at` sent without `expires_in`. Synchronous: the schemas have no
 * effectful part, and a refresh decodes one body per round trip.
 */
export const decodeResult = (
  input: unknown,
  receivedAt: number,
  skew = 0
): Result.Result<Session, SchemaIssue.Issue> => {
  // Decide the shape first, so a failure names the fields of the shape
  // that was sent instead of listing both alternatives of a union.
  if (isWrapped(input)) {
    return decodeSupabase(input.token).pipe(
      Result.flatMap((wire) => toSession(wire, receivedAt, skew)),
      Result.mapError((issue): SchemaIssue.Issue => new SchemaIssue.Pointer(["token"], issue))
    )
  }
  return Result.flatMap(decodeSupabase(input), (wire) => toSession(wire, receivedAt, skew))
}

/** {@link decodeResult} as an Effect, for a schema transformation. */
export const decode = (
  input: unknown,
  receivedAt: number,
  skew = 0
): Effect.Effect<Session, SchemaIssue.Issue> => Effect.fromResult(decodeResult(input, receivedAt, skew))

/**
 * The new refresh token of a body that was refused as a whole, when it holds
 * a well-formed one (a non-blank string): the server rotated, so this token
 * must be kept. `undefined` when there is none.
 */
export const salvageRefreshToken = (input: unknown): string | undefined => {
  const body = isWrapped(input) ? input.token : input
  const token = Predicate.isObject(body) ? body.refresh_token : undefined
  return typeof token === "string" && token.trim() !== "" ? token : undefined
}

const isWrapped = (u: unknown): u is { readonly token: { readonly [x: PropertyKey]: unknown } } =>
  Predicate.isObject(u) && Predicate.isObject(u.token)

// One line per leaf of the issue, named by its path: what
// `SchemaIssue.makeFormatterStandardSchemaV1` walks, without its messages.
const problemsOf = (issue: SchemaIssue.Issue, path: ReadonlyArray<PropertyKey>, out: Array<string>): void => {
  switch (issue._tag) {
    case "Pointer":
      return problemsOf(issue.issue, [...path, ...issue.path], out)
    case "Filter":
    case "Encoding":
      return problemsOf(issue.issue, path, out)
    case "Composite":
    case "AnyOf":
      if (issue.issues.length > 0) {
        for (const inner of issue.issues) problemsOf(inner, path, out)
        return
      }
  }
  const field = path.length === 0 ? "body" : `field "${path.map(String).join(".")}"`
  switch (issue._tag) {
    case "MissingKey":
      out.push(`missing ${field}`)
      return
    case "UnexpectedKey":
      out.push(`unexpected ${field}`)
      return
    default:
      out.push(`invalid ${field}`)
  }
}

/**
 * Describes a decoding failure by the fields involved, never by their values:
 * the issue's own formatters can print the offending input (with
 * `reportInput`, or a message that quotes it), which here would be a token.
 */
export const describeIssue = (issue: SchemaIssue.Issue): string => {
  const problems: Array<string> = []
  problemsOf(issue, [], problems)
  return capMessage(`response is not a session: ${[...new Set(problems)].join(", ")}`)
}

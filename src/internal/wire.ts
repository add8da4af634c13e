/**
 * Turns a decoded wire body into a `Session`: picks the body's shape, derives
 * the expiry, refuses one that is past or unrepresentable. Used by
 * `Session.MoonResponse` (with the `Clock`'s now) and by the refresh client
 * (with the time corrected for the server's clock).
 *
 * Not public API: the package's exports keep `internal/` private.
 */
import type { Effect } from "effect"
import { DateTime, Either, ParseResult, Predicate, Redacted, Schema } from "effect"
import * as AST from "effect/SchemaAST"
import { Session, SupabaseSession } from "./sessionSchema.js"

/**
 * The longest lifetime accepted for an access token. Supabase's longest is a
 * week; anything past this is a unit mistake (`expires_at` in milliseconds
 * reads as 56,000 years) or a broken server, and trusting it would hand out
 * an expired token for as long.
 */
export const maxLifetimeMillis = 30 * 24 * 60 * 60 * 1000

const refuse = (field: string, actual: unknown, ast: AST.AST, why: string): ParseResult.ParseIssue =>
  new ParseResult.Pointer(field, actual, new ParseResult.Type(ast, undefined, why))

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
  skew: number,
  ast: AST.AST,
  actual: unknown
): Either.Either<number, ParseResult.ParseIssue> => {
  const field = wire.expires_in !== undefined ? "expires_in" : "expires_at"
  const raw = wire.expires_in !== undefined
    ? receivedAt + wire.expires_in * 1000
    : wire.expires_at !== undefined
    ? wire.expires_at * 1000 - skew
    : undefined
  if (raw === undefined) {
    return Either.left(
      new ParseResult.Pointer(
        "expires_in",
        actual,
        new ParseResult.Missing(new AST.Type(AST.numberKeyword), "is missing")
      )
    )
  }
  // Whole milliseconds, as a DateTime stores them: an expiry 0.5 ms away is now.
  const expiresAt = Math.floor(raw)
  if (expiresAt <= receivedAt) return Either.left(refuse(field, actual, ast, "is not in the future"))
  if (expiresAt - receivedAt > maxLifetimeMillis) {
    return Either.left(refuse(field, actual, ast, "is more than 30 days away"))
  }
  return Either.right(expiresAt)
}

const toSession = (
  wire: typeof SupabaseSession.Type,
  receivedAt: number,
  skew: number,
  ast: AST.AST,
  actual: unknown
): Either.Either<Session, ParseResult.ParseIssue> =>
  Either.map(expiryOf(wire, receivedAt, skew, ast, actual), (expiresAt) =>
    // Every field was checked by the decode above; validating again in the
    // constructor costs more than the rest of the decode and grows a global cache.
    new Session({
      accessToken: Redacted.make(wire.access_token),
      refreshToken: Redacted.make(wire.refresh_token),
      expiresAt: DateTime.unsafeMake(expiresAt),
      tokenType: wire.token_type ?? "bearer",
      user: wire.user,
      issuedAt: DateTime.unsafeMake(receivedAt)
    }, true))

const decodeSupabase = ParseResult.decodeUnknownEither(SupabaseSession)

/**
 * Decodes a wire body received at `receivedAt` (our clock). `skew` is how far
 * the server's clock is ahead of ours (negative: behind), used only for an
 * `expires_at` sent without `expires_in`. Synchronous: the schemas have no
 * effectful part, and a refresh decodes one body per round trip.
 */
export const decodeEither = (
  input: unknown,
  receivedAt: number,
  skew = 0,
  ast: AST.AST = Schema.Unknown.ast
): Either.Either<Session, ParseResult.ParseIssue> => {
  // Decide the shape first, so a failure names the fields of the shape
  // that was sent instead of listing both alternatives of a union.
  if (isWrapped(input)) {
    return decodeSupabase(input.token).pipe(
      Either.flatMap((wire) => toSession(wire, receivedAt, skew, ast, input.token)),
      Either.mapLeft((issue) => new ParseResult.Pointer("token", input, issue))
    )
  }
  return Either.flatMap(decodeSupabase(input), (wire) => toSession(wire, receivedAt, skew, ast, input))
}

/** {@link decodeEither} as an Effect, for `Schema.transformOrFail`. */
export const decode = (
  input: unknown,
  receivedAt: number,
  skew = 0,
  ast: AST.AST = Schema.Unknown.ast
): Effect.Effect<Session, ParseResult.ParseIssue> => decodeEither(input, receivedAt, skew, ast)

/**
 * The new refresh token of a body that was refused as a whole, when it holds
 * a well-formed one (a non-blank string): the server rotated, so this token
 * must be kept. `undefined` when there is none.
 */
export const salvageRefreshToken = (input: unknown): string | undefined => {
  const body = isWrapped(input) ? input.token : input
  const token = Predicate.isRecord(body) ? body.refresh_token : undefined
  return typeof token === "string" && token.trim() !== "" ? token : undefined
}

const isWrapped = (u: unknown): u is { readonly token: unknown } => Predicate.isRecord(u) && Predicate.isRecord(u.token)

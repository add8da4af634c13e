/**
 * Turns a decoded wire body into a `Session`: picks the body's shape, derives
 * the expiry, refuses one that is past or unrepresentable. Used by
 * `Session.MoonResponse` (with the `Clock`'s now) and by the refresh client
 * (with the time corrected for the server's clock).
 *
 * It imports `Session.ts`, which imports it back: nothing here touches
 * `Session` at module load, only inside the functions.
 *
 * @internal
 */
import { DateTime, Effect, ParseResult, Predicate, Redacted, Schema } from "effect"
import * as AST from "effect/SchemaAST"
import { Session, SupabaseSession } from "../Session.js"

const maxDateMillis = 8.64e15

const toSession = (
  wire: typeof SupabaseSession.Type,
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
export const decode = (
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

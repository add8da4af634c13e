/**
 * The token-family model both test doubles share: how Supabase (behind Moon)
 * issues, rotates and revokes tokens when refresh-token rotation and reuse
 * detection are on.
 *
 * - A sign-in starts a family: one access token and one refresh token.
 * - A refresh spends the family's newest refresh token and issues the next
 *   pair; the spent token's successor is remembered.
 * - Presenting a spent token again is reuse: the whole family is revoked, its
 *   newest tokens included, unless the reuse mode forgives it:
 *   - `"window"`: within the reuse window, a reuse of the token spent last
 *     gets the same successor back (and a new access token).
 *   - `"gotrue"`, the rules of Supabase's auth server (GoTrue,
 *     `RefreshTokenGrant`): the parent of the active token is always
 *     forgiven, whatever the time; an older spent token only within the reuse
 *     window after it was spent. Either way the answer is the active refresh
 *     token (and a new access token), without a new rotation.
 * - A family signed out with `revoke` is gone: its tokens are "not found". A
 *   family revoked by a reuse stays revoked: every token of it is a reuse.
 *
 * Plain mutable state and plain functions, with the time passed in: the
 * `MockRefreshClient` calls them with the `Clock`'s time, the `MockMoonServer`
 * with its `now` option. No Effect, no I/O.
 *
 * Not public API: the package's exports keep `internal/` private.
 */
import type * as Duration from "effect/Duration"
import * as Redacted from "effect/Redacted"
import * as Result from "effect/Result"
import * as Options_ from "../../internal/options.js"

/** One sign-in and every token descended from it. */
export interface Family<A> {
  /** What the caller keeps about the sign-in (the user, a session id). */
  readonly data: A
  /** The refresh token that rotates next. */
  readonly current: string
  /** `"reuse"`: reuse detection revoked it; `"signout"`: {@link TokenFamilies.revoke}. */
  readonly revoked: "reuse" | "signout" | undefined
}

/** A new pair of tokens. */
export interface Tokens {
  readonly accessToken: string
  readonly refreshToken: string
}

/** What a sign-in or a refresh hands out. */
export interface Grant<A> extends Tokens {
  readonly family: Family<A>
  /** When the access token expires, in epoch milliseconds. */
  readonly expiresAt: number
}

/** What a refresh did, named as both doubles record it. */
export type Rotation<A> =
  | { readonly outcome: "rotated" | "reuse-tolerated"; readonly grant: Grant<A> }
  | { readonly outcome: "reuse-rejected" | "unknown-token" }

/** Whether an access token would be accepted now. */
export type AccessCheck<A> =
  | { readonly status: "valid"; readonly family: Family<A> }
  | { readonly status: "unknown" | "revoked" | "expired" }

/** Counters since the model was made. */
export interface Stats {
  /** Refresh tokens spent and replaced. */
  readonly rotations: number
  /** Spent tokens, or tokens of a family revoked by a reuse, presented again. */
  readonly reuseRejections: number
  /** Reuses forgiven by the reuse mode, answered with the active refresh token. */
  readonly reusesTolerated: number
  /** Tokens never issued, or of a family signed out with `revoke`. */
  readonly unknownTokens: number
}

/**
 * Which reuses are forgiven: `"window"`, the token spent last within the
 * window; `"gotrue"`, as Supabase's auth server does (see the module's
 * description).
 */
export type ReuseMode = "window" | "gotrue"

/** The reuse modes, for checking an option. */
export const reuseModes: ReadonlyArray<ReuseMode> = ["window", "gotrue"]

/** The reuse window when none is given: none in `"window"` mode, GoTrue's default 10 s in `"gotrue"` mode. */
export const defaultReuseWindowMillis = (mode: ReuseMode | undefined): number => mode === "gotrue" ? 10_000 : 0

/**
 * Checks the doubles' `reuse` and `reuseWindow` options (the one wording of
 * `internal/options.ts`), with the mode's default window.
 */
export const checkReuse = (
  owner: string,
  reuse: ReuseMode | undefined,
  reuseWindow: Duration.Input | undefined
): Result.Result<{ readonly reuse: ReuseMode; readonly reuseWindowMillis: number }, Options_.Invalid> =>
  Result.all({
    reuse: Options_.oneOf(owner, "reuse", reuse ?? "window", reuseModes),
    reuseWindowMillis: Options_.millis(
      owner,
      "reuseWindow",
      reuseWindow ?? defaultReuseWindowMillis(reuse),
      "nonNegative"
    )
  })

export interface Options<A> {
  /**
   * In `"window"` mode, how long after a rotation the spent token may be
   * presented again and get the same successor back; in `"gotrue"` mode, how
   * long after it was spent a token older than the active one's parent is
   * still forgiven (GoTrue's `RefreshTokenReuseInterval`). Milliseconds; 0:
   * never.
   */
  readonly reuseWindowMillis: number
  /** Default `"window"`. */
  readonly reuse?: ReuseMode | undefined
  /**
   * A new pair for a grant to `family`. The refresh token must never have been
   * issued before. A tolerated reuse takes only the access token.
   */
  readonly newTokens: (family: Family<A>, now: number, expiresAt: number) => Tokens
}

/** A token as the doubles' controls take it: `Redacted` or plain. */
export type TokenInput = Redacted.Redacted<string> | string

export interface TokenFamilies<A> {
  /** Starts a family: its first grant, with `tokens` when given, else new ones. */
  readonly issue: (data: A, now: number, expiresAt: number, tokens?: Tokens) => Grant<A>
  /** The refresh grant: spends `refreshToken` and issues the next pair, or says why not. */
  readonly rotate: (refreshToken: string, now: number, expiresAt: number) => Rotation<A>
  /** Signs the family of this refresh token out; later refreshes are "not found". */
  readonly revoke: (refreshToken: TokenInput) => void
  /** Whether this refresh token would rotate now. */
  readonly isLive: (refreshToken: TokenInput) => boolean
  /** Whether this refresh token was ever issued. */
  readonly isKnown: (refreshToken: TokenInput) => boolean
  readonly checkAccess: (accessToken: string, now: number) => AccessCheck<A>
  /** Every token issued, oldest first, each grant's access token before its refresh token. */
  readonly issued: () => ReadonlyArray<Redacted.Redacted<string>>
  readonly stats: () => Stats
}

// The mutable side of a `Family`; callers only ever see it read-only.
interface FamilyState<A> {
  readonly data: A
  current: string
  revoked: "reuse" | "signout" | undefined
}

interface RefreshRecord<A> {
  readonly family: FamilyState<A>
  usedAt: number | undefined
  successor: string | undefined
}

interface AccessRecord<A> {
  readonly family: FamilyState<A>
  readonly expiresAt: number
}

const reveal = (token: TokenInput): string => Redacted.isRedacted(token) ? Redacted.value(token) : token

/** Builds an empty model. */
export const make = <A>(options: Options<A>): TokenFamilies<A> => {
  const refreshTokens = new Map<string, RefreshRecord<A>>()
  const accessTokens = new Map<string, AccessRecord<A>>()
  const issued: Array<Redacted.Redacted<string>> = []
  const stats = { rotations: 0, reuseRejections: 0, reusesTolerated: 0, unknownTokens: 0 }

  const grant = (family: FamilyState<A>, expiresAt: number, tokens: Tokens, newRefreshToken: boolean): Grant<A> => {
    accessTokens.set(tokens.accessToken, { family, expiresAt })
    issued.push(Redacted.make(tokens.accessToken))
    if (newRefreshToken) {
      // Two families sharing a token would make every later answer wrong; a generator bug, not a test outcome.
      if (refreshTokens.has(tokens.refreshToken)) throw new Error("tokenFamily: a refresh token was issued twice")
      refreshTokens.set(tokens.refreshToken, { family, usedAt: undefined, successor: undefined })
      issued.push(Redacted.make(tokens.refreshToken))
      family.current = tokens.refreshToken
    }
    return { family, expiresAt, accessToken: tokens.accessToken, refreshToken: family.current }
  }

  // A window of 0 tolerates nothing, even within the same millisecond.
  const spentWithinWindow = (record: RefreshRecord<A>, now: number): boolean =>
    record.usedAt !== undefined && options.reuseWindowMillis > 0 && now - record.usedAt <= options.reuseWindowMillis

  const isParentOfActive = (record: RefreshRecord<A>): boolean => record.successor === record.family.current

  const forgiven = (record: RefreshRecord<A>, now: number): boolean =>
    options.reuse === "gotrue"
      // GoTrue: a client that lost the answer may always retry; any other spent token only briefly.
      ? isParentOfActive(record) || spentWithinWindow(record, now)
      // Only the token spent last.
      : isParentOfActive(record) && spentWithinWindow(record, now)

  const rotate = (refreshToken: string, now: number, expiresAt: number): Rotation<A> => {
    const record = refreshTokens.get(refreshToken)
    if (record === undefined || record.family.revoked === "signout") {
      stats.unknownTokens++
      return { outcome: "unknown-token" }
    }
    const family = record.family
    if (family.revoked === undefined && family.current === refreshToken) {
      const next = grant(family, expiresAt, options.newTokens(family, now, expiresAt), true)
      record.usedAt = now
      record.successor = next.refreshToken
      stats.rotations++
      return { outcome: "rotated", grant: next }
    }
    if (family.revoked === undefined && forgiven(record, now)) {
      stats.reusesTolerated++
      return {
        outcome: "reuse-tolerated",
        grant: grant(family, expiresAt, options.newTokens(family, now, expiresAt), false)
      }
    }
    // Reuse detected: the whole family goes, so even its newest token is dead now.
    family.revoked = "reuse"
    stats.reuseRejections++
    return { outcome: "reuse-rejected" }
  }

  return {
    issue: (data, now, expiresAt, tokens) => {
      const family: FamilyState<A> = { data, current: "", revoked: undefined }
      return grant(family, expiresAt, tokens ?? options.newTokens(family, now, expiresAt), true)
    },
    rotate,
    revoke: (token) => {
      const record = refreshTokens.get(reveal(token))
      if (record !== undefined) record.family.revoked = "signout"
    },
    isLive: (token) => {
      const value = reveal(token)
      const record = refreshTokens.get(value)
      return record !== undefined && record.family.revoked === undefined && record.family.current === value
    },
    isKnown: (token) => refreshTokens.has(reveal(token)),
    checkAccess: (token, now) => {
      const record = accessTokens.get(token)
      if (record === undefined) return { status: "unknown" }
      if (record.family.revoked !== undefined) return { status: "revoked" }
      return now >= record.expiresAt ? { status: "expired" } : { status: "valid", family: record.family }
    },
    issued: () => issued.slice(),
    stats: () => ({ ...stats })
  }
}

/**
 * The timing rules of a held session, as pure functions of numbers: when a
 * token is due for a refresh, how long to cool down after a failure, whether
 * a session another holder wrote can be taken as it is. No clock, no store:
 * the decisions in `core.ts` call these with the time they were given.
 *
 * Not public API: the package's exports keep `internal/` private.
 */
import * as DateTime from "effect/DateTime"
import * as Duration from "effect/Duration"
import * as Option from "effect/Option"
import * as RefreshError from "../../RefreshError.js"
import type * as Session from "../../Session.js"
import type * as SessionStore from "../../SessionStore.js"

/** The manager's options, validated and in milliseconds. */
export interface Config {
  /** Refresh when less than this is left. */
  readonly margin: number
  readonly autoRefresh: boolean
  /** The first pause after a failed refresh; doubles with each failure in a row. */
  readonly cooldown: number
  readonly maxCooldown: number
  /**
   * Successful refreshes are at least this far apart, unless the token is
   * about to expire (see {@link refreshAtFor}).
   */
  readonly minInterval: number
  /**
   * How long a holder keeps the store's lock after it sent a refresh token,
   * retrying the save, while the store may still hold that spent token (see
   * `core.ts`, "The lock and a spent token").
   */
  readonly saveBound: number
  /**
   * Other holders may take the store's lock: other processes share the store,
   * or other managers of this process hold the same store object. May change
   * from one decision to the next (a manager's reads the count of holders).
   * Without them, a holder lets the lock go once a refresh's callers have
   * their answer, and retries a failed save at its own pace.
   */
  readonly spread: boolean
}

/** The margin never exceeds this share of a received token's lifetime. */
export const maxMarginShare = 0.5

/**
 * A refresh starts at least this long before expiry when the token lives long
 * enough, so readers are not left holding an expired token while it runs.
 */
export const minLead = 1_000

/** What a refresh can fail with: the server's answer, or the store's. */
export type Failure = RefreshError.RefreshError | SessionStore.StoreError

/** How a session came to be held, which decides when it is refreshed. */
export interface Arrival {
  /**
   * - `held`: signed in, or loaded from the store.
   * - `refreshed`: this holder's own refresh gave it at `at`; successful
   *   refreshes are `minInterval` apart.
   * - `adopted`: another holder wrote it and this one read it at `at`.
   */
  readonly kind: "held" | "refreshed" | "adopted"
  readonly at: number
  /**
   * In [0, 1): spreads the refresh over the first half of the margin, so
   * holders of one shared session do not all wake at the same instant. 0 for
   * a store no one else holds.
   */
  readonly jitter: number
  /** When the server issued it (`Session.issuedAt`), if known. */
  readonly issuedAt?: number | undefined
}

/**
 * When to refresh a session that expires at `expiresAt`, in epoch ms.
 *
 * - The margin is at most half the token's lifetime, so a token that lives
 *   less than the configured margin is not refreshed again at once (a loop).
 *   The lifetime counts from when it was issued (`Session.issuedAt`), else
 *   from when this holder received it (refreshed or adopted); a session
 *   signed in or loaded without `issuedAt` has an unknown lifetime and gets
 *   the whole margin.
 * - The refresh is moved later by the jitter, up to half the margin.
 * - A token of known lifetime starts its refresh at least {@link minLead}
 *   (or the margin, if smaller) before expiry.
 * - Refreshed by this holder: successful refreshes are also `minInterval`
 *   apart. When that would pass the latest start, the start is spread over
 *   the half lead before it rather than pinned to one instant, so holders of
 *   a short-lived token do not all wake together.
 * - Never after `expiresAt`: an expired token is never fresh.
 */
export const refreshAtFor = (expiresAt: number, arrival: Arrival, config: Config): number => {
  const start = arrival.issuedAt ?? (arrival.kind === "held" ? undefined : arrival.at)
  const margin = start === undefined
    ? config.margin
    : Math.min(config.margin, Math.max(0, expiresAt - start) * maxMarginShare)
  // Whole milliseconds, as the clock counts.
  const planned = expiresAt - margin + arrival.jitter * margin / 2
  if (start === undefined) return Math.ceil(planned)
  const lead = Math.min(margin, minLead)
  const latest = expiresAt - lead
  if (arrival.kind !== "refreshed") return Math.ceil(Math.min(planned, latest))
  const spaced = Math.max(planned, arrival.at + config.minInterval)
  // Past the latest start, holders spread over the half lead before it, but never into the
  // time before the margin: a token is not refreshed with more than the margin left.
  return Math.ceil(spaced <= latest ? spaced : Math.max(expiresAt - margin, latest - arrival.jitter * lead / 2))
}

/** The pause after the `failures`th failure in a row: `cooldown` doubling, at most `maxCooldown`. */
export const cooldownFor = (failures: number, config: Config): number =>
  Math.min(config.cooldown * 2 ** Math.max(0, failures - 1), config.maxCooldown)

/**
 * The pause after `error`, the `failures`th in a row: the cooldown, but never
 * shorter than the server's `Retry-After` (already capped at an hour).
 */
export const pauseAfter = (error: Failure, failures: number, config: Config): number => {
  const asked = error._tag === "StoreError" ? Option.none() : RefreshError.retryAfter(error)
  return Math.max(cooldownFor(failures, config), Option.match(asked, { onNone: () => 0, onSome: Duration.toMillis }))
}

/** `session.expiresAt` in epoch ms. */
export const expiryOf = (session: Session.Session): number => DateTime.toEpochMillis(session.expiresAt)

/**
 * Whether a session another holder just wrote can be taken as it is, rather
 * than refreshed: it would not be due at once if taken now, by the same rule
 * (and the same lead) as any session this holder takes over.
 */
export const isAdoptable = (session: Session.Session, now: number, config: Config): boolean =>
  refreshAtFor(expiryOf(session), { kind: "adopted", at: now, jitter: 0, issuedAt: issuedAtOf(session) }, config) > now

/** `session.issuedAt` in epoch ms, if known. */
export const issuedAtOf = (session: Session.Session): number | undefined =>
  session.issuedAt === undefined ? undefined : DateTime.toEpochMillis(session.issuedAt)

/**
 * Whether the stored session should be taken instead of refreshing ours:
 * another holder saved one that lives longer.
 */
export const isNewer = (stored: Session.Session, held: Session.Session): boolean =>
  DateTime.isGreaterThan(stored.expiresAt, held.expiresAt)

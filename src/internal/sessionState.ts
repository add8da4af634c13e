/**
 * The rules of a managed session, as pure functions of `(state, event, now,
 * config)`: no fibers, no clock, no store. `SessionManager`'s fiber code
 * (`internal/sessionRuntime.ts`) reads the clock, runs the effects and calls
 * these to decide what the new state is; every rule can be tested by calling
 * it.
 *
 * Not public API: the package's exports keep `internal/` private.
 */
import { Data, DateTime, Duration, Option } from "effect"
import * as RefreshError from "../RefreshError.js"
import type * as Session from "../Session.js"
import type * as SessionStore from "../SessionStore.js"

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

/** Why a session ended (public as `SessionManager.SignOutReason`). */
export type SignOutReason = Data.TaggedEnum<{
  /** `signOut` was called. */
  UserSignedOut: {}
  /** The server rejected the refresh token: the user must sign in again. */
  TokenRejected: { readonly error: RefreshError.TokenRejectedError }
}>

export const SignOutReason = Data.taggedEnum<SignOutReason>()

export interface State {
  readonly session: Session.Session | undefined
  /** `session.expiresAt` in epoch ms, kept as a number for the hot path. */
  readonly expiresAt: number
  /** When to refresh: the token is fresh before this. At most `expiresAt`. */
  readonly refreshAt: number
  /** Bumped by every change of session; a refresh started under another generation is stale. */
  readonly generation: number
  /** No refresh is started before this (a cooldown after a failure). */
  readonly cooldownUntil: number
  /** Failed refreshes in a row. */
  readonly failures: number
  readonly lastError: Failure | undefined
  /** Memory holds a newer session than the store (its save failed and is being retried). */
  readonly unsaved: boolean
  readonly signedOut: SignOutReason | undefined
}

/** What can happen to a session. */
export type Event = Data.TaggedEnum<{
  /** `signIn`: a session from outside, already saved. */
  SignedIn: { readonly session: Session.Session }
  /**
   * A refresh returned a new session; `saved` is false when its save failed.
   * `jitter` in [0, 1) spreads the next refresh over the first half of the
   * margin, so holders of one session do not all wake at the same instant.
   */
  Refreshed: { readonly session: Session.Session; readonly saved: boolean; readonly jitter: number }
  /** Another holder of the store refreshed first: its session is taken as is. */
  Adopted: { readonly session: Session.Session; readonly jitter: number }
  /**
   * A refresh failed but the token may still work: keep the session, cool
   * down. `rotated`: the server did rotate (its answer carried a new refresh
   * token but was refused otherwise), so the session now holds that token;
   * `saved` says whether it reached the store.
   */
  Failed: {
    readonly error: Failure
    readonly rotated?: { readonly session: Session.Session; readonly saved: boolean } | undefined
  }
  /** The server refused the refresh token: the session is over. */
  Rejected: { readonly error: RefreshError.TokenRejectedError }
  /** `signOut`. */
  SignedOut: {}
  /** The background save of the session of `generation` succeeded. */
  Saved: { readonly generation: number }
}>

export const Event = Data.taggedEnum<Event>()

/**
 * When to refresh a session, in epoch ms. `received` is when this manager got
 * it from a refresh (or adopted it), with a `jitter` in [0, 1); `undefined`
 * for a session signed in or loaded at start, whose lifetime is unknown.
 *
 * - The margin is at most half the lifetime: a token that arrives already
 *   inside the configured margin is not refreshed again at once (a loop).
 * - The jitter moves the refresh later by up to half the margin.
 * - Successful refreshes are `minInterval` apart, except that a refresh
 *   starts at least {@link minLead} (or the margin, if smaller) before expiry.
 * - Never after `expiresAt`: an expired token is never fresh.
 */
export const refreshAtFor = (
  expiresAt: number,
  received: { readonly at: number; readonly jitter: number } | undefined,
  config: Config
): number => {
  if (received === undefined) return expiresAt - config.margin
  const lifetime = Math.max(0, expiresAt - received.at)
  const margin = Math.min(config.margin, lifetime * maxMarginShare)
  const planned = expiresAt - margin + received.jitter * margin / 2
  const spaced = Math.max(planned, received.at + config.minInterval)
  return Math.min(spaced, expiresAt - Math.min(margin, minLead))
}

const install = (
  session: Session.Session | undefined,
  received: { readonly at: number; readonly jitter: number } | undefined,
  config: Config
) => {
  const expiresAt = session ? DateTime.toEpochMillis(session.expiresAt) : 0
  return { session, expiresAt, refreshAt: session ? refreshAtFor(expiresAt, received, config) : -Infinity }
}

/** The state of a manager that starts from `session` (the stored one, if any). */
export const initial = (session: Session.Session | undefined, config: Config): State => ({
  ...install(session, undefined, config),
  generation: 0,
  cooldownUntil: 0,
  failures: 0,
  lastError: undefined,
  unsaved: false,
  signedOut: undefined
})

// A new session starts clean: a refresh still in flight belongs to the old
// one, and its result is discarded when it commits (the generation differs).
const replace = (
  state: State,
  session: Session.Session | undefined,
  config: Config,
  received?: { readonly at: number; readonly jitter: number }
): State => ({
  ...initial(undefined, config),
  ...install(session, received, config),
  generation: state.generation + 1
})

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

/** Applies `event` at `now`. */
export const transition = (state: State, event: Event, now: number, config: Config): State => {
  switch (event._tag) {
    case "SignedIn":
      return replace(state, event.session, config)
    case "Adopted":
      return replace(state, event.session, config, { at: now, jitter: event.jitter })
    case "Refreshed":
      return { ...replace(state, event.session, config, { at: now, jitter: event.jitter }), unsaved: !event.saved }
    case "Failed": {
      const failures = state.failures + 1
      const cooling = {
        failures,
        cooldownUntil: now + pauseAfter(event.error, failures, config),
        lastError: event.error
      }
      if (event.rotated === undefined) return { ...state, ...cooling }
      // The new refresh token replaces the spent one; the access token is
      // kept while it lasts, but the session is due for a refresh at once
      // (after the cooldown: a server that keeps doing this is not hammered).
      const rotated = event.rotated.session
      return {
        ...replace(state, rotated, config),
        refreshAt: Math.min(now, DateTime.toEpochMillis(rotated.expiresAt)),
        unsaved: !event.rotated.saved,
        ...cooling
      }
    }
    case "Rejected":
      return { ...replace(state, undefined, config), signedOut: SignOutReason.TokenRejected({ error: event.error }) }
    case "SignedOut":
      return { ...replace(state, undefined, config), signedOut: SignOutReason.UserSignedOut() }
    case "Saved":
      return state.generation === event.generation ? { ...state, unsaved: false } : state
  }
}

/**
 * Until when the token is fresh (more than the margin left, so handed out
 * without a refresh); `-Infinity` without a session. The hot path compares
 * the clock with this one number.
 */
export const freshUntil = (state: State): number => state.refreshAt

/** The token is not due for a refresh: hand it out at once. */
export const isFresh = (state: State, now: number): boolean => now < state.refreshAt

/** The token has not expired yet (it may be within the margin). */
export const isUsable = (state: State, now: number): boolean => state.session !== undefined && state.expiresAt > now

/** A failed refresh was too recent to try again. */
export const inCooldown = (state: State, now: number): boolean => now < state.cooldownUntil

/**
 * When the proactive refresh is due: at `refreshAt`, but never inside a
 * cooldown. `undefined` when there is nothing to refresh or no auto-refresh.
 */
export const proactiveAt = (state: State, config: Config): number | undefined =>
  config.autoRefresh && state.session !== undefined ? Math.max(state.cooldownUntil, state.refreshAt) : undefined

/** Why reads fail when there is no session. */
export const noSessionMessage = (state: State): string =>
  state.signedOut?._tag === "TokenRejected"
    ? `no session: the refresh token was rejected (${state.signedOut.error.message})`
    : state.signedOut?._tag === "UserSignedOut"
    ? "no session: signed out"
    : "no session: sign in first"

/**
 * Whether a newer stored session can be taken as it is: it has more than the
 * configured margin left. Otherwise its refresh token is refreshed (it is the
 * newest; ours is spent).
 */
export const isAdoptable = (session: Session.Session, now: number, config: Config): boolean =>
  DateTime.toEpochMillis(session.expiresAt) - now > config.margin

/**
 * Whether the stored session should be taken instead of refreshing ours:
 * another holder saved one that lives longer.
 */
export const isNewer = (stored: Session.Session, held: Session.Session): boolean =>
  DateTime.greaterThan(stored.expiresAt, held.expiresAt)

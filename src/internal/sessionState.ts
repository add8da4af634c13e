/**
 * The rules of a managed session, as pure functions of `(state, event, now,
 * config)`: no fibers, no clock, no store. `SessionManager`'s fiber code
 * (`internal/sessionRuntime.ts`) reads the clock, runs the effects and calls
 * these to decide what the new state is; every rule can be tested by calling
 * it.
 *
 * @internal
 */
import { Data, DateTime } from "effect"
import type * as RefreshError from "../RefreshError.js"
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
}

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
  /** A refresh returned a new session; `saved` is false when its save failed. */
  Refreshed: { readonly session: Session.Session; readonly saved: boolean }
  /** Another holder of the store refreshed first: its session is taken as is. */
  Adopted: { readonly session: Session.Session }
  /** A refresh failed but the token may still work: keep the session, cool down. */
  Failed: { readonly error: Failure }
  /** The server refused the refresh token: the session is over. */
  Rejected: { readonly error: RefreshError.TokenRejectedError }
  /** `signOut`. */
  SignedOut: {}
  /** The background save of the session of `generation` succeeded. */
  Saved: { readonly generation: number }
}>

export const Event = Data.taggedEnum<Event>()

/** The state of a manager that starts from `session` (the stored one, if any). */
export const initial = (session: Session.Session | undefined): State => ({
  session,
  expiresAt: session ? DateTime.toEpochMillis(session.expiresAt) : 0,
  generation: 0,
  cooldownUntil: 0,
  failures: 0,
  lastError: undefined,
  unsaved: false,
  signedOut: undefined
})

// A new session starts clean: a refresh still in flight belongs to the old
// one, and its result is discarded when it commits (the generation differs).
const replace = (state: State, session: Session.Session | undefined): State => ({
  ...initial(session),
  generation: state.generation + 1
})

/** The pause after the `failures`th failure in a row: `cooldown` doubling, at most `maxCooldown`. */
export const cooldownFor = (failures: number, config: Config): number =>
  Math.min(config.cooldown * 2 ** Math.max(0, failures - 1), config.maxCooldown)

/** Applies `event` at `now`. */
export const transition = (state: State, event: Event, now: number, config: Config): State => {
  switch (event._tag) {
    case "SignedIn":
    case "Adopted":
      return replace(state, event.session)
    case "Refreshed":
      return { ...replace(state, event.session), unsaved: !event.saved }
    case "Failed": {
      const failures = state.failures + 1
      return { ...state, failures, cooldownUntil: now + cooldownFor(failures, config), lastError: event.error }
    }
    case "Rejected":
      return { ...replace(state, undefined), signedOut: SignOutReason.TokenRejected({ error: event.error }) }
    case "SignedOut":
      return { ...replace(state, undefined), signedOut: SignOutReason.UserSignedOut() }
    case "Saved":
      return state.generation === event.generation ? { ...state, unsaved: false } : state
  }
}

/**
 * Until when the token is fresh (more than the margin left, so handed out
 * without a refresh); `-Infinity` without a session. The hot path compares
 * the clock with this one number.
 */
export const freshUntil = (state: State, config: Config): number =>
  state.session === undefined ? -Infinity : state.expiresAt - config.margin

/** The token has more than the margin left: hand it out without a refresh. */
export const isFresh = (state: State, now: number, config: Config): boolean => now < freshUntil(state, config)

/** The token has not expired yet (it may be within the margin). */
export const isUsable = (state: State, now: number): boolean => state.session !== undefined && state.expiresAt > now

/** A failed refresh was too recent to try again. */
export const inCooldown = (state: State, now: number): boolean => now < state.cooldownUntil

/**
 * When the proactive refresh is due: `expiresAt - margin`, but never inside a
 * cooldown. `undefined` when there is nothing to refresh or no auto-refresh.
 */
export const proactiveAt = (state: State, config: Config): number | undefined =>
  config.autoRefresh && state.session !== undefined
    ? Math.max(state.cooldownUntil, state.expiresAt - config.margin)
    : undefined

/** Why reads fail when there is no session. */
export const noSessionMessage = (state: State): string =>
  state.signedOut?._tag === "TokenRejected"
    ? `no session: the refresh token was rejected (${state.signedOut.error.message})`
    : state.signedOut?._tag === "UserSignedOut"
    ? "no session: signed out"
    : "no session: sign in first"

/**
 * Whether the stored session should be taken instead of refreshing ours:
 * another holder saved one that lives longer.
 */
export const isNewer = (stored: Session.Session, held: Session.Session): boolean =>
  DateTime.greaterThan(stored.expiresAt, held.expiresAt)

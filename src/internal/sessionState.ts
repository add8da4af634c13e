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
  /**
   * Another holder of the store (a process, a tab, a replica) signed out, or
   * had the refresh token rejected: its sign-out reached this one.
   */
  SignedOutElsewhere: {}
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
  /**
   * The store's revision this state matches: the record the session was read
   * from or written as (for an unsaved session, the record it replaces).
   */
  readonly revision: number
}

/** How a session came to be held. */
export interface Arrival {
  /**
   * When this manager received it from a refresh or took it over from
   * another holder: its lifetime counts from here. `undefined` for a session
   * signed in or loaded, whose lifetime is unknown.
   */
  readonly at: number | undefined
  /**
   * In [0, 1): spreads the refresh over the first half of the margin, so
   * holders of one shared session do not all wake at the same instant. 0 for
   * a store no one else holds.
   */
  readonly jitter: number
  /** The store's revision of the record that holds it. */
  readonly revision: number
}

/** What can happen to a session. */
export type Event = Data.TaggedEnum<{
  /** `signIn`: a session from outside, already saved. */
  SignedIn: { readonly session: Session.Session; readonly arrival: Arrival }
  /** A refresh returned a new session; `saved` is false when its save failed. */
  Refreshed: { readonly session: Session.Session; readonly saved: boolean; readonly arrival: Arrival }
  /** Another holder of the store refreshed (or signed in): its session is taken as is. */
  Adopted: { readonly session: Session.Session; readonly arrival: Arrival }
  /**
   * A refresh failed but the token may still work: keep the session, cool
   * down. `rotated`: the server did rotate (its answer carried a new refresh
   * token but was refused otherwise), so the session now holds that token;
   * `saved` says whether it reached the store.
   */
  Failed: {
    readonly error: Failure
    readonly rotated?:
      | { readonly session: Session.Session; readonly saved: boolean; readonly arrival: Arrival }
      | undefined
  }
  /** The server refused the refresh token: the session is over (the store holds a sign-out at `revision`). */
  Rejected: { readonly error: RefreshError.TokenRejectedError; readonly revision: number }
  /** A sign-out, here (`signOut`) or by another holder. */
  SignedOut: { readonly revision: number; readonly elsewhere: boolean }
  /** The background save of the session of `generation` succeeded, as `revision`. */
  Saved: { readonly generation: number; readonly revision: number }
}>

export const Event = Data.taggedEnum<Event>()

/**
 * When to refresh a session, in epoch ms.
 *
 * - A session of unknown lifetime (signed in, loaded): at `expiresAt -
 *   margin`, moved later by the jitter (up to half the margin).
 * - A session received from a refresh or taken over: the margin is at most
 *   half its lifetime, so a token that arrives already inside the configured
 *   margin is not refreshed again at once (a loop); successful refreshes are
 *   `minInterval` apart, except that a refresh starts at least
 *   {@link minLead} (or the margin, if smaller) before expiry.
 * - Never after `expiresAt`: an expired token is never fresh.
 */
export const refreshAtFor = (expiresAt: number, arrival: Arrival, config: Config): number => {
  // Whole milliseconds, as the clock counts.
  if (arrival.at === undefined) return Math.ceil(expiresAt - config.margin + arrival.jitter * config.margin / 2)
  const lifetime = Math.max(0, expiresAt - arrival.at)
  const margin = Math.min(config.margin, lifetime * maxMarginShare)
  const planned = expiresAt - margin + arrival.jitter * margin / 2
  const spaced = Math.max(planned, arrival.at + config.minInterval)
  return Math.ceil(Math.min(spaced, expiresAt - Math.min(margin, minLead)))
}

const install = (session: Session.Session | undefined, arrival: Arrival, config: Config) => {
  const expiresAt = session ? DateTime.toEpochMillis(session.expiresAt) : 0
  return {
    session,
    expiresAt,
    refreshAt: session ? refreshAtFor(expiresAt, arrival, config) : -Infinity,
    revision: arrival.revision
  }
}

/**
 * The state of a manager that starts from what the store holds: `session` at
 * `revision` (none, for an empty store or a sign-out).
 */
export const initial = (
  session: Session.Session | undefined,
  config: Config,
  arrival: Arrival = { at: undefined, jitter: 0, revision: 0 }
): State =>
  shaped({
    ...install(session, arrival, config),
    generation: 0,
    cooldownUntil: 0,
    failures: 0,
    lastError: undefined,
    unsaved: false,
    signedOut: undefined
  })

/**
 * Every state that is kept is built by this one literal, every field in one
 * order. V8 gives an object built by spreading a hidden class of its own
 * (about 300 bytes more per object), and a pool keeps a state per user.
 */
const shaped = (state: State): State => ({
  session: state.session,
  expiresAt: state.expiresAt,
  refreshAt: state.refreshAt,
  generation: state.generation,
  cooldownUntil: state.cooldownUntil,
  failures: state.failures,
  lastError: state.lastError,
  unsaved: state.unsaved,
  signedOut: state.signedOut,
  revision: state.revision
})

// A new session starts clean: a refresh still in flight belongs to the old
// one, and its result is discarded when it commits (the generation differs).
const replace = (state: State, session: Session.Session | undefined, arrival: Arrival, config: Config): State => ({
  ...initial(session, config, arrival),
  generation: state.generation + 1
})

const ended = (state: State, revision: number, reason: SignOutReason, config: Config): State => ({
  ...replace(state, undefined, { at: undefined, jitter: 0, revision }, config),
  signedOut: reason
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
  const next = step(state, event, now, config)
  return next === state ? state : shaped(next)
}

const step = (state: State, event: Event, now: number, config: Config): State => {
  switch (event._tag) {
    case "SignedIn":
    case "Adopted":
      return replace(state, event.session, event.arrival, config)
    case "Refreshed":
      return { ...replace(state, event.session, event.arrival, config), unsaved: !event.saved }
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
        ...replace(state, rotated, event.rotated.arrival, config),
        refreshAt: Math.min(now, DateTime.toEpochMillis(rotated.expiresAt)),
        unsaved: !event.rotated.saved,
        ...cooling
      }
    }
    case "Rejected":
      return ended(state, event.revision, SignOutReason.TokenRejected({ error: event.error }), config)
    case "SignedOut":
      return ended(
        state,
        event.revision,
        event.elsewhere ? SignOutReason.SignedOutElsewhere() : SignOutReason.UserSignedOut(),
        config
      )
    case "Saved":
      return state.generation === event.generation ? { ...state, unsaved: false, revision: event.revision } : state
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
export const noSessionMessage = (state: State): string => {
  switch (state.signedOut?._tag) {
    case "TokenRejected":
      return `no session: the refresh token was rejected (${state.signedOut.error.message})`
    case "UserSignedOut":
      return "no session: signed out"
    case "SignedOutElsewhere":
      return "no session: signed out by another holder of the session store"
    case undefined:
      return "no session: sign in first"
  }
}

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

/** What to do under the store's lock, once the record has been read. */
export type Plan = Data.TaggedEnum<{
  /** Another holder signed out: follow it, no request. */
  FollowSignOut: { readonly revision: number }
  /** Another holder refreshed (or signed in) and its session is fresh: take it, no request. */
  Adopt: { readonly session: Session.Session; readonly revision: number }
  /** POST `base`'s refresh token, then write the new session over revision `expected`. */
  Refresh: { readonly base: Session.Session; readonly expected: number }
}>

export const Plan = Data.taggedEnum<Plan>()

/**
 * Decides a refresh of `held` (the session of `state`) from the record read
 * under the lock. The store's revision says who wrote last:
 *
 * - a later revision: another holder wrote; follow its sign-out, take its
 *   session if it is fresh, else refresh its token (ours is spent);
 * - the same revision: nobody did; refresh ours (and, for a plain store whose
 *   revision is kept in memory, take a stored session that expires later: it
 *   was written from outside this process);
 * - an earlier revision: the store lost its record (a restart without
 *   persistence): refresh ours and write it back.
 */
export const plan = (
  state: State,
  held: Session.Session,
  stored: { readonly revision: number; readonly session: Option.Option<Session.Session> },
  now: number,
  config: Config
): Plan => {
  const take = (session: Session.Session) =>
    isAdoptable(session, now, config)
      ? Plan.Adopt({ session, revision: stored.revision })
      : Plan.Refresh({ base: session, expected: stored.revision })
  if (stored.revision > state.revision) {
    return Option.match(stored.session, {
      onNone: () => Plan.FollowSignOut({ revision: stored.revision }),
      onSome: take
    })
  }
  if (stored.revision === state.revision && !state.unsaved && Option.isSome(stored.session)) {
    if (isNewer(stored.session.value, held)) return take(stored.session.value)
  }
  return Plan.Refresh({ base: held, expected: stored.revision })
}

/**
 * What a record from the change feed does to the state: a later revision
 * than ours is another holder's write (a sign-out, or a session to take); an
 * earlier or equal one is old news or our own write.
 */
export const onChange = (
  state: State,
  stored: { readonly revision: number; readonly session: Option.Option<Session.Session> }
): "ignore" | "signOut" | "adopt" =>
  stored.revision <= state.revision
    ? "ignore"
    : Option.isNone(stored.session)
    ? (state.session === undefined ? "ignore" : "signOut")
    : "adopt"

/**
 * What a session's holder tells the world: why reads fail without a session,
 * why a session ended, and the events of its life. A leaf module: the engine
 * and the public `SessionManager` (which re-exports all of it) both import it,
 * and it imports neither.
 *
 * Not public API: the package's exports keep `internal/` private.
 */
import * as Data from "effect/Data"
import type * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import type * as RefreshError from "../../RefreshError.js"
import type * as Session from "../../Session.js"
import type * as SessionStore from "../../SessionStore.js"

/** Public as `SessionManager.NoSessionError`. */
export class NoSessionError extends Schema.TaggedError<NoSessionError>("moon-refresh/NoSessionError")(
  "NoSessionError",
  { message: Schema.String }
) {
  /** The tag, as in Effect 3 (the schema's identifier is namespaced). */
  override get name(): "NoSessionError" {
    return "NoSessionError"
  }
}

/** Public as `SessionManager.SessionError`. */
export type SessionError = RefreshError.RefreshError | NoSessionError | SessionStore.StoreError

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

/** Public as `SessionManager.SessionEvent`. */
export type SessionEvent = Data.TaggedEnum<{
  /**
   * The first event of every subscription: the session held at the moment the
   * stream subscribed (none when signed out). Every change after it follows.
   */
  Initial: { readonly session: Option.Option<Session.Session> }
  SignedIn: { readonly session: Session.Session }
  /** A new session is in use (and saved, unless a `SaveFailed` follows). */
  Refreshed: { readonly session: Session.Session }
  /**
   * A refresh failed and the session was kept. `willRetry`: the manager will
   * try again by itself after the cooldown (true when `autoRefresh` is on).
   */
  RefreshFailed: { readonly error: SessionError; readonly willRetry: boolean }
  /** A new session could not be saved; it is kept in memory and the save is retried. */
  SaveFailed: { readonly error: SessionStore.StoreError }
  SignedOut: { readonly reason: SignOutReason }
}>

export const SessionEvent = Data.taggedEnum<SessionEvent>()

/** Why reads fail when there is no session: the message of their `NoSessionError`. */
export const noSessionMessage = (reason: SignOutReason | undefined): string => {
  switch (reason?._tag) {
    case "TokenRejected":
      return `no session: the refresh token was rejected (${reason.error.message})`
    case "UserSignedOut":
      return "no session: signed out"
    case "SignedOutElsewhere":
      return "no session: signed out by another holder of the session store"
    case undefined:
      return "no session: sign in first"
  }
}

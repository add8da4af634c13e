/**
 * The session engine's decisions: one pure function, `decide(state, input)`,
 * gives the next state and the commands to run. Every input a holder of a
 * session sees goes through it: a caller's read, refresh, sign-in or
 * sign-out; the store's lock granted with the record it holds; the server's
 * answer; a write's outcome; a record from the change feed; a timer. No
 * fiber, clock, store or server here: `cell.ts` runs the commands and feeds
 * their outcomes back, and the checkers in test/ run the same function
 * against models of the store and the server.
 *
 * Operations carry an id (`op`), so a late answer is always matched to the
 * operation that asked. `epoch`, bumped whenever a sign-in or sign-out of
 * this holder takes effect, tells a refresh's answer that it was superseded;
 * `ask` numbers the sign-ins and sign-outs in the order they were asked for,
 * so one asked for earlier never undoes one asked for later.
 *
 * The lock and a spent token. A holder takes the store's lock to refresh (or
 * to sign in from a refresh token). Once it has sent the store's refresh
 * token, the store holds a spent token until a newer record lands; the
 * holder keeps the lock until then (its own write, or another holder's seen),
 * retrying a failed save, for at most `saveBound`. Releasing earlier would let
 * the next holder read the spent token and send it again.
 *
 * Writes. One write at a time per holder. What the store must get from this
 * holder is `owed` (a rotation, a sign-out, a rejected token's sign-out, or
 * a sign-in whose save failed), retried until it lands or something newer
 * replaces it; plain `signIn`s wait in `signIns`. A rotation is fenced on the
 * revision it was planned from; sign-ins and sign-outs overwrite.
 *
 * Not public API: the package's exports keep `internal/` private.
 */
import * as Cause from "effect/Cause"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import type * as RefreshError from "../../RefreshError.js"
import * as Session from "../../Session.js"
import * as SessionStore from "../../SessionStore.js"
import * as Events from "./events.js"
import * as Rules from "./rules.js"

// ---------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------

/** What the holder holds. */
export type Held =
  | { readonly _tag: "None"; readonly reason: Events.SignOutReason | undefined }
  | {
    readonly _tag: "Active"
    readonly session: Session.Session
    readonly expiresAt: number
    /** The token is fresh (handed out without a refresh) before this. At most `expiresAt`. */
    readonly refreshAt: number
  }

export type Active = Extract<Held, { readonly _tag: "Active" }>

/** The operation holding (or waiting for) the store's lock. */
export interface Flight {
  readonly op: number
  /** `signIn`: `signInWithRefreshToken`, with the caller's `token`. */
  readonly kind: "refresh" | "signIn"
  readonly token: Redacted.Redacted<string> | undefined
  /** The revision this holder was at when the caller asked (`signIn`). */
  readonly seen: number
  /** The epoch its answer belongs to (a refresh: the epoch when it was sent). */
  readonly epoch: number
  /** A sign-in: its number among the sign-ins and sign-outs asked for. */
  readonly ask: number
  readonly stage: "locking" | "posting" | "saving"
  /** The access token held when the refresh was asked for: one held since is an answer already. */
  readonly asked: Redacted.Redacted<string> | undefined
  /** The revision the answer is fenced on (the record read under the lock). */
  readonly expected: number
  /**
   * The store's refresh token this flight sent: the store holds it, spent,
   * until a newer record lands, and the lock is kept until then.
   */
  readonly sent: Redacted.Redacted<string> | undefined
  /** When `saving` began, for {@link Rules.Config.saveBound}. */
  readonly since: number
  /** Its callers have been answered. */
  readonly answered: boolean
  /**
   * How the refresh ends for its callers once its answer is saved: a refused
   * answer that still rotated the token, or the rejection of the token.
   */
  readonly refused: Rules.Failure | undefined
}

/** An operation waiting for the flight in progress. */
export type Queued =
  | { readonly kind: "refresh"; readonly op: number }
  | {
    readonly kind: "signIn"
    readonly op: number
    readonly token: Redacted.Redacted<string>
    readonly seen: number
    readonly ask: number
  }

/** What the store must get from this holder. */
export interface Owed {
  readonly kind: "rotation" | "rejected" | "signIn" | "signOut"
  /** `None`: a sign-out. */
  readonly record: Option.Option<Session.Session>
  /** A revision: a fenced write over it. `undefined`: an overwrite of whatever is stored. */
  readonly expected: number | undefined
  /** The epoch a rotation belongs to. */
  readonly epoch: number
  /** A sign-in or sign-out: its number among those asked for (0 for a refresh's). */
  readonly ask: number
  /** A sign-in from a refresh token: that token (a second call with it joins this one). */
  readonly token: Redacted.Redacted<string> | undefined
  /** A refresh's (or a sign-in's) answer: the flight (`op`) that owes it. */
  readonly flight: number | undefined
  /**
   * A caller waiting for the first outcome: a `signOut` (ends with it), a
   * `signInWithRefreshToken` (ends with its session, saved or not).
   */
  readonly op: number | undefined
  readonly failures: number
  /** Not tried again before this. */
  readonly retryAt: number
}

/** A plain `signIn`, waiting for its turn to write. */
export interface PendingSignIn {
  readonly op: number
  readonly session: Session.Session
  readonly ask: number
}

/** The write in flight. */
/** The write in flight; `applied`: the last sign-in or sign-out that had taken effect when it was sent. */
export type Writing =
  | { readonly _tag: "Owed"; readonly id: number; readonly owed: Owed; readonly applied: number }
  | { readonly _tag: "SignIn"; readonly id: number; readonly signIn: PendingSignIn; readonly applied: number }

export interface State {
  readonly held: Held
  /** The store's revision that `held` matches (for an unsaved session: the one its save replaces). */
  readonly revision: number
  /** The revision of this holder's last write that landed. */
  readonly own: number
  /** The newest revision another holder wrote, as far as this one knows. */
  readonly foreign: number
  /** Bumped whenever a sign-in or sign-out of this holder takes effect. */
  readonly epoch: number
  /** Sign-ins and sign-outs asked for so far; the number of the last one that took effect. */
  readonly asks: number
  readonly applied: number
  readonly nextId: number
  readonly flight: Flight | undefined
  readonly queue: ReadonlyArray<Queued>
  readonly owed: Owed | undefined
  readonly signIns: ReadonlyArray<PendingSignIn>
  readonly writing: Writing | undefined
  /** No refresh is started before this after the server failed (`Retry-After` included). */
  readonly cooldownUntil: number
  /** Failed refreshes in a row. */
  readonly failures: number
  readonly lastError: Rules.Failure | undefined
  /** The store failed this many times in a row (a lock not granted, a read): tried again at `storeRetryAt`. */
  readonly storeFailures: number
  readonly storeRetryAt: number
  /** In [0, 1): this holder's spread of proactive refreshes (0 when the store is not shared). */
  readonly jitter: number
  /**
   * The records of this holder's writes that failed (a timeout, say) since its
   * last write that landed: each may still land, and seen on the feed or in a
   * read, it is this holder's own. All of them, not the last only: two
   * sign-ins whose saves both timed out may land late, the first first.
   * `undefined`: none (no array kept per holder of a pool for nothing).
   */
  readonly doubt: ReadonlyArray<Doubt> | undefined
}

/** A write of this holder that failed and may still land. */
export interface Doubt {
  readonly record: Option.Option<Session.Session>
  /**
   * The sign-in or sign-out it belongs to, or the last that had taken
   * effect when it was made: one that takes effect after it supersedes it.
   */
  readonly ask: number
}

/** How many failed writes a holder remembers: a store that keeps failing is not remembered without end. */
const maxDoubts = 8

// ---------------------------------------------------------------------------
// Inputs and commands
// ---------------------------------------------------------------------------

/** How a write ended. */
export type WriteResult =
  | { readonly _tag: "Written"; readonly stored: SessionStore.Stored }
  /** Another holder wrote since (fenced), or the record kept changing (overwrite): what is there, if read. */
  | { readonly _tag: "Conflict"; readonly stored: Option.Option<SessionStore.Stored> }
  | { readonly _tag: "Failed"; readonly error: SessionStore.StoreError }

export type Input =
  /** A caller wants a session: `read` (a token that is not fresh), `refresh` (a refresh now), `timer`. */
  | { readonly _tag: "Demand"; readonly op: number; readonly now: number; readonly kind: "read" | "refresh" }
  | { readonly _tag: "SignIn"; readonly op: number; readonly now: number; readonly session: Session.Session }
  | {
    readonly _tag: "SignInWithToken"
    readonly op: number
    readonly now: number
    readonly token: Redacted.Redacted<string>
  }
  | { readonly _tag: "SignOut"; readonly op: number; readonly now: number }
  /** The lock of `op` was granted and the record read under it. */
  | { readonly _tag: "Locked"; readonly op: number; readonly now: number; readonly stored: SessionStore.Stored }
  /** The lock of `op` was not granted, or the record could not be read. */
  | { readonly _tag: "LockFailed"; readonly op: number; readonly now: number; readonly error: SessionStore.StoreError }
  | {
    readonly _tag: "Answered"
    readonly op: number
    readonly now: number
    readonly exit: Exit.Exit<Session.Session, Rules.Failure>
  }
  | { readonly _tag: "Wrote"; readonly id: number; readonly now: number; readonly result: WriteResult }
  /** A record from the change feed. */
  | { readonly _tag: "Changed"; readonly now: number; readonly stored: SessionStore.Stored }
  /** The timer: a proactive refresh or a retried save may be due. */
  | { readonly _tag: "Tick"; readonly now: number }

export type Command =
  /** Take the store's lock for `op`, then read the record: `Locked` or `LockFailed`. */
  | { readonly _tag: "Lock"; readonly op: number }
  /** Check the lease is still ours, then POST `token`: `Answered`. */
  | { readonly _tag: "Post"; readonly op: number; readonly token: Redacted.Redacted<string> }
  | { readonly _tag: "Release"; readonly op: number }
  /**
   * Write `record` fenced on `expected`: `Wrote`. An `overwrite` (a sign-in,
   * a sign-out) goes over whatever is stored: on a conflict, the record is
   * read again and the write fenced on what was read.
   */
  | {
    readonly _tag: "Write"
    readonly id: number
    readonly record: Option.Option<Session.Session>
    readonly expected: number
    readonly overwrite: boolean
  }
  | { readonly _tag: "Publish"; readonly event: Events.SessionEvent }
  /** Ends the callers waiting on `op`. */
  | { readonly _tag: "Resolve"; readonly op: number; readonly exit: Outcome }
  /** The timer fires at `at` (replacing the one armed before); `undefined` clears it. */
  | { readonly _tag: "Arm"; readonly at: number | undefined }
  | {
    readonly _tag: "Log"
    readonly level: "Debug" | "Warning" | "Error"
    readonly message: string
    readonly annotations: Readonly<Record<string, string | number>>
  }

export interface Decision {
  readonly state: State
  readonly commands: ReadonlyArray<Command>
  /** The operation whose end the caller of a `Demand` waits for (its own, or the flight it joined). */
  readonly awaits?: number | undefined
}

/** How the callers of an operation end: a session (`undefined` for a sign-out), or an error. */
export type Outcome = Exit.Exit<Session.Session | undefined, Events.SessionError>

const succeed = (session: Session.Session | undefined): Outcome => Exit.succeed(session)
const fail = (error: Events.SessionError): Outcome => Exit.fail(error)
const failureOf = (exit: Exit.Exit<unknown, Rules.Failure>): Rules.Failure | undefined =>
  exit._tag === "Failure" ? Option.getOrUndefined(Cause.findErrorOption(exit.cause)) : undefined

// ---------------------------------------------------------------------------
// Building states
// ---------------------------------------------------------------------------

const none = (reason: Events.SignOutReason | undefined): Held => ({ _tag: "None", reason })

const active = (session: Session.Session, arrival: Rules.Arrival, config: Rules.Config): Active => {
  const expiresAt = Rules.expiryOf(session)
  const issuedAt = Rules.issuedAtOf(session)
  return {
    _tag: "Active",
    session,
    expiresAt,
    refreshAt: Rules.refreshAtFor(expiresAt, issuedAt === undefined ? arrival : { ...arrival, issuedAt }, config)
  }
}

/** The state of a holder that starts from what the store holds. */
export const initial = (stored: SessionStore.Stored, jitter: number, now: number, config: Rules.Config): State =>
  shaped({
    held: Option.match(stored.session, {
      onNone: () => none(undefined),
      onSome: (session) => active(session, { kind: "held", at: now, jitter }, config)
    }),
    revision: stored.revision,
    own: -1,
    foreign: -1,
    epoch: 0,
    asks: 0,
    applied: 0,
    nextId: 1,
    flight: undefined,
    queue: [],
    owed: undefined,
    signIns: [],
    writing: undefined,
    cooldownUntil: 0,
    failures: 0,
    lastError: undefined,
    storeFailures: 0,
    storeRetryAt: 0,
    jitter,
    doubt: undefined
  })

/**
 * Every kept state is built by this one literal, fields in one order: V8 gives
 * an object built by spreading a hidden class of its own (about 300 bytes more
 * each), and a pool keeps a state per user.
 */
const shaped = (s: State): State => ({
  held: s.held,
  revision: s.revision,
  own: s.own,
  foreign: s.foreign,
  epoch: s.epoch,
  asks: s.asks,
  applied: s.applied,
  nextId: s.nextId,
  flight: s.flight,
  queue: s.queue,
  owed: s.owed,
  signIns: s.signIns,
  writing: s.writing,
  cooldownUntil: s.cooldownUntil,
  failures: s.failures,
  lastError: s.lastError,
  storeFailures: s.storeFailures,
  storeRetryAt: s.storeRetryAt,
  jitter: s.jitter,
  doubt: s.doubt
})

// ---------------------------------------------------------------------------
// Reading the state (the hot path and the front-ends)
// ---------------------------------------------------------------------------

/** The session held, if any. */
export const sessionOf = (state: State): Session.Session | undefined =>
  state.held._tag === "Active" ? state.held.session : undefined

/** Until when the token is fresh; `-Infinity` without a session. The hot path compares the clock with it. */
export const freshUntil = (state: State): number => state.held._tag === "Active" ? state.held.refreshAt : -Infinity

/** The token has not expired (it may be due for a refresh). */
export const isUsable = (state: State, now: number): boolean =>
  state.held._tag === "Active" && state.held.expiresAt > now

/**
 * Nothing of this holder is in progress or owed: no flight, no write, no
 * caller waiting to write. A pool may drop such a holder (its store keeps
 * the session).
 */
export const isIdle = (state: State): boolean =>
  state.flight === undefined && state.queue.length === 0 && state.owed === undefined &&
  state.signIns.length === 0 && state.writing === undefined

/**
 * What closing waits for: a write of this holder is out, a flight keeps the
 * lock until its answer is stored, or the store is owed a session whose
 * refresh token the server already spent or issued (a rotation, a sign-in
 * from a refresh token) or a sign-in's write back. Not a sign-out or a plain
 * sign-in whose write failed: its caller was told (a `StoreError`), and
 * nothing is lost that the user did not hear of.
 */
export const owesStore = (state: State): boolean =>
  state.writing !== undefined || state.flight?.stage === "saving" ||
  (state.owed !== undefined && (state.owed.kind === "rotation" || state.owed.kind === "signIn"))

/** The error of reads without a session. */
export const noSession = (state: State): Events.NoSessionError =>
  new Events.NoSessionError({
    message: Events.noSessionMessage(state.held._tag === "None" ? state.held.reason : undefined)
  })

/**
 * After a caller's wait for a refresh failed: the session it can still be
 * handed, if the one held before the wait (same access token, or the same
 * one with a refused answer's new refresh token) is still valid.
 */
export const afterFailedWait = (
  state: State,
  before: Redacted.Redacted<string> | undefined,
  now: number
): Session.Session | undefined =>
  state.held._tag === "Active" && state.held.session.accessToken === before && isUsable(state, now)
    ? state.held.session
    : undefined

// ---------------------------------------------------------------------------
// decide
// ---------------------------------------------------------------------------

/** A decision under construction: the state so far and the commands in order. */
interface Step {
  state: State
  readonly commands: Array<Command>
  awaits: number | undefined
  readonly now: number
  readonly config: Rules.Config
}

const set = (step: Step, patch: Partial<State>): void => {
  step.state = shaped({ ...step.state, ...patch })
}

const emit = (step: Step, command: Command): void => {
  step.commands.push(command)
}

const publish = (step: Step, event: Events.SessionEvent): void => emit(step, { _tag: "Publish", event })

/** Ends the callers of `op` (the flight's, if it is the flight: its callers are then answered). */
const resolve = (step: Step, op: number, exit: Outcome): void => {
  emit(step, { _tag: "Resolve", op, exit })
  const flight = step.state.flight
  if (flight?.op === op && !flight.answered) set(step, { flight: { ...flight, answered: true } })
}

const log = (
  step: Step,
  level: "Debug" | "Warning" | "Error",
  message: string,
  annotations: Readonly<Record<string, string | number>> = {}
): void => emit(step, { _tag: "Log", level, message, annotations })

const nextId = (step: Step): number => {
  const id = step.state.nextId
  set(step, { nextId: id + 1 })
  return id
}

/** Applies `input` to `state`: the next state and the commands to run, in order. */
export const decide = (state: State, input: Input, config: Rules.Config): Decision => {
  const step: Step = { state, commands: [], awaits: undefined, now: input.now, config }
  const flight = state.flight
  switch (input._tag) {
    case "Demand":
      onDemand(step, input.op, input.kind)
      break
    case "SignIn":
      onSignIn(step, input.op, input.session)
      break
    case "SignInWithToken":
      onSignInWithToken(step, input.op, input.token)
      break
    case "SignOut":
      onSignOut(step, input.op)
      break
    case "Locked":
      if (flight?.op === input.op) onLocked(step, flight, input.stored)
      break
    case "LockFailed":
      if (flight?.op === input.op) onLockFailed(step, flight, input.error)
      break
    case "Answered":
      if (flight?.op === input.op) onAnswered(step, flight, input.exit)
      break
    case "Wrote":
      if (state.writing?.id === input.id) onWrote(step, state.writing, input.result)
      break
    case "Changed":
      takeRecord(step, input.stored)
      break
    case "Tick":
      break
  }
  settle(step)
  return { state: step.state, commands: step.commands, awaits: step.awaits }
}

/**
 * What every decision ends with: a flight whose work is done releases the
 * lock and the next queued one starts; a due refresh starts; an idle writer
 * takes the next write; the timer is armed for what comes due next.
 */
const settle = (step: Step): void => {
  // Its answer was dropped before its first outcome (a sign-in of this holder replaced it).
  if (step.state.flight?.stage === "saving" && !step.state.flight.answered && !savesFor(step.state)) {
    answerAsHeld(step, step.state.flight)
  }
  const flight = step.state.flight
  if (flight?.stage === "saving") {
    // Only another holder of the store (another process, or another manager of this
    // process on the same store object) can read the spent token: the only holder of a
    // store lets the lock go once the callers have their answer (its next refresh sends
    // the token it holds, not the store's). Read at each decision: holders come and go.
    if (isSettled(step.state, flight) || (!step.config.spread && flight.answered)) endFlight(step, flight)
    // Past the bound, once its callers have their answer and the last try of the save failed
    // (none in flight, the next not due yet), the lock goes.
    else if (
      flight.answered && step.now - flight.since >= step.config.saveBound && step.state.writing === undefined &&
      (step.state.owed === undefined || step.state.owed.retryAt > step.now)
    ) {
      log(
        step,
        "Error",
        "moon-refresh: releasing the store's lock while the store may still hold a spent refresh token (its save kept failing)",
        { boundMillis: step.config.saveBound }
      )
      endFlight(step, flight)
    }
  }
  if (step.state.flight === undefined && step.state.queue.length > 0) startQueued(step)
  if (step.state.flight === undefined && dueForRefresh(step.state, step.now, step.config)) {
    startFlight(step, { kind: "refresh", op: nextId(step) })
  }
  if (step.state.writing === undefined) startWrite(step)
  emit(step, { _tag: "Arm", at: nextWake(step.state, step.config) })
}

/** A refresh's answer (a rotation, or a rejection's sign-out) is owed or being written. */
const savesFor = (state: State): boolean => {
  const op = state.flight?.op
  const owes = (owed: Owed | undefined) => owed !== undefined && owed.flight !== undefined && owed.flight === op
  return owes(state.owed) || (state.writing?._tag === "Owed" && owes(state.writing.owed))
}

// ---- timing ----

const dueForRefresh = (state: State, now: number, config: Rules.Config): boolean =>
  config.autoRefresh && now >= proactiveAt(state)

/** When the proactive refresh is due: at `refreshAt`, never inside a cooldown or a store pause. */
const proactiveAt = (state: State): number =>
  state.held._tag === "Active"
    ? Math.max(state.held.refreshAt, state.cooldownUntil, state.storeRetryAt)
    : Infinity

/** When this holder next needs the clock (a refresh due, a save to retry, a lock to let go), if ever. */
export const nextWake = (state: State, config: Rules.Config): number | undefined => {
  const refresh = config.autoRefresh && state.flight === undefined ? proactiveAt(state) : Infinity
  const save = state.owed !== undefined && state.writing === undefined ? state.owed.retryAt : Infinity
  // Past the bound, the lock goes only when no save is in flight (see `settle`): while one is,
  // its outcome (`Wrote`, bounded by the store's timeout) is the next thing to wake for. A
  // timer for the bound, already past, would fire and change nothing, again and again.
  const saving = state.flight?.stage === "saving" && state.flight.answered && state.writing === undefined
    ? state.flight.since + config.saveBound
    : Infinity
  const at = Math.min(refresh, save, saving)
  return at === Infinity ? undefined : at
}

// ---- demands ----

const onDemand = (step: Step, op: number, kind: "read" | "refresh"): void => {
  const { held } = step.state
  const now = step.now
  if (held._tag === "None") return resolveNow(step, op, fail(noSession(step.state)))
  const usable = held.expiresAt > now
  if (kind === "read" && now < held.refreshAt) return resolveNow(step, op, succeed(held.session))
  // A refresh (or a save) is under way: a read gets the token it has while it lasts.
  if (kind === "read" && usable && step.state.flight !== undefined) return resolveNow(step, op, succeed(held.session))
  const joinable = joinableRefresh(step.state)
  if (joinable !== undefined) {
    step.awaits = joinable
    return
  }
  if (now < step.state.cooldownUntil && step.state.lastError !== undefined) {
    // A server that failed is left alone until the cooldown ends; a read still gets a valid token.
    return resolveNow(step, op, kind === "read" && usable ? succeed(held.session) : fail(step.state.lastError))
  }
  // The store failed a moment ago: a valid token is handed out without waiting on it again,
  // while a read of an expired one tries the store at once (it may be back).
  if (kind === "read" && usable && now < step.state.storeRetryAt) return resolveNow(step, op, succeed(held.session))
  step.awaits = op
  if (step.state.flight === undefined) startFlight(step, { kind: "refresh", op })
  else set(step, { queue: [...step.state.queue, { kind: "refresh", op }] })
}

/** Answers the callers of the flight, which may still hold the lock (saving its answer). */
const answer = (step: Step, flight: Flight, exit: Outcome): void => resolve(step, flight.op, exit)

const resolveNow = (step: Step, op: number, exit: Outcome): void => {
  step.awaits = op
  resolve(step, op, exit)
}

/**
 * The refresh a read at `now` joins when joining is all its `Demand` would
 * do (the token has expired and a refresh it can wait for is under way):
 * `onDemand`'s branch, without a decision, for the callers of a stampede
 * after the first. `undefined`: decide as usual. Such a `Demand` changes no
 * state, and what its decision would settle by the clock (a save's bound) is
 * the timer's to settle too.
 */
export const joinedRead = (state: State, now: number): number | undefined =>
  state.held._tag === "Active" && now >= state.held.expiresAt && now >= state.held.refreshAt
    ? joinableRefresh(state)
    : undefined

/**
 * The refresh a caller can wait for: the one in flight while its callers
 * have not been answered (waiting for the lock, or sent and not superseded),
 * else one queued after it.
 */
const joinableRefresh = (state: State): number | undefined => {
  const flight = state.flight
  if (
    flight?.kind === "refresh" &&
    (flight.stage === "locking" || (flight.stage === "posting" && flight.epoch === state.epoch))
  ) return flight.op
  return state.queue.find((queued) => queued.kind === "refresh")?.op
}

// ---- flights ----

const startFlight = (step: Step, queued: Queued): void => {
  const { held } = step.state
  const signIn = queued.kind === "signIn" ? queued : undefined
  set(step, {
    flight: {
      op: queued.op,
      kind: queued.kind,
      token: signIn?.token,
      seen: signIn?.seen ?? step.state.revision,
      epoch: step.state.epoch,
      ask: signIn?.ask ?? 0,
      stage: "locking",
      asked: held._tag === "Active" ? held.session.accessToken : undefined,
      expected: step.state.revision,
      sent: undefined,
      since: step.now,
      answered: false,
      refused: undefined
    }
  })
  emit(step, { _tag: "Lock", op: queued.op })
}

const startQueued = (step: Step): void => {
  const [next, ...rest] = step.state.queue
  set(step, { queue: rest })
  // A queued refresh of a holder signed out meanwhile ends at once.
  if (next!.kind === "refresh" && step.state.held._tag === "None") {
    return resolve(step, next!.op, fail(noSession(step.state)))
  }
  startFlight(step, next!)
}

const endFlight = (step: Step, flight: Flight): void => {
  if (flight.stage === "saving" && !flight.answered) answerAsHeld(step, flight)
  set(step, { flight: undefined })
  emit(step, { _tag: "Release", op: flight.op })
}

/**
 * Answers a refresh whose own answer will not be used (another holder wrote
 * first, or a sign-in here replaced it): its refusal if it had one, else what
 * is held now.
 */
const answerAsHeld = (step: Step, flight: Flight): void => {
  const held = sessionOf(step.state)
  answer(
    step,
    flight,
    flight.refused !== undefined
      ? fail(flight.refused)
      : held !== undefined
      ? succeed(held)
      : fail(noSession(step.state))
  )
}

/**
 * The lock has done its work. A refresh: the store no longer holds the token
 * it sent (a newer record landed, ours or another holder's). A sign-in from a
 * refresh token: its session is stored (or will not be), so another holder
 * starting from the same token finds it there.
 */
const isSettled = (state: State, flight: Flight): boolean =>
  flight.kind === "signIn"
    ? !savesFor(state) && state.writing === undefined
    : flight.sent === undefined || state.own > flight.expected || state.foreign > flight.expected

const onLocked = (step: Step, flight: Flight, stored: SessionStore.Stored): void => {
  set(step, { storeFailures: 0, storeRetryAt: 0 })
  takeRecord(step, stored, true)
  if (flight.kind === "signIn") return lockedSignIn(step, flight, stored)
  const { held } = step.state
  if (held._tag === "None") {
    resolve(step, flight.op, fail(noSession(step.state)))
    return endFlight(step, flight)
  }
  // Another session arrived while this one waited for the lock (another
  // holder's, or a sign-in): it is the answer, unless it is due itself.
  if (held.session.accessToken !== flight.asked && step.now < held.refreshAt) {
    resolve(step, flight.op, succeed(held.session))
    return endFlight(step, flight)
  }
  // An earlier revision than ours: the store lost its record (a restart
  // without persistence); the answer is written back over what it has.
  const expected = Math.min(stored.revision, step.state.revision)
  const token = held.session.refreshToken
  set(step, { flight: { ...flight, stage: "posting", epoch: step.state.epoch, expected, sent: token } })
  emit(step, { _tag: "Post", op: flight.op, token })
}

const lockedSignIn = (step: Step, flight: Flight, stored: SessionStore.Stored): void => {
  // Another holder signed in (or refreshed) after the caller looked: its session is
  // taken, and the caller's token is not sent (it may be the one that holder sent).
  // Taking it is this sign-in: it replaces a sign-out of this holder asked for before.
  if (step.state.foreign > flight.seen && stored.revision !== step.state.own && Option.isSome(stored.session)) {
    const taken = stored.session.value
    if (flight.ask > step.state.applied) {
      if (step.state.owed !== undefined && step.state.owed.ask < flight.ask) dropOwed(step)
      overtakeSignIns(step, flight.ask)
      set(step, { revision: Math.max(step.state.revision, stored.revision) })
      const held = sessionOf(step.state)
      if (held === undefined || !sameTokens(held, taken)) signedIn(step, taken, flight.ask)
      else set(step, { applied: flight.ask })
    }
    resolve(step, flight.op, succeed(taken))
    // A write of this holder is still out (a sign-out asked for before): when it
    // lands it clears what was taken, and the taken session is written back. The
    // lock stays until then, or another holder would find the store empty and
    // send its token again.
    if (step.state.writing !== undefined) {
      return set(step, { flight: { ...flight, stage: "saving", answered: true, since: step.now } })
    }
    return endFlight(step, flight)
  }
  set(step, { flight: { ...flight, stage: "posting", expected: stored.revision } })
  emit(step, { _tag: "Post", op: flight.op, token: flight.token! })
}

/**
 * The store failed: not a failure of the server. The proactive refresh waits
 * the cooldown before it tries the store again, and a read of a still-valid
 * token gets it without waiting on the store; but a read of an expired token
 * tries at once (the store may be back), so reads recover as soon as it is.
 */
const storeFailed = (step: Step): void => {
  const storeFailures = step.state.storeFailures + 1
  set(step, { storeFailures, storeRetryAt: step.now + Rules.cooldownFor(storeFailures, step.config) })
}

const onLockFailed = (step: Step, flight: Flight, error: SessionStore.StoreError): void => {
  storeFailed(step)
  // The event before the callers' answer, as for any failed refresh.
  if (flight.kind === "refresh") {
    log(step, "Warning", "moon-refresh: the session store failed before the refresh; keeping the session", {
      error: error._tag,
      reason: error.message
    })
    publish(step, Events.SessionEvent.RefreshFailed({ error, willRetry: step.config.autoRefresh }))
  }
  resolve(step, flight.op, fail(error))
  endFlight(step, flight)
}

// ---- answers ----

const onAnswered = (step: Step, flight: Flight, exit: Exit.Exit<Session.Session, Rules.Failure>): void => {
  if (flight.kind === "signIn") return answeredSignIn(step, flight, exit)
  if (flight.epoch !== step.state.epoch) return answeredSuperseded(step, flight, exit)
  if (exit._tag === "Success") return owe(step, flight, "rotation", Option.some(exit.value), undefined)
  const error = failureOf(exit)
  if (error?._tag === "TokenRejectedError") return owe(step, flight, "rejected", Option.none(), error)
  const rotated = error === undefined ? undefined : rotatedBy(error, step.state.held)
  if (rotated !== undefined) return owe(step, flight, "rotation", Option.some(rotated), error)
  if (error === undefined) {
    // A defect or an interruption: its callers get it as it is; nothing is
    // known of the token, and the next try waits a little, not in a loop.
    storeFailed(step)
    resolve(step, flight.op, exit as Exit.Exit<never, never>)
    return endFlight(step, flight)
  }
  failed(step, flight, error)
}

/**
 * A sign-in or sign-out of this holder came after the request was sent: the
 * answer is dropped, never saved. The lock is kept until that change lands:
 * the store still holds the token that was sent.
 */
const answeredSuperseded = (step: Step, flight: Flight, exit: Exit.Exit<Session.Session, Rules.Failure>): void => {
  if (exit._tag === "Success") {
    log(step, "Debug", "moon-refresh: a refresh answered after a sign-in or sign-out; dropped")
  }
  set(step, { flight: { ...flight, stage: "saving", since: step.now } })
  const held = sessionOf(step.state)
  answer(step, flight, held !== undefined ? succeed(held) : fail(noSession(step.state)))
}

const answeredSignIn = (step: Step, flight: Flight, exit: Exit.Exit<Session.Session, Rules.Failure>): void => {
  if (exit._tag === "Failure") {
    const error = failureOf(exit)
    endFlight(step, flight)
    return resolve(step, flight.op, error === undefined ? exit as Exit.Exit<never, never> : fail(error))
  }
  // A sign-in or sign-out of this holder asked for later already took effect: the answer is not kept.
  if (flight.ask <= step.state.applied) {
    endFlight(step, flight)
    return resolve(step, flight.op, succeed(exit.value))
  }
  // Another holder's sign-out, seen on the feed while the request was out: it wins (see signInConflicted).
  const state = step.state
  // Its caller gets the session, as a sign-in overtaken by a later sign-out does (the
  // call's errors are the server's and the store's; this is neither).
  if (state.foreign > flight.expected && state.revision === state.foreign && state.held._tag === "None") {
    endFlight(step, flight)
    return resolve(step, flight.op, succeed(exit.value))
  }
  overtakeSignIns(step, flight.ask)
  // The lock is kept until the new session is stored: another holder starting
  // from the same token (the environment's) must find it there, not send it.
  set(step, { flight: { ...flight, stage: "saving", since: step.now, sent: flight.token } })
  // Saved before it is used; the token is spent, so it is used even if its save fails.
  oweWrite(step, {
    kind: "signIn",
    record: Option.some(exit.value),
    // Fenced on the record read under the lock: a sign-out another holder wrote
    // since (while the request was out) wins; anything else is written over.
    expected: flight.expected,
    epoch: step.state.epoch,
    ask: flight.ask,
    token: flight.token,
    flight: flight.op,
    op: flight.op,
    failures: 0,
    retryAt: 0
  })
}

// The server's answer was refused but carried a new refresh token: the one we
// sent is spent, so the new one replaces it (saved like any rotation).
const rotatedBy = (error: Rules.Failure, held: Held): Session.Session | undefined =>
  error._tag === "MalformedResponseError" && error.rotatedRefreshToken !== undefined && held._tag === "Active"
    ? new Session.Session({ ...held.session, refreshToken: error.rotatedRefreshToken }, {
      disableChecks: true
    })
    : undefined

/** The answer is written (fenced on the revision the refresh read) before anyone is handed it. */
const owe = (
  step: Step,
  flight: Flight,
  kind: "rotation" | "rejected",
  record: Option.Option<Session.Session>,
  refused: Rules.Failure | undefined
): void => {
  set(step, { flight: { ...flight, stage: "saving", since: step.now, refused } })
  oweWrite(step, {
    kind,
    record,
    expected: flight.expected,
    epoch: step.state.epoch,
    ask: 0,
    token: undefined,
    flight: flight.op,
    op: undefined,
    failures: 0,
    retryAt: 0
  })
}

/** A transient failure: the session is kept, the server is left alone for the cooldown. */
const failed = (step: Step, flight: Flight, error: Rules.Failure): void => {
  if (error._tag === "StoreError") {
    // The lease was lost before the request went out: the store's doing, not the server's.
    storeFailed(step)
  } else {
    const failures = step.state.failures + 1
    set(step, { failures, cooldownUntil: step.now + Rules.pauseAfter(error, failures, step.config), lastError: error })
  }
  log(step, "Warning", "moon-refresh: refresh failed; keeping the session", {
    error: error._tag,
    reason: error.message,
    cooldownMillis: Math.max(0, step.state.cooldownUntil, step.state.storeRetryAt) - step.now
  })
  publish(step, Events.SessionEvent.RefreshFailed({ error, willRetry: step.config.autoRefresh }))
  resolve(step, flight.op, fail(error))
  endFlight(step, flight)
}

// ---- what a saved (or kept) answer does ----

/** A session this holder now holds from a sign-in. */
const signedIn = (step: Step, session: Session.Session, ask: number): void => {
  set(step, {
    held: active(session, { kind: "held", at: step.now, jitter: step.state.jitter }, step.config),
    epoch: step.state.epoch + 1,
    applied: ask,
    cooldownUntil: 0,
    failures: 0,
    lastError: undefined,
    storeFailures: 0,
    storeRetryAt: 0
  })
  publish(step, Events.SessionEvent.SignedIn({ session }))
}

/** The refresh's new session is in use (saved, or kept in memory while its save is retried). */
const rotated = (step: Step, flight: Flight, session: Session.Session): void => {
  const refused = flight.refused
  const held = active(session, { kind: "refreshed", at: step.now, jitter: step.state.jitter }, step.config)
  if (refused === undefined) {
    set(step, { held, cooldownUntil: 0, failures: 0, lastError: undefined })
    publish(step, Events.SessionEvent.Refreshed({ session }))
    return answer(step, flight, succeed(session))
  }
  // The access token is kept while it lasts, but the session is due for a
  // refresh at once (after the cooldown: a server that keeps doing this is not hammered).
  const failures = step.state.failures + 1
  set(step, {
    held: { ...held, refreshAt: Math.min(step.now, held.expiresAt) },
    failures,
    cooldownUntil: step.now + Rules.pauseAfter(refused, failures, step.config),
    lastError: refused
  })
  log(step, "Warning", "moon-refresh: refresh answer refused; keeping its new refresh token", {
    error: refused._tag,
    reason: refused.message
  })
  publish(step, Events.SessionEvent.RefreshFailed({ error: refused, willRetry: step.config.autoRefresh }))
  answer(step, flight, fail(refused))
}

const rejected = (step: Step, flight: Flight, error: RefreshError.TokenRejectedError): void => {
  const reason = Events.SignOutReason.TokenRejected({ error })
  set(step, { held: none(reason), cooldownUntil: 0, failures: 0, lastError: undefined })
  log(step, "Warning", "moon-refresh: refresh token rejected; signed out", {
    status: error.status ?? "none",
    reason: error.message
  })
  publish(step, Events.SessionEvent.SignedOut({ reason }))
  answer(step, flight, fail(error))
}

/**
 * The first outcome of what was owed (saved, or its save failed: the token is
 * spent, so the answer is used either way): the refresh or the sign-in it
 * belongs to takes effect, unless a later sign-in or sign-out came first.
 */
const firstOutcome = (step: Step, owed: Owed, current: boolean): void => {
  const session = Option.getOrUndefined(owed.record)
  // A sign-in dropped meanwhile (a newer record won, and its caller was answered then) installs nothing.
  if (owed.kind === "signIn" && !current) return
  if (owed.kind === "signIn" && session !== undefined && owed.op !== undefined) {
    if (owed.ask > step.state.applied) signedIn(step, session, owed.ask)
    const flight = step.state.flight
    return flight?.op === owed.op ? answer(step, flight, succeed(session)) : resolve(step, owed.op, succeed(session))
  }
  const flight = step.state.flight
  if (flight?.stage !== "saving" || flight.op !== owed.flight || flight.answered || owed.epoch !== step.state.epoch) {
    return
  }
  if (owed.kind === "rotation" && session !== undefined) return rotated(step, flight, session)
  if (owed.kind === "rejected" && flight.refused?._tag === "TokenRejectedError") rejected(step, flight, flight.refused)
}

// ---- sign-in, sign-out ----

const onSignIn = (step: Step, op: number, session: Session.Session): void => {
  const held = sessionOf(step.state)
  // The session already held (and not on its way out): nothing changes. Writing
  // it again would drop a refresh in flight, whose token would be sent twice.
  if (held !== undefined && sameTokens(held, session) && step.state.owed?.kind !== "signOut") {
    return resolveNow(step, op, succeed(session))
  }
  step.awaits = op
  const ask = step.state.asks + 1
  set(step, { asks: ask, signIns: [...step.state.signIns, { op, session, ask }] })
}

const onSignInWithToken = (step: Step, op: number, token: Redacted.Redacted<string>): void => {
  // The same token already on its way (two callers starting from one token at
  // once): this call waits for that one, and the token is sent once.
  const same = signInWith(step.state, token)
  if (same !== undefined) {
    step.awaits = same
    return
  }
  step.awaits = op
  const ask = step.state.asks + 1
  const queued: Queued = { kind: "signIn", op, token, seen: step.state.revision, ask }
  set(step, { asks: ask })
  if (step.state.flight === undefined) startFlight(step, queued)
  else set(step, { queue: [...step.state.queue, queued] })
}

/**
 * Plain sign-ins asked for before `ask` and not written yet are overtaken by
 * it: they end as if written and overwritten (as a sign-out overtakes them).
 */
const overtakeSignIns = (step: Step, ask: number): void => {
  const overtaken = step.state.signIns.filter((pending) => pending.ask < ask)
  if (overtaken.length === 0) return
  for (const pending of overtaken) resolve(step, pending.op, succeed(pending.session))
  set(step, { signIns: step.state.signIns.filter((pending) => pending.ask >= ask) })
}

/** The operation signing in with `token` whose callers have not been answered yet, if any. */
const signInWith = (state: State, token: Redacted.Redacted<string>): number | undefined => {
  const value = Redacted.value(token)
  const same = (other: Redacted.Redacted<string> | undefined) => other !== undefined && Redacted.value(other) === value
  const { flight, owed } = state
  // (A flight whose callers were answered already is only finishing its save: a new call does not wait on it.)
  if (flight?.kind === "signIn" && same(flight.token) && !flight.answered) return flight.op
  const queued = state.queue.find((entry) => entry.kind === "signIn" && same(entry.token))
  if (queued !== undefined) return queued.op
  return owed?.kind === "signIn" && owed.op !== undefined && same(owed.token) ? owed.op : undefined
}

const onSignOut = (step: Step, op: number): void => {
  const epoch = step.state.epoch + 1
  const ask = step.state.asks + 1
  // Sign-ins asked for before this one are overtaken by it: they end as if written and overwritten.
  for (const pending of step.state.signIns) resolve(step, pending.op, succeed(pending.session))
  const reason = Events.SignOutReason.UserSignedOut()
  // Forgotten in memory at once: a store that cannot be written does not keep the user signed in here.
  set(step, {
    held: none(reason),
    epoch,
    asks: ask,
    applied: ask,
    signIns: [],
    cooldownUntil: 0,
    failures: 0,
    lastError: undefined
  })
  publish(step, Events.SessionEvent.SignedOut({ reason }))
  step.awaits = op
  oweWrite(step, {
    kind: "signOut",
    record: Option.none(),
    expected: undefined,
    epoch,
    ask,
    token: undefined,
    flight: undefined,
    op,
    failures: 0,
    retryAt: 0
  })
}

/** Owes `owed` to the store, replacing what was owed before (whose caller ends as overtaken). */
const oweWrite = (step: Step, owed: Owed): void => {
  dropOwed(step)
  set(step, { owed })
}

/**
 * Nothing is owed any more (something newer replaced it, or another holder's
 * write won); a caller still waiting on it ends as overtaken: with what it
 * would have written.
 */
const dropOwed = (step: Step): void => {
  const before = step.state.owed
  if (before === undefined) return
  if (before.op !== undefined) resolve(step, before.op, succeed(Option.getOrUndefined(before.record)))
  set(step, { owed: undefined })
}

// ---- writes ----

const startWrite = (step: Step): void => {
  const { owed, signIns } = step.state
  if (owed !== undefined && owed.retryAt <= step.now) {
    const id = nextId(step)
    set(step, { writing: { _tag: "Owed", id, owed, applied: step.state.applied } })
    return emit(step, {
      _tag: "Write",
      id,
      record: owed.record,
      expected: owed.expected ?? step.state.revision,
      overwrite: owed.expected === undefined
    })
  }
  const [next, ...rest] = signIns
  if (next === undefined) return
  const id = nextId(step)
  set(step, { signIns: rest, writing: { _tag: "SignIn", id, signIn: next, applied: step.state.applied } })
  emit(step, { _tag: "Write", id, record: Option.some(next.session), expected: step.state.revision, overwrite: true })
}

const onWrote = (step: Step, writing: Writing, result: WriteResult): void => {
  set(step, { writing: undefined })
  if (result._tag === "Failed") {
    const doubt: Doubt = {
      record: writing._tag === "Owed" ? writing.owed.record : Option.some(writing.signIn.session),
      // As of when it was sent: a sign-in or sign-out that took effect while it was out supersedes it.
      ask: Math.max(writing._tag === "Owed" ? writing.owed.ask : writing.signIn.ask, writing.applied)
    }
    set(step, { doubt: [...(step.state.doubt ?? []), doubt].slice(-maxDoubts) })
  } else if (result._tag === "Written") set(step, { doubt: undefined })
  if (writing._tag === "SignIn") return wroteSignIn(step, writing.signIn, result)
  const owed = writing.owed
  if (result._tag === "Written") return wroteOwed(step, owed, result.stored)
  if (result._tag === "Conflict" && owed.kind === "signIn") return signInConflicted(step, owed, result.stored)
  if (result._tag === "Conflict" && owed.expected !== undefined) return conflicted(step, owed, result.stored)
  writeFailed(step, owed, result._tag === "Failed" ? result.error : keptChanging(owed.record))
}

const keptChanging = (record: Option.Option<Session.Session>): SessionStore.StoreError =>
  new SessionStore.StoreError({
    operation: Option.isSome(record) ? "save" : "clear",
    message: "the record kept changing under the write"
  })

const wroteSignIn = (step: Step, signIn: PendingSignIn, result: WriteResult): void => {
  if (result._tag !== "Written") {
    // If the save fails, nothing changes.
    const error = result._tag === "Failed" ? result.error : keptChanging(Option.some(signIn.session))
    return resolve(step, signIn.op, fail(error))
  }
  landed(step, result.stored, Option.some(signIn.session))
  resolve(step, signIn.op, succeed(signIn.session))
  // A sign-in or sign-out asked for after this one already took effect: it wins, and what
  // this holder holds is written back over this one (the store must not keep the older).
  if (signIn.ask <= step.state.applied) return restore(step, Option.some(signIn.session), result.stored.revision)
  // What was owed belongs to the session this sign-in replaces.
  if (step.state.owed !== undefined && step.state.owed.ask < signIn.ask) dropOwed(step)
  signedIn(step, signIn.session, signIn.ask)
}

/** This holder's write of `record` landed as `stored`. */
const landed = (step: Step, stored: SessionStore.Stored, record: Option.Option<Session.Session>): void => {
  const { flight, owed } = step.state
  const written = Option.getOrUndefined(record)
  // A refresh that sent the token just written is fenced on this write now,
  // and the store still holds that token (spent): the lock stays.
  const resent = flight?.sent !== undefined && written !== undefined &&
    Redacted.value(flight.sent) === Redacted.value(written.refreshToken)
  set(step, {
    own: stored.revision,
    revision: Math.max(step.state.revision, stored.revision),
    owed: owed?.expected !== undefined && owed.expected === stored.revision - 1 && resent
      ? { ...owed, expected: stored.revision }
      : owed,
    flight: resent ? { ...flight!, expected: stored.revision } : flight
  })
}

const wroteOwed = (step: Step, owed: Owed, stored: SessionStore.Stored): void => {
  const current = step.state.owed === owed
  landed(step, stored, owed.record)
  if (current) set(step, { owed: undefined })
  else restore(step, owed.record, stored.revision)
  if (owed.failures > 0) return
  if (owed.kind === "signOut" && owed.op !== undefined && current) resolve(step, owed.op, succeed(undefined))
  firstOutcome(step, owed, current)
}

/**
 * A write this holder no longer wanted landed (a sign-out asked for before a
 * sign-in that already took effect here, say): with nothing else owed, what
 * this holder holds is written back over it, unless another holder wrote since.
 */
const restore = (step: Step, landed: Option.Option<Session.Session>, revision: number): void => {
  const { flight, owed } = step.state
  const held = sessionOf(step.state)
  if (owed !== undefined || sameRecord(landed, Option.fromNullishOr(held))) return
  oweWrite(step, {
    kind: held === undefined ? "signOut" : "signIn",
    record: Option.fromNullishOr(held),
    // Fenced on the unwanted write: another holder's write since then is newer, and wins.
    expected: revision,
    epoch: step.state.epoch,
    ask: step.state.applied,
    token: undefined,
    // A sign-in from a refresh token that took another holder's session keeps the lock
    // while the unwanted write is out (see `lockedSignIn`): it keeps it for the write back too.
    flight: flight?.kind === "signIn" && flight.stage === "saving" && flight.answered ? flight.op : undefined,
    op: undefined,
    failures: 0,
    retryAt: 0
  })
}

const sameRecord = (a: Option.Option<Session.Session>, b: Option.Option<Session.Session>): boolean =>
  Option.isNone(a) ? Option.isNone(b) : Option.isSome(b) && sameTokens(a.value, b.value)

/** Another holder wrote since the refresh read the record: what it wrote wins, ours is dropped unused. */
const conflicted = (step: Step, owed: Owed, stored: Option.Option<SessionStore.Stored>): void => {
  if (step.state.owed === owed) dropOwed(step)
  if (Option.isSome(stored)) takeRecord(step, stored.value)
  // Not read: the record moved past the revision ours was fenced on, which is all the lock needs to know.
  else set(step, { foreign: Math.max(step.state.foreign, owed.expected! + 1) })
  const flight = step.state.flight
  if (flight?.stage === "saving" && flight.op === owed.flight && !flight.answered) answerAsHeld(step, flight)
}

/**
 * A sign-in's session met a newer record. Another holder's sign-out, written
 * while the request was out: the sign-out wins (the user asked for it last),
 * the new session is dropped, and the call returns it unkept, as a sign-in
 * overtaken by a later sign-out does.
 * Anything else (this holder's own sign-out asked for before, another
 * holder's refresh of the session this sign-in replaces): written over.
 */
const signInConflicted = (step: Step, owed: Owed, stored: Option.Option<SessionStore.Stored>): void => {
  const current = step.state.owed === owed
  // A write back (`restore`: no caller, no token) is fenced so that another holder's write
  // since then wins: it is dropped, and what that holder wrote is taken.
  if (owed.op === undefined && owed.token === undefined) {
    if (current) set(step, { owed: undefined })
    if (Option.isSome(stored)) takeRecord(step, stored.value)
    else if (owed.expected !== undefined) set(step, { foreign: Math.max(step.state.foreign, owed.expected + 1) })
    return
  }
  if (Option.isSome(stored) && Option.isNone(stored.value.session) && stored.value.revision !== step.state.own) {
    if (current) set(step, { owed: undefined })
    takeRecord(step, stored.value)
    if (owed.op !== undefined) resolve(step, owed.op, succeed(Option.getOrUndefined(owed.record)))
    return
  }
  if (Option.isSome(stored)) takeRecord(step, stored.value)
  if (current) set(step, { owed: { ...owed, expected: undefined, retryAt: 0 } })
}

const writeFailed = (step: Step, owed: Owed, error: SessionStore.StoreError): void => {
  const current = step.state.owed === owed
  const failures = owed.failures + 1
  // Again at once, then doubling: while the lock is held for a store other
  // holders share (they wait on it, and the store may hold a newer record this
  // holder will only learn of by trying), 100 ms up to 1.6 s, so the save lands
  // or conflicts within 1.6 s of the store's return; else 1 s, 2 s, 4 s... up to a minute.
  const underLock = step.config.spread && step.state.flight?.stage === "saving"
  const pause = failures === 1
    ? 0
    : Math.min((underLock ? 100 : 1_000) * 2 ** (failures - 2), underLock ? 1_600 : 60_000)
  // A sign-out that could not be written is tried again over whatever is stored: another
  // holder that did not hear of it (the store was down) may have refreshed the session
  // meanwhile, and that must not bring it back. Only a later sign-in here supersedes it
  // (one on another holder, landing while this one could not write, is signed out too:
  // docs/05, "When the store fails").
  const expected = owed.expected
  if (step.state.owed === owed) {
    set(step, { owed: { ...owed, failures, retryAt: step.now + pause, op: undefined, expected } })
  }
  if (owed.failures > 0) return
  log(
    step,
    "Error",
    owed.kind === "signOut"
      ? "moon-refresh: the sign-out could not be saved; retrying in the background"
      : "moon-refresh: the new session could not be saved; keeping it in memory and retrying in the background",
    { reason: error.message }
  )
  if (owed.kind === "signOut") {
    if (owed.op !== undefined) resolve(step, owed.op, fail(error))
    return
  }
  firstOutcome(step, owed, current)
  publish(step, Events.SessionEvent.SaveFailed({ error }))
}

// ---- records of other holders ----

/**
 * Takes a record read from the store (under the lock, after a conflict, or
 * from the feed). A later revision than ours that this holder did not write
 * is another holder's: its session is adopted, its sign-out followed, and
 * what this holder owed for the older record is dropped. An earlier or equal
 * one is old news, except that a plain store's record at our revision
 * holding a session that expires later was written from outside.
 */
const takeRecord = (step: Step, stored: SessionStore.Stored, underLock = false): void => {
  const state = step.state
  if (stored.revision === state.own) return
  // This holder's write in flight, seen (the feed, a read) before its outcome came back: it landed.
  const writing = state.writing
  if (writing !== undefined && stored.revision > state.revision && isEcho(writing, stored)) {
    return onWrote(step, writing, { _tag: "Written", stored })
  }
  // A sign-out while this holder's own sign-out is being written: its or another holder's, the
  // write's outcome will tell (and a conflict brings what the store holds then).
  if (writing?._tag === "Owed" && Option.isNone(writing.owed.record) && Option.isNone(stored.session)) return
  const doubt = stored.revision > state.revision
    ? state.doubt?.find((d) => sameRecord(d.record, stored.session))
    : undefined
  if (doubt !== undefined) return landedLate(step, stored, doubt)
  if (stored.revision <= state.revision) {
    // Only a read can find it: the feed brings writes, which move the revision.
    if (underLock && stored.revision === state.revision && state.owed === undefined) adoptOutside(step, stored)
    return
  }
  set(step, { foreign: Math.max(state.foreign, stored.revision) })
  // This holder's own sign-in or sign-out, not written yet, overwrites whatever is there.
  if (state.owed !== undefined && state.owed.expected === undefined) return
  dropOwed(step)
  set(step, { revision: stored.revision })
  adopt(step, stored.session)
}

const adoptOutside = (step: Step, stored: SessionStore.Stored): void => {
  const held = sessionOf(step.state)
  if (held === undefined || Option.isNone(stored.session)) return
  if (Rules.isNewer(stored.session.value, held) && !sameTokens(stored.session.value, held)) {
    set(step, { foreign: Math.max(step.state.foreign, stored.revision) })
    // When it was written is unknown: its refresh is planned as for a session loaded.
    adopt(step, stored.session, "held")
  }
}

const adopt = (
  step: Step,
  session: Option.Option<Session.Session>,
  kind: Rules.Arrival["kind"] = "adopted"
): void => {
  const held = step.state.held
  if (Option.isNone(session)) {
    if (held._tag === "None") return
    const reason = Events.SignOutReason.SignedOutElsewhere()
    set(step, { held: none(reason), cooldownUntil: 0, failures: 0, lastError: undefined })
    return publish(step, Events.SessionEvent.SignedOut({ reason }))
  }
  if (held._tag === "Active" && sameTokens(held.session, session.value)) return
  set(step, {
    held: active(session.value, { kind, at: step.now, jitter: step.state.jitter }, step.config),
    cooldownUntil: 0,
    failures: 0,
    lastError: undefined,
    storeFailures: 0,
    storeRetryAt: 0
  })
  publish(step, Events.SessionEvent.Refreshed({ session: session.value }))
}

/**
 * Whether `stored` is the session being written (tokens are unique). A
 * sign-out cannot be told from another holder's: its outcome is waited for.
 */
/**
 * A write of this holder that had failed (it timed out) landed after all: the
 * store holds it, so this holder does too, as its own write. A retry of it
 * still owed has nothing left to do.
 */
const landedLate = (step: Step, stored: SessionStore.Stored, doubt: Doubt): void => {
  const superseded = doubt.ask < step.state.applied
  // Those that failed before it can no longer land over it (a fenced write is refused, and
  // a plain store's writes land in order): only the ones after it stay in doubt.
  const after = step.state.doubt!.slice(step.state.doubt!.indexOf(doubt) + 1)
  set(step, { doubt: after.length === 0 ? undefined : after })
  const owed = step.state.owed
  if (owed !== undefined && sameRecord(owed.record, stored.session)) return wroteOwed(step, owed, stored)
  set(step, { own: stored.revision, revision: stored.revision })
  // Not superseded (a sign-in or sign-out asked for since but not taken effect,
  // a sign-in that failed, is not one): the store and this holder hold it.
  if (!superseded) return adopt(step, stored.session)
  // A sign-in or sign-out that took effect since: that is what this holder holds, and
  // writes over it (the write under way or waiting does, else one is owed).
  if (step.state.writing === undefined && step.state.signIns.length === 0) {
    restore(step, stored.session, stored.revision)
  }
}

const isEcho = (writing: Writing, stored: SessionStore.Stored): boolean => {
  const record = writing._tag === "Owed" ? writing.owed.record : Option.some(writing.signIn.session)
  return Option.isSome(record) && Option.isSome(stored.session) && sameTokens(record.value, stored.session.value)
}

/** Both tokens the same. */
export const sameTokens = (a: Session.Session, b: Session.Session): boolean =>
  Redacted.value(a.refreshToken) === Redacted.value(b.refreshToken) &&
  Redacted.value(a.accessToken) === Redacted.value(b.accessToken)

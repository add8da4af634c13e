/**
 * Keeps one session alive: hands out a valid access token, refreshes ahead of
 * expiry, runs exactly one refresh at a time however many callers ask, saves
 * the rotated refresh token before anyone is handed the new access token, and
 * keeps a still-valid session through transient failures.
 *
 * @since 0.1.0
 */
import {
  Cause,
  Context,
  Data,
  DateTime,
  Deferred,
  Duration,
  Effect,
  Exit,
  FiberHandle,
  FiberId,
  Layer,
  MutableRef,
  Option,
  PubSub,
  type Redacted,
  Schedule,
  Schema,
  type Scope,
  Stream
} from "effect"
import * as RefreshClient from "./RefreshClient.js"
import type * as RefreshError from "./RefreshError.js"
import type * as Session from "./Session.js"
import * as SessionStore from "./SessionStore.js"

/**
 * There is no session: none was signed in, the user signed out, or the
 * refresh token was rejected. Reads fail with it without any request.
 *
 * @since 0.1.0
 * @category errors
 */
export class NoSessionError extends Schema.TaggedError<NoSessionError>("moon-refresh/NoSessionError")(
  "NoSessionError",
  { message: Schema.String }
) {}

/**
 * @since 0.1.0
 * @category errors
 */
export type SessionError = RefreshError.RefreshError | NoSessionError | SessionStore.StoreError

/**
 * Why a session ended.
 *
 * @since 0.1.0
 * @category models
 */
export type SignOutReason = Data.TaggedEnum<{
  /** `signOut` was called. */
  UserSignedOut: {}
  /** The server rejected the refresh token: the user must sign in again. */
  TokenRejected: { readonly error: RefreshError.TokenRejectedError }
}>

/**
 * @since 0.1.0
 * @category constructors
 */
export const SignOutReason = Data.taggedEnum<SignOutReason>()

/**
 * What happened to the session. Tokens inside a `Session` stay `Redacted`.
 *
 * @since 0.1.0
 * @category models
 */
export type SessionEvent = Data.TaggedEnum<{
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

/**
 * @since 0.1.0
 * @category constructors
 */
export const SessionEvent = Data.taggedEnum<SessionEvent>()

/**
 * @since 0.1.0
 * @category models
 */
export interface Service {
  /** An access token valid for at least the margin; refreshes first if needed. */
  readonly accessToken: Effect.Effect<Redacted.Redacted<string>, SessionError>
  /** The same, the whole session. */
  readonly session: Effect.Effect<Session.Session, SessionError>
  /** What is held now: no I/O, no refresh, whatever its expiry. */
  readonly current: Effect.Effect<Option.Option<Session.Session>>
  /**
   * Refreshes now, or joins the refresh in flight. Within the cooldown after a
   * failed refresh it fails at once with that failure instead of calling the server.
   */
  readonly refresh: Effect.Effect<Session.Session, SessionError>
  /** Saves the session, then uses it. If the save fails, nothing changes. */
  readonly signIn: (session: Session.Session) => Effect.Effect<void, SessionStore.StoreError>
  /** Forgets the session in memory, then clears the store; fails if the store could not be cleared. */
  readonly signOut: Effect.Effect<void, SessionStore.StoreError>
  /** Events from the moment the stream is run. */
  readonly events: Stream.Stream<SessionEvent>
}

/**
 * @since 0.1.0
 * @category tags
 */
export class SessionManager extends Context.Tag("moon-refresh/SessionManager")<SessionManager, Service>() {}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Refresh when the access token has less than this left. Default 60 seconds. */
  readonly margin?: Duration.DurationInput | undefined
  /** Refresh at `expiresAt - margin` without waiting for a caller. Default true. */
  readonly autoRefresh?: boolean | undefined
  /** The pause after a failed refresh before the next; doubles with each failure in a row. Default 10 seconds. */
  readonly cooldown?: Duration.DurationInput | undefined
  /** The longest cooldown. Default 5 minutes. */
  readonly maxCooldown?: Duration.DurationInput | undefined
}

/**
 * @since 0.1.0
 * @category constants
 */
export const defaults = {
  margin: Duration.seconds(60),
  autoRefresh: true,
  cooldown: Duration.seconds(10),
  maxCooldown: Duration.minutes(5)
} as const

interface State {
  readonly session: Session.Session | undefined
  /** `session.expiresAt` in epoch ms, kept as a number for the hot path. */
  readonly expiresAt: number
  /** Bumped by every change of session; a refresh started under another generation is stale. */
  readonly generation: number
  readonly inflight: Deferred.Deferred<Session.Session, SessionError> | undefined
  readonly cooldownUntil: number
  readonly failures: number
  readonly lastError: SessionError | undefined
  /** Memory holds a newer session than the store (a save failed). */
  readonly unsaved: boolean
  readonly signedOut: SignOutReason | undefined
  /** Built once per session so the hot path allocates nothing. */
  readonly succeed: Effect.Effect<Session.Session> | undefined
  readonly succeedToken: Effect.Effect<Redacted.Redacted<string>> | undefined
}

const initialState = (session: Session.Session | undefined): State => ({
  session,
  expiresAt: session ? DateTime.toEpochMillis(session.expiresAt) : 0,
  generation: 0,
  inflight: undefined,
  cooldownUntil: 0,
  failures: 0,
  lastError: undefined,
  unsaved: false,
  signedOut: undefined,
  succeed: session ? Effect.succeed(session) : undefined,
  succeedToken: session ? Effect.succeed(session.accessToken) : undefined
})

// A new session starts clean: a refresh still in flight belongs to the old
// one, and its result is discarded when it commits (the generation differs).
const withSession = (state: State, session: Session.Session | undefined): State => ({
  ...initialState(session),
  generation: state.generation + 1
})

const noSession = (state: State): NoSessionError =>
  new NoSessionError({
    message: state.signedOut?._tag === "TokenRejected"
      ? `no session: the refresh token was rejected (${state.signedOut.error.message})`
      : state.signedOut?._tag === "UserSignedOut"
      ? "no session: signed out"
      : "no session: sign in first"
  })

const positiveOrZero = (name: string, input: Duration.DurationInput): Duration.Duration => {
  const duration = Duration.decodeUnknown(input)
  // Duration clamps negative numbers to zero; a negative option is a mistake to report, not to clamp.
  const negative = (typeof input === "number" && input < 0) || (typeof input === "bigint" && input < 0n) ||
    (typeof input === "string" && /^\s*-/.test(input)) ||
    (Array.isArray(input) && (input[0] < 0 || input[1] < 0))
  if (negative || Option.isNone(duration) || !Duration.isFinite(duration.value)) {
    throw new globalThis.Error(`SessionManager: option "${name}" must be a finite, non-negative duration`)
  }
  return duration.value
}

// A failed save is retried in the background until it succeeds or the session changes.
const saveRetrySchedule = Schedule.exponential(Duration.seconds(1)).pipe(
  Schedule.modifyDelay((_, delay) => Duration.min(delay, Duration.minutes(1)))
)

/**
 * Builds the manager from the `RefreshClient` and `SessionStore` in context,
 * starting from the stored session. Its background fibers live in the scope.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: Options = {}
): Effect.Effect<
  Service,
  SessionStore.StoreError,
  RefreshClient.RefreshClient | SessionStore.SessionStore | Scope.Scope
> =>
  Effect.gen(function*() {
    const { cooldown, margin, maxCooldown } = yield* Effect.try({
      try: () => ({
        margin: Duration.toMillis(positiveOrZero("margin", options.margin ?? defaults.margin)),
        cooldown: Duration.toMillis(positiveOrZero("cooldown", options.cooldown ?? defaults.cooldown)),
        maxCooldown: Duration.toMillis(positiveOrZero("maxCooldown", options.maxCooldown ?? defaults.maxCooldown))
      }),
      catch: (error) => error
    }).pipe(Effect.orDie)
    const autoRefresh = options.autoRefresh ?? defaults.autoRefresh
    const client = yield* RefreshClient.RefreshClient
    const store = yield* SessionStore.SessionStore
    const withLock = store.withLock
    const scope = yield* Effect.scope

    // A MutableRef rather than a Ref: the hot path reads it synchronously (no
    // extra Effect step per read). Every change is one synchronous step, so
    // each is atomic on JavaScript's single thread, as Ref's own are.
    const state = MutableRef.make(initialState(Option.getOrUndefined(yield* store.load)))
    const getState = Effect.sync(() => MutableRef.get(state))
    const update = (f: (s: State) => State) => Effect.sync(() => MutableRef.updateAndGet(state, f))
    // Every reading of time in the manager goes through this one clock (the
    // one in context at build), so the hot and slow paths never disagree.
    const clock = yield* Effect.clock
    const events = yield* Effect.acquireRelease(PubSub.unbounded<SessionEvent>(), PubSub.shutdown)
    // Serialises every change of session (refresh commit, sign-in, sign-out,
    // background save) so a late refresh never resurrects a signed-out session.
    const mutex = yield* Effect.makeSemaphore(1)
    const proactive = yield* FiberHandle.make<void, never>()
    const saving = yield* FiberHandle.make<void, never>()

    const publish = (event: SessionEvent) => PubSub.publish(events, event)

    const reschedule: Effect.Effect<void> = Effect.gen(function*() {
      const s = yield* getState
      if (!autoRefresh || s.session === undefined) return yield* FiberHandle.clear(proactive)
      const now = yield* clock.currentTimeMillis
      // Due at `expiresAt - margin`, but never inside a cooldown.
      const at = Math.max(s.cooldownUntil, s.expiresAt - margin)
      yield* FiberHandle.run(
        proactive,
        Effect.sleep(Duration.millis(Math.max(0, at - now))).pipe(Effect.zipRight(Effect.ignore(startOrJoin)))
      )
    })

    // Reports a failed save and keeps retrying it in the background; the
    // session stays in memory, so this process does not lose the rotated token.
    const saveFailed = (error: SessionStore.StoreError, session: Session.Session, generation: number) =>
      Effect.gen(function*() {
        yield* Effect.logError("moon-refresh: the new session could not be saved; retrying in the background").pipe(
          Effect.annotateLogs({ error: error.message })
        )
        yield* publish(SessionEvent.SaveFailed({ error }))
        const retry = mutex.withPermits(1)(
          Effect.gen(function*() {
            if ((yield* getState).generation !== generation) return
            yield* store.save(session)
            yield* update((s) => (s.generation === generation ? { ...s, unsaved: false } : s))
          })
        ).pipe(Effect.retry(saveRetrySchedule), Effect.ignore)
        yield* FiberHandle.run(saving, retry)
      })

    // Applies the outcome of a refresh. Runs under the mutex.
    const commit = (
      generation: number,
      outcome: Exit.Exit<{ readonly session: Session.Session; readonly adopted: boolean }, SessionError>
    ): Effect.Effect<Session.Session, SessionError> =>
      Effect.gen(function*() {
        const s = yield* getState
        if (s.generation !== generation) {
          // Signed in or out while the request was in flight: that wins.
          return s.session ?? (yield* Effect.fail(noSession(s)))
        }
        if (Exit.isSuccess(outcome)) {
          const { adopted, session } = outcome.value
          yield* FiberHandle.clear(saving)
          // Save before anyone can read it: the old refresh token is spent.
          const saveError = adopted
            ? Option.none<SessionStore.StoreError>()
            : Option.getLeft(yield* Effect.either(store.save(session)))
          const next = yield* update((c) => ({ ...withSession(c, session), unsaved: Option.isSome(saveError) }))
          yield* publish(SessionEvent.Refreshed({ session }))
          if (Option.isSome(saveError)) yield* saveFailed(saveError.value, session, next.generation)
          yield* reschedule
          return session
        }
        const error = Cause.failureOption(outcome.cause)
        if (Option.isNone(error)) return yield* Effect.failCause(outcome.cause)
        if (error.value._tag === "TokenRejectedError") {
          const reason = SignOutReason.TokenRejected({ error: error.value })
          yield* FiberHandle.clear(saving)
          yield* update((c) => ({ ...withSession(c, undefined), signedOut: reason }))
          yield* Effect.logWarning("moon-refresh: refresh token rejected; signed out").pipe(
            Effect.annotateLogs({ status: error.value.status ?? "none", message: error.value.message })
          )
          yield* publish(SessionEvent.SignedOut({ reason }))
          yield* store.clear.pipe(
            Effect.catchAll((clearError) =>
              Effect.zipRight(
                Effect.logError("moon-refresh: could not clear the stored session after a rejected token"),
                publish(SessionEvent.SaveFailed({ error: clearError }))
              )
            )
          )
          yield* reschedule
          return yield* Effect.failCause(outcome.cause)
        }
        const now = yield* clock.currentTimeMillis
        const failures = s.failures + 1
        const pause = Math.min(cooldown * 2 ** (failures - 1), maxCooldown)
        yield* update((c) => ({ ...c, failures, cooldownUntil: now + pause, lastError: error.value }))
        yield* Effect.logWarning("moon-refresh: refresh failed; keeping the session").pipe(
          Effect.annotateLogs({ error: error.value._tag, message: error.value.message, cooldownMillis: pause })
        )
        yield* publish(SessionEvent.RefreshFailed({ error: error.value, willRetry: autoRefresh }))
        yield* reschedule
        return yield* Effect.failCause(outcome.cause)
      })

    // The refresh itself, run in its own fiber in the layer's scope so that a
    // caller giving up does not abort a request the others are waiting for
    // (an aborted POST may have rotated the token server-side).
    const runRefresh = (snapshot: State, session: Session.Session) => {
      let committed = false
      // Uninterruptible except where marked: once the server has answered, the
      // answer is committed (and saved) even if the scope is closing, because
      // the old refresh token is already spent.
      return withLock(Effect.uninterruptibleMask((restore) =>
        Effect.gen(function*() {
          let base = session
          let adopted = false
          if (!snapshot.unsaved) {
            // Another process (or tab) sharing the store may have refreshed
            // already: its session is newer and ours is spent.
            const stored = yield* restore(Effect.orElseSucceed(store.load, () => Option.none<Session.Session>()))
            if (Option.isSome(stored) && DateTime.greaterThan(stored.value.expiresAt, base.expiresAt)) {
              base = stored.value
              adopted = true
            }
          }
          const now = yield* clock.currentTimeMillis
          const outcome = adopted && DateTime.toEpochMillis(base.expiresAt) - now > margin
            ? Exit.succeed({ session: base, adopted: true })
            : yield* Effect.exit(
              restore(Effect.map(client.refresh(base.refreshToken), (fresh) => ({ session: fresh, adopted: false })))
            )
          committed = true
          return yield* mutex.withPermits(1)(commit(snapshot.generation, outcome))
        })
      )).pipe(
        // The store's lock (or its re-read) failed before the outcome was
        // committed: that is a failed refresh too, with its cooldown.
        Effect.catchAll((error) =>
          committed ? Effect.fail(error) : mutex.withPermits(1)(commit(snapshot.generation, Exit.fail(error)))
        ),
        Effect.withSpan("moon-refresh/SessionManager.refresh", { captureStackTrace: false })
      )
    }

    const startOrJoin: Effect.Effect<Session.Session, SessionError> = Effect.uninterruptibleMask((restore) =>
      Effect.flatten(
        Effect.sync((): Effect.Effect<Session.Session, SessionError> => {
          const s = MutableRef.get(state)
          if (s.inflight !== undefined) return restore(Deferred.await(s.inflight))
          if (s.session === undefined) return Effect.fail(noSession(s))
          const deferred = Deferred.unsafeMake<Session.Session, SessionError>(FiberId.none)
          // Forked from inside uninterruptibleMask, the fiber would inherit
          // uninterruptibility: closing the scope and the client's timeout
          // must be able to stop it. The onExit stays outside, so waiters are
          // always released.
          const run = Effect.interruptible(runRefresh(s, s.session)).pipe(
            Effect.onExit((exit) =>
              Effect.zipRight(
                update((current) => (current.inflight === deferred ? { ...current, inflight: undefined } : current)),
                Deferred.done(deferred, exit)
              )
            )
          )
          MutableRef.set(state, { ...s, inflight: deferred })
          return Effect.zipRight(Effect.forkIn(run, scope), restore(Deferred.await(deferred)))
        })
      )
    )

    // Not the hot path: the token is within the margin, expired, or absent.
    const slowSession: Effect.Effect<Session.Session, SessionError> = Effect.gen(function*() {
      const s = yield* getState
      if (s.session === undefined) return yield* Effect.fail(noSession(s))
      const now = yield* clock.currentTimeMillis
      const usable = s.expiresAt > now
      if (s.inflight !== undefined) return usable ? s.session : yield* Deferred.await(s.inflight)
      if (now < s.cooldownUntil) return usable ? s.session : yield* Effect.fail(s.lastError ?? noSession(s))
      const result = yield* Effect.either(startOrJoin)
      if (result._tag === "Right") return result.right
      // A transient failure keeps the old session; hand it out while it is valid.
      const after = yield* getState
      if (after.session === s.session && s.expiresAt > (yield* clock.currentTimeMillis)) return s.session
      return yield* Effect.fail(result.left)
    })

    // The hot path: one synchronous state read and one clock read; no lock,
    // no fork, no allocation. The clock is the one in context when the layer
    // was built (TestClock in tests).
    const session: Effect.Effect<Session.Session, SessionError> = Effect.suspend(() => {
      const s = MutableRef.get(state)
      return s.session !== undefined && s.expiresAt - clock.unsafeCurrentTimeMillis() > margin
        ? s.succeed!
        : slowSession
    })
    const accessToken: Effect.Effect<Redacted.Redacted<string>, SessionError> = Effect.suspend(() => {
      const s = MutableRef.get(state)
      return s.session !== undefined && s.expiresAt - clock.unsafeCurrentTimeMillis() > margin
        ? s.succeedToken!
        : Effect.map(slowSession, (session) => session.accessToken)
    })

    const signIn = (next: Session.Session) =>
      mutex.withPermits(1)(
        Effect.gen(function*() {
          yield* store.save(next)
          yield* FiberHandle.clear(saving)
          yield* update((s) => withSession(s, next))
          yield* publish(SessionEvent.SignedIn({ session: next }))
          yield* reschedule
        })
      )

    const signOut = mutex.withPermits(1)(
      Effect.gen(function*() {
        yield* FiberHandle.clear(saving)
        const reason = SignOutReason.UserSignedOut()
        yield* update((s) => ({ ...withSession(s, undefined), signedOut: reason }))
        yield* publish(SessionEvent.SignedOut({ reason }))
        yield* reschedule
        yield* store.clear
      })
    )

    yield* reschedule

    return SessionManager.of({
      accessToken,
      session,
      current: Effect.map(getState, (s) => Option.fromNullable(s.session)),
      refresh: Effect.flatMap(getState, (s) => {
        if (s.inflight !== undefined) return Deferred.await(s.inflight)
        return Effect.flatMap(clock.currentTimeMillis, (now) =>
          now < s.cooldownUntil && s.lastError !== undefined ? Effect.fail(s.lastError) : startOrJoin)
      }),
      signIn,
      signOut,
      events: Stream.fromPubSub(events)
    })
  })

/**
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options?: Options
): Layer.Layer<SessionManager, SessionStore.StoreError, RefreshClient.RefreshClient | SessionStore.SessionStore> =>
  Layer.scoped(SessionManager, make(options))

const use = <A, E>(f: (service: Service) => Effect.Effect<A, E>): Effect.Effect<A, E, SessionManager> =>
  Effect.flatMap(SessionManager, f)

/**
 * @since 0.1.0
 * @category accessors
 */
export const accessToken: Effect.Effect<Redacted.Redacted<string>, SessionError, SessionManager> = use((_) =>
  _.accessToken
)

/**
 * @since 0.1.0
 * @category accessors
 */
export const session: Effect.Effect<Session.Session, SessionError, SessionManager> = use((_) => _.session)

/**
 * @since 0.1.0
 * @category accessors
 */
export const current: Effect.Effect<Option.Option<Session.Session>, never, SessionManager> = use((_) => _.current)

/**
 * @since 0.1.0
 * @category accessors
 */
export const refresh: Effect.Effect<Session.Session, SessionError, SessionManager> = use((_) => _.refresh)

/**
 * @since 0.1.0
 * @category accessors
 */
export const signIn = (
  session: Session.Session
): Effect.Effect<void, SessionStore.StoreError, SessionManager> => use((_) => _.signIn(session))

/**
 * @since 0.1.0
 * @category accessors
 */
export const signOut: Effect.Effect<void, SessionStore.StoreError, SessionManager> = use((_) => _.signOut)

/**
 * @since 0.1.0
 * @category accessors
 */
export const events: Stream.Stream<SessionEvent, never, SessionManager> = Stream.unwrap(
  Effect.map(SessionManager, (_) => _.events)
)

/**
 * The fiber code of `SessionManager`: single flight, commit, the proactive
 * timer and the background save. It only sequences effects; every decision
 * about the session (fresh? cooldown? what does this outcome change?) is a
 * pure function of `sessionState.ts`.
 *
 * Imports the public module for its error and event constructors, which it
 * only uses inside functions (the public module imports this one back).
 *
 * @internal
 */
import type { Clock, Redacted, Scope } from "effect"
import {
  Cause,
  Deferred,
  Duration,
  Effect,
  Exit,
  FiberHandle,
  FiberId,
  MutableRef,
  Option,
  PubSub,
  Schedule
} from "effect"
import type * as RefreshClient from "../RefreshClient.js"
import type * as Session from "../Session.js"
import * as SessionManager from "../SessionManager.js"
import type * as SessionStore from "../SessionStore.js"
import * as State from "./sessionState.js"

/** What a refresh produced: a new session, or one another holder saved. */
interface Fresh {
  readonly session: Session.Session
  readonly adopted: boolean
}

/** Effects built once per session, so a read of a fresh token allocates nothing. */
interface Hot {
  readonly session: Session.Session | undefined
  /** The token is fresh while the clock is below this. */
  readonly freshUntil: number
  readonly succeed: Effect.Effect<Session.Session>
  readonly succeedToken: Effect.Effect<Redacted.Redacted<string>>
}

/** Everything the fiber code shares. */
export interface Runtime {
  readonly config: State.Config
  readonly client: RefreshClient.Service
  readonly store: SessionStore.Service
  /** The one clock (the one in context at build), so the hot and slow paths never disagree. */
  readonly clock: Clock.Clock
  readonly scope: Scope.Scope
  // MutableRefs rather than Refs: the hot path reads them synchronously. Every
  // change is one synchronous step, atomic on JavaScript's single thread.
  readonly state: MutableRef.MutableRef<State.State>
  readonly hot: MutableRef.MutableRef<Hot>
  readonly inflight: MutableRef.MutableRef<Deferred.Deferred<Session.Session, SessionManager.SessionError> | undefined>
  readonly events: PubSub.PubSub<SessionManager.SessionEvent>
  /** Serialises every change of session (commit, sign-in, sign-out, background save). */
  readonly mutex: Effect.Semaphore
  readonly proactive: FiberHandle.FiberHandle<void, never>
  readonly saving: FiberHandle.FiberHandle<void, never>
}

const hotFor = (session: Session.Session | undefined, freshUntil: number): Hot => ({
  session,
  freshUntil,
  succeed: session ? Effect.succeed(session) : Effect.never,
  succeedToken: session ? Effect.succeed(session.accessToken) : Effect.never
})

/** The hot-path cache for a state: rebuilt only when the session changes. */
export const makeHot = (state: State.State, config: State.Config): Hot =>
  hotFor(state.session, State.freshUntil(state, config))

const setState = (rt: Runtime, next: State.State): State.State => {
  MutableRef.set(rt.state, next)
  if (MutableRef.get(rt.hot).session !== next.session) MutableRef.set(rt.hot, makeHot(next, rt.config))
  return next
}

/** Applies a rule to the current state at the clock's now. */
const apply = (rt: Runtime, event: State.Event): Effect.Effect<State.State> =>
  Effect.map(
    rt.clock.currentTimeMillis,
    (now) => setState(rt, State.transition(MutableRef.get(rt.state), event, now, rt.config))
  )

const noSession = (state: State.State) => new SessionManager.NoSessionError({ message: State.noSessionMessage(state) })

const publish = (rt: Runtime, event: SessionManager.SessionEvent) => PubSub.publish(rt.events, event)

/** (Re)arms the proactive refresh for the current state, or stops it. */
export const reschedule = (rt: Runtime): Effect.Effect<void> =>
  Effect.suspend(() => {
    const at = State.proactiveAt(MutableRef.get(rt.state), rt.config)
    if (at === undefined) return FiberHandle.clear(rt.proactive)
    return Effect.flatMap(rt.clock.currentTimeMillis, (now) =>
      FiberHandle.run(
        rt.proactive,
        Effect.sleep(Duration.millis(Math.max(0, at - now))).pipe(Effect.zipRight(Effect.ignore(startOrJoin(rt))))
      ))
  })

// A failed save is retried in the background until it succeeds or the session changes.
const saveRetrySchedule = Schedule.exponential(Duration.seconds(1)).pipe(
  Schedule.modifyDelay((_, delay) => Duration.min(delay, Duration.minutes(1)))
)

// Reports a failed save and keeps retrying it in the background; the session
// stays in memory, so this process does not lose the rotated token.
const saveInBackground = (
  rt: Runtime,
  error: SessionStore.StoreError,
  session: Session.Session,
  generation: number
) =>
  Effect.gen(function*() {
    yield* Effect.logError("moon-refresh: the new session could not be saved; retrying in the background").pipe(
      Effect.annotateLogs({ error: error.message })
    )
    yield* publish(rt, SessionManager.SessionEvent.SaveFailed({ error }))
    const retry = rt.mutex.withPermits(1)(
      Effect.gen(function*() {
        if (MutableRef.get(rt.state).generation !== generation) return
        yield* rt.store.save(session)
        yield* apply(rt, State.Event.Saved({ generation }))
      })
    ).pipe(Effect.retry(saveRetrySchedule), Effect.ignore)
    yield* FiberHandle.run(rt.saving, retry)
  })

const commitSuccess = (rt: Runtime, { adopted, session }: Fresh) =>
  Effect.gen(function*() {
    yield* FiberHandle.clear(rt.saving)
    if (adopted) {
      yield* apply(rt, State.Event.Adopted({ session }))
    } else {
      // Save before anyone can read it: the old refresh token is spent.
      const saveError = Option.getLeft(yield* Effect.either(rt.store.save(session)))
      const next = yield* apply(rt, State.Event.Refreshed({ session, saved: Option.isNone(saveError) }))
      yield* publish(rt, SessionManager.SessionEvent.Refreshed({ session }))
      if (Option.isSome(saveError)) yield* saveInBackground(rt, saveError.value, session, next.generation)
      return session
    }
    yield* publish(rt, SessionManager.SessionEvent.Refreshed({ session }))
    return session
  })

const commitRejected = (rt: Runtime, error: State.Failure & { readonly _tag: "TokenRejectedError" }) =>
  Effect.gen(function*() {
    yield* FiberHandle.clear(rt.saving)
    const next = yield* apply(rt, State.Event.Rejected({ error }))
    yield* Effect.logWarning("moon-refresh: refresh token rejected; signed out").pipe(
      Effect.annotateLogs({ status: error.status ?? "none", message: error.message })
    )
    yield* publish(rt, SessionManager.SessionEvent.SignedOut({ reason: next.signedOut! }))
    yield* rt.store.clear.pipe(
      Effect.catchAll((clearError) =>
        Effect.zipRight(
          Effect.logError("moon-refresh: could not clear the stored session after a rejected token"),
          publish(rt, SessionManager.SessionEvent.SaveFailed({ error: clearError }))
        )
      )
    )
  })

const commitFailed = (rt: Runtime, error: State.Failure) =>
  Effect.gen(function*() {
    const next = yield* apply(rt, State.Event.Failed({ error }))
    yield* Effect.logWarning("moon-refresh: refresh failed; keeping the session").pipe(
      Effect.annotateLogs({
        error: error._tag,
        message: error.message,
        cooldownMillis: State.cooldownFor(next.failures, rt.config)
      })
    )
    yield* publish(
      rt,
      SessionManager.SessionEvent.RefreshFailed({ error, willRetry: rt.config.autoRefresh })
    )
  })

/** Applies the outcome of a refresh started under `generation`. Runs under the mutex. */
const commit = (
  rt: Runtime,
  generation: number,
  outcome: Exit.Exit<Fresh, State.Failure>
): Effect.Effect<Session.Session, SessionManager.SessionError> =>
  Effect.gen(function*() {
    const state = MutableRef.get(rt.state)
    if (state.generation !== generation) {
      // Signed in or out while the request was in flight: that wins.
      return state.session ?? (yield* Effect.fail(noSession(state)))
    }
    if (Exit.isSuccess(outcome)) {
      const session = yield* commitSuccess(rt, outcome.value)
      yield* reschedule(rt)
      return session
    }
    const error = Cause.failureOption(outcome.cause)
    if (Option.isNone(error)) return yield* Effect.failCause(outcome.cause)
    if (error.value._tag === "TokenRejectedError") yield* commitRejected(rt, error.value)
    else yield* commitFailed(rt, error.value)
    yield* reschedule(rt)
    return yield* Effect.failCause(outcome.cause)
  })

/**
 * Under the store's lock: re-read the store, adopt a newer session another
 * holder saved if it is fresh, else POST; then commit. Uninterruptible once
 * the server has answered: the answer is committed (and saved) even if the
 * scope is closing, because the old refresh token is already spent.
 */
const runRefresh = (rt: Runtime, snapshot: State.State, held: Session.Session) => {
  let committed = false
  const critical = Effect.uninterruptibleMask((restore) =>
    Effect.gen(function*() {
      let base = held
      let adopted = false
      if (!snapshot.unsaved) {
        // Another process (or tab) sharing the store may have refreshed
        // already: its session is newer and ours is spent.
        const stored = yield* restore(Effect.orElseSucceed(rt.store.load, () => Option.none<Session.Session>()))
        if (Option.isSome(stored) && State.isNewer(stored.value, base)) {
          base = stored.value
          adopted = true
        }
      }
      const now = yield* rt.clock.currentTimeMillis
      const outcome: Exit.Exit<Fresh, State.Failure> = adopted && State.isFresh(State.initial(base), now, rt.config)
        ? Exit.succeed({ session: base, adopted: true })
        : yield* Effect.exit(
          restore(Effect.map(rt.client.refresh(base.refreshToken), (session) => ({ session, adopted: false })))
        )
      committed = true
      return yield* rt.mutex.withPermits(1)(commit(rt, snapshot.generation, outcome))
    })
  )
  return rt.store.withLock(critical).pipe(
    // The store's lock (or its re-read) failed before the outcome was
    // committed: that is a failed refresh too, with its cooldown.
    Effect.catchIf(
      (error): error is SessionStore.StoreError => !committed && error._tag === "StoreError",
      (error) => rt.mutex.withPermits(1)(commit(rt, snapshot.generation, Exit.fail(error)))
    ),
    Effect.withSpan("moon-refresh/SessionManager.refresh", { captureStackTrace: false })
  )
}

/** Joins the refresh in flight, or starts one in the layer's scope. */
export const startOrJoin = (rt: Runtime): Effect.Effect<Session.Session, SessionManager.SessionError> =>
  Effect.uninterruptibleMask((restore) =>
    Effect.suspend((): Effect.Effect<Session.Session, SessionManager.SessionError> => {
      const inflight = MutableRef.get(rt.inflight)
      if (inflight !== undefined) return restore(Deferred.await(inflight))
      const state = MutableRef.get(rt.state)
      if (state.session === undefined) return Effect.fail(noSession(state))
      const deferred = Deferred.unsafeMake<Session.Session, SessionManager.SessionError>(FiberId.none)
      // Run in its own fiber so a caller giving up does not abort a request
      // the others wait for (an aborted POST may have rotated the token).
      // Forked from inside uninterruptibleMask the fiber would inherit
      // uninterruptibility: closing the scope and the client's timeout must
      // be able to stop it. The onExit stays outside, so waiters are released.
      const run = Effect.interruptible(runRefresh(rt, state, state.session)).pipe(
        Effect.onExit((exit) =>
          Effect.zipRight(
            Effect.sync(() => MutableRef.get(rt.inflight) === deferred && MutableRef.set(rt.inflight, undefined)),
            Deferred.done(deferred, exit)
          )
        )
      )
      MutableRef.set(rt.inflight, deferred)
      return Effect.zipRight(Effect.forkIn(run, rt.scope), restore(Deferred.await(deferred)))
    })
  )

/** A read that is not fresh: within the margin, expired, absent, or cooling down. */
export const slowSession = (rt: Runtime): Effect.Effect<Session.Session, SessionManager.SessionError> =>
  Effect.gen(function*() {
    const state = MutableRef.get(rt.state)
    if (state.session === undefined) return yield* Effect.fail(noSession(state))
    const now = yield* rt.clock.currentTimeMillis
    const usable = State.isUsable(state, now)
    const inflight = MutableRef.get(rt.inflight)
    if (inflight !== undefined) return usable ? state.session : yield* Deferred.await(inflight)
    if (State.inCooldown(state, now)) {
      return usable
        ? state.session
        : yield* Effect.fail(state.lastError ?? noSession(state))
    }
    const result = yield* Effect.either(startOrJoin(rt))
    if (result._tag === "Right") return result.right
    // A transient failure keeps the old session; hand it out while it is valid.
    if (
      MutableRef.get(rt.state).session === state.session && State.isUsable(state, yield* rt.clock.currentTimeMillis)
    ) {
      return state.session
    }
    return yield* Effect.fail(result.left)
  })

/** `SessionManager.refresh`: join, or start unless cooling down after a failure. */
export const refresh = (rt: Runtime): Effect.Effect<Session.Session, SessionManager.SessionError> =>
  Effect.suspend(() => {
    const inflight = MutableRef.get(rt.inflight)
    if (inflight !== undefined) return Deferred.await(inflight)
    const state = MutableRef.get(rt.state)
    return Effect.flatMap(
      rt.clock.currentTimeMillis,
      (now) =>
        State.inCooldown(state, now) && state.lastError !== undefined ? Effect.fail(state.lastError) : startOrJoin(rt)
    )
  })

export const signIn = (rt: Runtime, session: Session.Session): Effect.Effect<void, SessionStore.StoreError> =>
  rt.mutex.withPermits(1)(
    Effect.gen(function*() {
      yield* rt.store.save(session)
      yield* FiberHandle.clear(rt.saving)
      yield* apply(rt, State.Event.SignedIn({ session }))
      yield* publish(rt, SessionManager.SessionEvent.SignedIn({ session }))
      yield* reschedule(rt)
    })
  )

export const signOut = (rt: Runtime): Effect.Effect<void, SessionStore.StoreError> =>
  rt.mutex.withPermits(1)(
    Effect.gen(function*() {
      yield* FiberHandle.clear(rt.saving)
      const next = yield* apply(rt, State.Event.SignedOut())
      yield* publish(rt, SessionManager.SessionEvent.SignedOut({ reason: next.signedOut! }))
      yield* reschedule(rt)
      yield* rt.store.clear
    })
  )

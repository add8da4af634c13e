/**
 * The fiber code of `SessionManager`: single flight, commit, the proactive
 * timer, the background save and the bounds on the store. It only sequences
 * effects; every decision about the session (fresh? cooldown? what does this
 * outcome change?) is a pure function of `sessionState.ts`.
 *
 * Imports the public module for its error and event constructors, which it
 * only uses inside functions (the public module imports this one back).
 *
 * Not public API: the package's exports keep `internal/` private.
 */
import type { Clock, Scope } from "effect"
import { Data } from "effect"
import {
  Cause,
  Deferred,
  Duration,
  Effect,
  Either,
  Exit,
  Fiber,
  FiberHandle,
  FiberId,
  MutableRef,
  Option,
  PubSub,
  Random,
  Redacted,
  Schedule,
  Stream
} from "effect"
import type * as RefreshClient from "../RefreshClient.js"
import type * as RefreshError from "../RefreshError.js"
import * as Session from "../Session.js"
import * as SessionManager from "../SessionManager.js"
import * as SessionStore from "../SessionStore.js"
import * as State from "./sessionState.js"

/** Effects built once per session, so a read of a fresh token allocates nothing. */
export interface Hot {
  readonly state: State.State
  /** The token is fresh while the clock is below this. */
  readonly freshUntil: number
  readonly succeed: Effect.Effect<Session.Session>
  readonly succeedToken: Effect.Effect<Redacted.Redacted<string>>
}

/** The bounds on the store, in milliseconds. */
export interface Bounds {
  /** `load`, `save` and `clear`. */
  readonly store: number
  /** Waiting for the store's lock (another holder may be refreshing under it). */
  readonly lock: number
}

/** Everything the fiber code shares. */
export interface Runtime {
  readonly config: State.Config
  readonly bounds: Bounds
  /** Spread proactive refreshes (stores shared with other processes). */
  readonly spread: boolean
  readonly client: RefreshClient.Service
  readonly store: SessionStore.Service
  /** The one clock (the one in context at build), so the hot and slow paths never disagree. */
  readonly clock: Clock.Clock
  readonly scope: Scope.Scope
  // MutableRefs rather than Refs: the hot path reads them synchronously. Every
  // change is one synchronous step, atomic on JavaScript's single thread.
  readonly state: MutableRef.MutableRef<State.State>
  readonly hot: MutableRef.MutableRef<Hot>
  /** Told of every new hot-path cache (a pool keeps a copy beside its key, where its reads find it). */
  readonly onHot?: ((hot: Hot) => void) | undefined
  readonly inflight: MutableRef.MutableRef<Deferred.Deferred<Session.Session, SessionManager.SessionError> | undefined>
  /** Where events go: the manager's own PubSub, or a pool's feed of every key. */
  readonly publish: (event: SessionManager.SessionEvent) => Effect.Effect<unknown>
  /**
   * Serialises every change of the state and every publish. Never held while
   * waiting for the store's lock: a refresh takes the lock, then this (to
   * commit), so the other way round would deadlock with a store whose writes
   * take its lock.
   */
  mutex: Effect.Semaphore | undefined
  /**
   * Serialises this holder's own writes from outside a refresh (sign-in,
   * sign-out, the background save), so the store and memory see them in the
   * same order. Taken before the store's lock, never after the mutex.
   *
   * Both are made on first use (`mutexOf`, `writesOf`): a pool holds one
   * runtime per user, most of which are only ever read, and two semaphores
   * are about 900 bytes.
   */
  writes: Effect.Semaphore | undefined
  /** The proactive refresh: one fiber per manager, or a pool's one timer for every key. */
  readonly timer: Timer
  /** The background save, if one is retrying; it runs in `scope`. */
  readonly saving: MutableRef.MutableRef<Fiber.RuntimeFiber<void> | undefined>
}

/** Runs an effect at a time, replacing the one armed before. */
export interface Timer {
  readonly arm: (at: number, run: Effect.Effect<void>) => Effect.Effect<void>
  readonly clear: Effect.Effect<void>
}

/** A timer of its own: one fiber, in a `FiberHandle` of the manager's scope. */
export const fiberTimer = (clock: Clock.Clock): Effect.Effect<Timer, never, Scope.Scope> =>
  Effect.map(FiberHandle.make<void, never>(), (handle) => ({
    arm: (at, run) =>
      Effect.flatMap(
        clock.currentTimeMillis,
        (now) => FiberHandle.run(handle, Effect.zipRight(Effect.sleep(Duration.millis(Math.max(0, at - now))), run))
      ),
    clear: FiberHandle.clear(handle)
  }))

/** The hot-path cache for a state. */
export const makeHot = (state: State.State): Hot => ({
  state,
  freshUntil: State.freshUntil(state),
  succeed: state.session ? Effect.succeed(state.session) : Effect.never,
  succeedToken: state.session ? Effect.succeed(state.session.accessToken) : Effect.never
})

const setState = (rt: Runtime, next: State.State): State.State => {
  MutableRef.set(rt.state, next)
  const hot = MutableRef.get(rt.hot).state
  // Rebuilt only when what the hot path reads changes, not on every cooldown.
  if (hot.session !== next.session || hot.refreshAt !== next.refreshAt) {
    const rebuilt = makeHot(next)
    MutableRef.set(rt.hot, rebuilt)
    rt.onHot?.(rebuilt)
  }
  return next
}

const mutexOf = (rt: Runtime): Effect.Semaphore => rt.mutex ??= Effect.unsafeMakeSemaphore(1)
const writesOf = (rt: Runtime): Effect.Semaphore => rt.writes ??= Effect.unsafeMakeSemaphore(1)

/** Applies a rule to the current state at the clock's now. */
const apply = (rt: Runtime, event: State.Event): Effect.Effect<State.State> =>
  Effect.map(
    rt.clock.currentTimeMillis,
    (now) => setState(rt, State.transition(MutableRef.get(rt.state), event, now, rt.config))
  )

const noSession = (state: State.State) => new SessionManager.NoSessionError({ message: State.noSessionMessage(state) })

const publish = (rt: Runtime, event: SessionManager.SessionEvent) => rt.publish(event)

// In [0, 1) when refreshes are spread across processes, else 0.
const jitter = (rt: Runtime): Effect.Effect<number> => rt.spread ? Random.next : Effect.succeed(0)

// ---------------------------------------------------------------------------
// The store, bounded: a store that hangs must not hang the manager.
// ---------------------------------------------------------------------------

const timedOut = (operation: SessionStore.StoreError["operation"], millis: number) => () =>
  new SessionStore.StoreError({
    operation,
    message: `the store did not answer within ${Duration.format(Duration.millis(millis))}`
  })

// Not `Effect.timeout`: inside the uninterruptible commit of a refresh, a
// timeout could not stop the operation (it would wait for it), and made
// interruptible it would also be cut by the interruption a closing scope sends
// to every child fiber, losing the save of a rotated token. Here the operation
// and its timer run as daemons that only the deadline or the caller's own
// (interruptible) wait can stop.
const bounded = <A, E>(
  rt: Pick<Runtime, "bounds">,
  operation: "load" | "save" | "clear",
  effect: Effect.Effect<A, E>
): Effect.Effect<A, E | SessionStore.StoreError> =>
  Effect.gen(function*() {
    const done = yield* Deferred.make<A, E | SessionStore.StoreError>()
    const worker = yield* Effect.forkDaemon(Effect.interruptible(Deferred.complete(done, effect)))
    const timer = yield* Effect.forkDaemon(
      Effect.interruptible(
        Effect.zipRight(Effect.sleep(rt.bounds.store), Deferred.fail(done, timedOut(operation, rt.bounds.store)()))
      )
    )
    return yield* Deferred.await(done).pipe(
      Effect.ensuring(Effect.zipRight(Fiber.interruptFork(worker), Fiber.interruptFork(timer)))
    )
  })

/** Reads the store's record, bounded. */
export const read = (rt: Pick<Runtime, "store" | "bounds">) => bounded(rt, "load", rt.store.read)

/** A fenced write, bounded. */
const write = (rt: Runtime, session: Option.Option<Session.Session>, expected: number) =>
  bounded(rt, Option.isSome(session) ? "save" : "clear", rt.store.write(session, expected))

/** An unconditional write (sign-in, sign-out), bounded: the store's `save` or `clear`. */
const overwrite = (rt: Runtime, session: Option.Option<Session.Session>) =>
  Option.match(session, {
    onSome: (session) => bounded(rt, "save", rt.store.save(session)),
    onNone: () => bounded(rt, "clear", rt.store.clear)
  })

/**
 * Runs `critical` under the store's lock, failing with a `StoreError` when
 * the lock is not granted within the bound. Only the wait is bounded: once
 * granted, `critical` (the POST and the save) runs under its own bounds.
 */
const withLockBounded = <A, E>(
  rt: Runtime,
  critical: Effect.Effect<A, E>
): Effect.Effect<A, E | SessionStore.StoreError> =>
  Effect.gen(function*() {
    const granted = yield* Deferred.make<void>()
    const holder = yield* Effect.fork(
      rt.store.withLock(Effect.zipRight(Deferred.succeed(granted, undefined), critical))
    )
    const waited = yield* Effect.raceFirst(Deferred.await(granted), Effect.asVoid(Fiber.await(holder))).pipe(
      Effect.timeout(rt.bounds.lock),
      Effect.option
    )
    if (Option.isNone(waited)) {
      // Not awaited: a lock stuck in an uninterruptible wait must not hang us too.
      yield* Fiber.interruptFork(holder)
      return yield* Effect.fail(timedOut("lock", rt.bounds.lock)())
    }
    return yield* Fiber.join(holder)
  })

// ---------------------------------------------------------------------------
// Scheduling and saving
// ---------------------------------------------------------------------------

/** (Re)arms the proactive refresh for the current state, or stops it. */
export const reschedule = (rt: Runtime): Effect.Effect<void> =>
  Effect.suspend(() => {
    const at = State.proactiveAt(MutableRef.get(rt.state), rt.config)
    return at === undefined ? rt.timer.clear : rt.timer.arm(at, Effect.ignore(startOrJoin(rt)))
  })

/** Stops the background save, if one is retrying. */
export const stopSaving = (rt: Runtime): Effect.Effect<void> =>
  Effect.suspend(() => {
    const fiber = MutableRef.get(rt.saving)
    if (fiber === undefined) return Effect.void
    MutableRef.set(rt.saving, undefined)
    return Fiber.interruptFork(fiber)
  })

const arrival = (rt: Runtime, at: number | undefined, revision: number): Effect.Effect<State.Arrival> =>
  Effect.map(jitter(rt), (spread) => ({ at, jitter: spread, revision }))

const receivedNow = (rt: Runtime, revision: number) =>
  Effect.flatMap(rt.clock.currentTimeMillis, (now) => arrival(rt, now, revision))

/**
 * Takes what the store holds after another holder won a write: its session
 * (as a refresh would have given it), or its sign-out. Runs under the mutex.
 */
const takeStored = (
  rt: Runtime,
  stored: SessionStore.Stored
): Effect.Effect<Session.Session, SessionManager.NoSessionError> => {
  const state = MutableRef.get(rt.state)
  // Known already (the feed brought it, or it is our own write): nothing changes.
  const known = stored.revision < state.revision ||
    (stored.revision === state.revision &&
      Option.match(stored.session, {
        onNone: () => state.session === undefined,
        onSome: (session) => state.session !== undefined && sameTokens(session, state.session)
      }))
  if (known) return state.session !== undefined ? Effect.succeed(state.session) : Effect.fail(noSession(state))
  return Option.match(stored.session, {
    onSome: (session) =>
      Effect.gen(function*() {
        yield* apply(rt, State.Event.Adopted({ session, arrival: yield* receivedNow(rt, stored.revision) }))
        yield* publish(rt, SessionManager.SessionEvent.Refreshed({ session }))
        return session
      }),
    onNone: () =>
      Effect.gen(function*() {
        const next = yield* apply(rt, State.Event.SignedOut({ revision: stored.revision, elsewhere: true }))
        yield* publish(rt, SessionManager.SessionEvent.SignedOut({ reason: next.signedOut! }))
        return yield* Effect.fail(noSession(next))
      })
  })
}

/** How a fenced write of a new session (or a sign-out) ended. */
type Written = Data.TaggedEnum<{
  Written: { readonly stored: SessionStore.Stored }
  /** Another holder wrote first; this is what the store holds now (if it could be read). */
  Lost: { readonly stored: Option.Option<SessionStore.Stored> }
  /** The store failed: the caller keeps the session in memory and retries the save. */
  Failed: { readonly error: SessionStore.StoreError }
}>
const Written = Data.taggedEnum<Written>()

// On a store other processes share, a failed write under the lock is tried
// again a few times before the session is left to the background save: once
// the lock is released another holder may read the store, and the token it
// holds is spent.
const writeRetries = Schedule.exponential(Duration.millis(100)).pipe(Schedule.intersect(Schedule.recurs(3)))

const writeFenced = (
  rt: Runtime,
  session: Option.Option<Session.Session>,
  expected: number
): Effect.Effect<Written> =>
  write(rt, session, expected).pipe(
    Effect.retry({ schedule: writeRetries, while: (error) => rt.store.shared && error._tag === "StoreError" }),
    Effect.map((stored): Written => Written.Written({ stored })),
    Effect.catchAll((error): Effect.Effect<Written> =>
      error._tag === "StoreConflictError"
        ? Effect.map(Effect.option(read(rt)), (stored) => Written.Lost({ stored }))
        : Effect.succeed(Written.Failed({ error }))
    )
  )

// Says that a save failed, once the event of what was saved is out.
const reportSaveFailed = (rt: Runtime, error: SessionStore.StoreError) =>
  Effect.zipRight(
    Effect.logError("moon-refresh: the new session could not be saved; retrying in the background").pipe(
      Effect.annotateLogs({ error: error.message })
    ),
    publish(rt, SessionManager.SessionEvent.SaveFailed({ error }))
  )

// A failed save is retried in the background until it succeeds or the session changes.
const saveRetrySchedule = Schedule.exponential(Duration.seconds(1)).pipe(
  Schedule.modifyDelay((_, delay) => Duration.min(delay, Duration.minutes(1)))
)

// Keeps retrying a failed save; the session stays in memory, so this process
// does not lose the rotated token. If another holder wrote in the meantime,
// what it wrote is taken instead.
const saveInBackground = (rt: Runtime, session: Session.Session, generation: number) => {
  const current = () => {
    const state = MutableRef.get(rt.state)
    return state.generation === generation ? state : undefined
  }
  const attempt = writesOf(rt).withPermits(1)(
    Effect.gen(function*() {
      const state = current()
      if (state === undefined) return
      const written = yield* Effect.either(write(rt, Option.some(session), state.revision))
      yield* mutexOf(rt).withPermits(1)(Effect.suspend(() => {
        if (current() === undefined) return Effect.void
        if (Either.isRight(written)) {
          return apply(rt, State.Event.Saved({ generation, revision: written.right.revision }))
        }
        // Another holder wrote since: what it wrote is taken instead.
        if (written.left._tag === "StoreConflictError") {
          return Effect.flatMap(read(rt), (stored) => Effect.ignore(takeStored(rt, stored)))
        }
        return Effect.fail(written.left)
      }))
    })
  )
  return Effect.flatMap(stopSaving(rt), () =>
    Effect.flatMap(
      Effect.forkIn(attempt.pipe(Effect.retry(saveRetrySchedule), Effect.ignore), rt.scope),
      (fiber) => Effect.sync(() => MutableRef.set(rt.saving, fiber))
    ))
}

// ---------------------------------------------------------------------------
// Committing the outcome of a refresh
// ---------------------------------------------------------------------------

/** What a refresh, under the store's lock, came to. */
type Outcome = State.Plan

const commitSession = (rt: Runtime, session: Session.Session, expected: number) =>
  Effect.gen(function*() {
    yield* stopSaving(rt)
    // Saved before anyone can read it: the old refresh token is spent.
    const written = yield* writeFenced(rt, Option.some(session), expected)
    // Another holder wrote first (its lease had passed ours, or it signed in
    // or out): ours was never handed out, what it wrote is taken.
    if (written._tag === "Lost" && Option.isSome(written.stored)) return yield* takeStored(rt, written.stored.value)
    const revision = written._tag === "Written" ? written.stored.revision : expected
    const next = yield* apply(
      rt,
      State.Event.Refreshed({ session, saved: written._tag === "Written", arrival: yield* receivedNow(rt, revision) })
    )
    yield* publish(rt, SessionManager.SessionEvent.Refreshed({ session }))
    if (written._tag === "Failed") yield* reportSaveFailed(rt, written.error)
    if (written._tag !== "Written") yield* saveInBackground(rt, session, next.generation)
    return session
  })

const commitRejected = (
  rt: Runtime,
  error: State.Failure & { readonly _tag: "TokenRejectedError" },
  expected: number
) =>
  Effect.gen(function*() {
    yield* stopSaving(rt)
    const written = yield* writeFenced(rt, Option.none(), expected)
    // Another holder wrote since we read: its session is newer than the token
    // the server refused (or it signed out already).
    if (written._tag === "Lost" && Option.isSome(written.stored)) {
      return yield* Effect.ignore(takeStored(rt, written.stored.value))
    }
    const revision = written._tag === "Written" ? written.stored.revision : expected
    const next = yield* apply(rt, State.Event.Rejected({ error, revision }))
    yield* Effect.logWarning("moon-refresh: refresh token rejected; signed out").pipe(
      Effect.annotateLogs({ status: error.status ?? "none", message: error.message })
    )
    yield* publish(rt, SessionManager.SessionEvent.SignedOut({ reason: next.signedOut! }))
    if (written._tag === "Failed") {
      yield* Effect.logError("moon-refresh: could not clear the stored session after a rejected token")
      yield* publish(rt, SessionManager.SessionEvent.SaveFailed({ error: written.error }))
    }
  })

// The server's answer was refused but carried a new refresh token: the one we
// sent is spent, so the new one replaces it (saved like any rotation).
const rotatedBy = (error: State.Failure, base: Session.Session): Session.Session | undefined =>
  error._tag === "MalformedResponseError" && error.rotatedRefreshToken !== undefined
    ? new Session.Session({ ...base, refreshToken: error.rotatedRefreshToken }, true)
    : undefined

const commitFailed = (rt: Runtime, error: State.Failure, base: Session.Session, expected: number) =>
  Effect.gen(function*() {
    const session = rotatedBy(error, base)
    const written = session === undefined ? undefined : yield* writeFenced(rt, Option.some(session), expected)
    if (written?._tag === "Lost" && Option.isSome(written.stored)) {
      return yield* Effect.ignore(takeStored(rt, written.stored.value))
    }
    if (written !== undefined) yield* stopSaving(rt)
    const rotated = session === undefined || written === undefined ? undefined : {
      session,
      saved: written._tag === "Written",
      arrival: { at: undefined, jitter: 0, revision: written._tag === "Written" ? written.stored.revision : expected }
    }
    const next = yield* apply(rt, State.Event.Failed({ error, rotated }))
    yield* Effect.logWarning(
      rotated === undefined
        ? "moon-refresh: refresh failed; keeping the session"
        : "moon-refresh: refresh answer refused; keeping its new refresh token"
    ).pipe(
      Effect.annotateLogs({
        error: error._tag,
        message: error.message,
        cooldownMillis: next.cooldownUntil - (yield* rt.clock.currentTimeMillis)
      })
    )
    yield* publish(rt, SessionManager.SessionEvent.RefreshFailed({ error, willRetry: rt.config.autoRefresh }))
    if (written?._tag === "Failed") yield* reportSaveFailed(rt, written.error)
    if (rotated !== undefined && !rotated.saved) yield* saveInBackground(rt, rotated.session, next.generation)
  })

/**
 * Applies the outcome of a refresh started under `generation` from the
 * record at revision `expected`. Runs under the mutex.
 */
const commit = (
  rt: Runtime,
  generation: number,
  base: Session.Session,
  expected: number,
  outcome: Exit.Exit<{ readonly plan: Outcome; readonly fresh?: Session.Session | undefined }, State.Failure>
): Effect.Effect<Session.Session, SessionManager.SessionError> =>
  Effect.gen(function*() {
    const state = MutableRef.get(rt.state)
    // The session changed while the request was out (a sign-in or sign-out,
    // or another holder's session taken from the feed). An answer that spent
    // a token is still written, fenced on the revision it was planned from:
    // the store refuses it if anyone wrote since, and then what is there is
    // taken; if nobody did, it is the newest session and must not be lost.
    // Anything else is discarded: the newer change wins.
    const spent = Exit.isSuccess(outcome)
      ? outcome.value.plan._tag === "Refresh"
      : Option.exists(
        Cause.failureOption(outcome.cause),
        (error) => error._tag === "TokenRejectedError" || rotatedBy(error, base) !== undefined
      )
    if (state.generation !== generation && !spent) {
      return state.session ?? (yield* Effect.fail(noSession(state)))
    }
    if (Exit.isSuccess(outcome)) {
      const { fresh, plan } = outcome.value
      const session = yield* State.Plan.$match(plan, {
        FollowSignOut: ({ revision }) => takeStored(rt, { revision, session: Option.none() }),
        Adopt: ({ revision, session }) => takeStored(rt, { revision, session: Option.some(session) }),
        Refresh: ({ expected }) => commitSession(rt, fresh!, expected)
      }).pipe(Effect.ensuring(reschedule(rt)))
      return session
    }
    const error = Cause.failureOption(outcome.cause)
    if (Option.isNone(error)) return yield* Effect.failCause(outcome.cause)
    if (error.value._tag === "TokenRejectedError") yield* commitRejected(rt, error.value, expected)
    else yield* commitFailed(rt, error.value, base, expected)
    yield* reschedule(rt)
    return yield* Effect.failCause(outcome.cause)
  })

// ---------------------------------------------------------------------------
// Single flight
// ---------------------------------------------------------------------------

/**
 * Under the store's lock: read the record and decide (`State.plan`): follow
 * another holder's sign-out, take its fresh session, or POST and write the
 * result fenced on the revision read. Uninterruptible once the server has
 * answered: the answer is committed (and saved) even if the scope is
 * closing, because the old refresh token is already spent.
 */
const runRefresh = (rt: Runtime, snapshot: State.State, held: Session.Session) => {
  let committed = false
  let base = held
  let expected = snapshot.revision
  const critical = Effect.uninterruptibleMask((restore) =>
    Effect.gen(function*() {
      const stored = yield* restore(read(rt))
      const plan = State.plan(snapshot, held, stored, yield* rt.clock.currentTimeMillis, rt.config)
      if (plan._tag === "Refresh") {
        base = plan.base
        expected = plan.expected
      }
      const outcome = plan._tag === "Refresh"
        ? yield* Effect.exit(restore(Effect.map(rt.client.refresh(base.refreshToken), (fresh) => ({ plan, fresh }))))
        : Exit.succeed({ plan })
      committed = true
      return yield* mutexOf(rt).withPermits(1)(commit(rt, snapshot.generation, base, expected, outcome))
    })
  )
  return withLockBounded(rt, critical).pipe(
    // The store's lock or its read failed (or the lock was not granted in
    // time) before anything was committed: a failed refresh, with its cooldown.
    Effect.catchIf(
      (error): error is SessionStore.StoreError => !committed && error._tag === "StoreError",
      (error) => mutexOf(rt).withPermits(1)(commit(rt, snapshot.generation, base, expected, Exit.fail(error)))
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

/** A read that is not fresh: due for a refresh, expired, absent, or cooling down. */
export const slowSession = (rt: Runtime): Effect.Effect<Session.Session, SessionManager.SessionError> =>
  Effect.gen(function*() {
    const state = MutableRef.get(rt.state)
    if (state.session === undefined) return yield* Effect.fail(noSession(state))
    const now = yield* rt.clock.currentTimeMillis
    const usable = State.isUsable(state, now)
    const inflight = MutableRef.get(rt.inflight)
    if (inflight !== undefined) return usable ? state.session : yield* Deferred.await(inflight)
    if (State.inCooldown(state, now)) {
      return usable ? state.session : yield* Effect.fail(state.lastError ?? noSession(state))
    }
    const result = yield* Effect.either(startOrJoin(rt))
    if (result._tag === "Right") return result.right
    // A transient failure keeps the old session; hand it out while it is valid.
    const after = MutableRef.get(rt.state)
    // (The same access token also after a refused answer whose new refresh token was kept.)
    const now2 = yield* rt.clock.currentTimeMillis
    if (after.session?.accessToken === state.session.accessToken && State.isUsable(after, now2)) return after.session
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

// ---------------------------------------------------------------------------
// Sign-in, sign-out, events
// ---------------------------------------------------------------------------

const sameTokens = (a: Session.Session, b: Session.Session): boolean =>
  Redacted.value(a.refreshToken) === Redacted.value(b.refreshToken) &&
  Redacted.value(a.accessToken) === Redacted.value(b.accessToken)

// A refresh in flight belongs to the session being replaced: later callers
// must not join it (its result is discarded at commit anyway).
const detachInflight = (rt: Runtime) => Effect.sync(() => MutableRef.set(rt.inflight, undefined))

export const signIn = (rt: Runtime, session: Session.Session): Effect.Effect<void, SessionStore.StoreError> =>
  writesOf(rt).withPermits(1)(
    Effect.gen(function*() {
      const held = MutableRef.get(rt.state).session
      // The session already held: nothing changes. Detaching a refresh in
      // flight here would POST the same refresh token twice.
      if (held !== undefined && sameTokens(held, session)) return
      // Saved first (not under the mutex: the store may wait for a refresh
      // holding its lock): if the save fails, nothing changes.
      const written = yield* overwrite(rt, Option.some(session))
      yield* mutexOf(rt).withPermits(1)(Effect.gen(function*() {
        yield* stopSaving(rt)
        yield* detachInflight(rt)
        yield* apply(rt, State.Event.SignedIn({ session, arrival: yield* arrival(rt, undefined, written.revision) }))
        yield* publish(rt, SessionManager.SessionEvent.SignedIn({ session }))
        yield* reschedule(rt)
      }))
    })
  )

/**
 * Refreshes a refresh token from outside (a sign-in flow, the environment)
 * and signs in with the result, under the store's lock: if another holder
 * signed in meanwhile, its session is taken instead of spending the token,
 * which it may have spent already.
 */
export const signInWithRefreshToken = (
  rt: Runtime,
  token: Redacted.Redacted<string>
): Effect.Effect<Session.Session, RefreshError.RefreshError | SessionStore.StoreError> =>
  Effect.flatMap(read(rt), (before) =>
    withLockBounded(
      rt,
      Effect.uninterruptibleMask((restore) =>
        Effect.gen(function*() {
          const stored = yield* restore(read(rt))
          // Written while this call waited for the lock: another holder signed in (with this very token, as two
          // processes starting from one in the environment would). Take its session; ours would be a reuse.
          if (stored.revision > before.revision && Option.isSome(stored.session)) {
            return yield* mutexOf(rt).withPermits(1)(Effect.orDie(takeStored(rt, stored)))
          }
          const session = yield* restore(rt.client.refresh(token))
          // The token is spent once the server answered: the new session is kept, whatever happens next.
          return yield* mutexOf(rt).withPermits(1)(Effect.gen(function*() {
            yield* stopSaving(rt)
            yield* detachInflight(rt)
            const written = yield* writeFenced(rt, Option.some(session), stored.revision)
            if (written._tag === "Lost" && Option.isSome(written.stored)) {
              return yield* Effect.orDie(takeStored(rt, written.stored.value))
            }
            const revision = written._tag === "Written" ? written.stored.revision : stored.revision
            const next = yield* apply(
              rt,
              State.Event.Refreshed({
                session,
                saved: written._tag === "Written",
                arrival: yield* receivedNow(rt, revision)
              })
            )
            yield* publish(rt, SessionManager.SessionEvent.SignedIn({ session }))
            if (written._tag === "Failed") yield* reportSaveFailed(rt, written.error)
            if (written._tag !== "Written") yield* saveInBackground(rt, session, next.generation)
            yield* reschedule(rt)
            return session
          }))
        })
      )
    )).pipe(Effect.withSpan("moon-refresh/SessionManager.signInWithRefreshToken", { captureStackTrace: false }))

export const signOut = (rt: Runtime): Effect.Effect<void, SessionStore.StoreError> =>
  writesOf(rt).withPermits(1)(
    Effect.gen(function*() {
      // Forgotten in memory first: a store that cannot be written does not keep the user signed in here.
      const next = yield* mutexOf(rt).withPermits(1)(Effect.gen(function*() {
        yield* stopSaving(rt)
        yield* detachInflight(rt)
        const next = yield* apply(
          rt,
          State.Event.SignedOut({ revision: MutableRef.get(rt.state).revision, elsewhere: false })
        )
        yield* publish(rt, SessionManager.SessionEvent.SignedOut({ reason: next.signedOut! }))
        yield* reschedule(rt)
        return next
      }))
      // Not under the mutex: the store may wait for a refresh holding its lock, whose
      // commit then finds the session signed out and discards its result.
      const written = yield* overwrite(rt, Option.none())
      yield* mutexOf(rt).withPermits(1)(
        apply(rt, State.Event.Saved({ generation: next.generation, revision: written.revision }))
      )
    })
  )

/**
 * Follows the store's change feed: another holder's session is taken (no
 * request), its sign-out signs this manager out. Runs for the manager's life.
 */
export const followChanges = (rt: Runtime): Effect.Effect<void> =>
  Stream.runForEach(rt.store.changes, (stored) =>
    // After this holder's own write in progress (a sign-in saves before it
    // applies): its echo then finds the revision already ours.
    writesOf(rt).withPermits(1)(
      mutexOf(rt).withPermits(1)(
        Effect.gen(function*() {
          const state = MutableRef.get(rt.state)
          const change = State.onChange(state, stored)
          if (change === "ignore") return
          yield* stopSaving(rt)
          yield* Effect.ignore(takeStored(rt, stored))
          yield* reschedule(rt)
        })
      )
    ))

/**
 * The event stream: `Initial` with the session held at the moment of
 * subscribing, then every change. Subscribing and reading the session happen
 * under the mutex that every change and publish takes, so nothing falls
 * between the two.
 */
export const events = (
  rt: Runtime,
  pubsub: PubSub.PubSub<SessionManager.SessionEvent>
): Stream.Stream<SessionManager.SessionEvent> =>
  Stream.unwrapScoped(
    mutexOf(rt).withPermits(1)(
      Effect.map(PubSub.subscribe(pubsub), (subscription) =>
        Stream.concat(
          Stream.succeed(
            SessionManager.SessionEvent.Initial({ session: Option.fromNullable(MutableRef.get(rt.state).session) })
          ),
          Stream.fromQueue(subscription)
        ))
    )
  )

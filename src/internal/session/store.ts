/**
 * The store as the engine uses it: every operation bounded in time (a store
 * that hangs must not hang the holder), an overwrite built from a read and a
 * fenced write, and the lock with its lease.
 *
 * Not public API: the package's exports keep `internal/` private.
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import type * as Session from "../../Session.js"
import * as SessionStore from "../../SessionStore.js"
import * as Metrics from "../metrics.js"
import type { WriteResult } from "./core.js"

/** The bounds on the store, in milliseconds. */
export interface Bounds {
  /** A read or a write. */
  readonly store: number
  /** Waiting for the store's lock (another holder may be refreshing under it). */
  readonly lock: number
}

// The errors of a deadline (ours), told apart from the store's own errors in the metrics.
const timeouts = new WeakSet<object>()

const timedOut = (operation: SessionStore.StoreError["operation"], millis: number) => {
  const error = new SessionStore.StoreError({
    operation,
    message: `the store did not answer within ${Duration.format(Duration.millis(millis))}`
  })
  timeouts.add(error)
  return error
}

const secondsSince = (clock: Clock.Clock, start: bigint): number => Number(clock.currentTimeNanosUnsafe() - start) / 1e9

const outcomeOf = (exit: Exit.Exit<unknown, unknown>): Metrics.StoreOutcome | undefined => {
  if (Exit.isSuccess(exit)) return "ok"
  const error = Option.getOrUndefined(Cause.findErrorOption(exit.cause))
  if (error === undefined) return undefined
  if (timeouts.has(error as object)) return "timeout"
  return (error as { readonly _tag?: unknown })._tag === "StoreConflictError" ? "conflict" : "error"
}

/**
 * `effect`, one store operation of the engine: in the span
 * `moon-refresh/SessionStore.<operation>` and counted in the metrics of
 * `context` (its holder's), with its duration on that context's clock. An
 * interruption (the holder closing) is not counted.
 */
const observed = <A, E>(
  store: SessionStore.Service,
  operation: "read" | "write" | "clear",
  context: Context.Context<never>,
  effect: Effect.Effect<A, E>
): Effect.Effect<A, E> => {
  const kind = Metrics.storeKindOf(store)
  return Effect.useSpan(
    `moon-refresh/SessionStore.${operation}`,
    { attributes: { "moon.store.kind": kind } },
    (span) => {
      const clock = Context.get(context, Clock.Clock)
      const start = clock.currentTimeNanosUnsafe()
      return Effect.onExit(
        Effect.withParentSpan(effect, span, { captureStackTrace: false }),
        (exit) =>
          Effect.sync(() => {
            const outcome = outcomeOf(exit)
            if (outcome === undefined) return
            span.attribute("moon.store.outcome", outcome)
            Metrics.storeOperationEnded(kind, operation, outcome, secondsSince(clock, start), context)
          })
      )
    }
  )
}

/**
 * `effect`, failing with a `StoreError` after `millis`. Not `Effect.timeout`:
 * the operation runs as a daemon. The caller's own (interruptible) wait
 * stopping stops it; the deadline does not, at once: an operation that timed
 * out may still land (a slow store, not a dead one), and a write that lands
 * late reaches the store's change feed, so the holder learns of it. A store
 * that never answers keeps that fiber: ending its operations is the store's
 * own timeout's job (every store of this package has one).
 *
 * The operation starts at once, in the caller's turn: a fork that waited for
 * the scheduler would let other work (HTTP answers, callers) in before a store
 * in memory has answered, which Effect 3's scheduler (microtasks) did not.
 */
export const bounded = <A, E>(
  millis: number,
  operation: "load" | "save" | "clear",
  effect: Effect.Effect<A, E>
): Effect.Effect<A, E | SessionStore.StoreError> =>
  Effect.gen(function*() {
    const done = yield* Deferred.make<A, E | SessionStore.StoreError>()
    const worker = yield* Effect.forkDetach(Deferred.complete(done, effect), { startImmediately: true })
    // Answered already (a store in memory): no deadline to set.
    if (Deferred.isDoneUnsafe(done)) return yield* Deferred.await(done)
    const timer = yield* Effect.forkDetach(
      Effect.andThen(Effect.sleep(millis), Deferred.fail(done, timedOut(operation, millis))),
      { startImmediately: true }
    )
    return yield* Deferred.await(done).pipe(
      Effect.onInterrupt(() => interruptFork(worker)),
      Effect.ensuring(interruptFork(timer))
    )
  })

/**
 * Asks `fiber` to stop, without waiting for it to (a fiber stuck in an
 * uninterruptible wait must not hold up the caller).
 */
const interruptFork = <A, E>(fiber: Fiber.Fiber<A, E>): Effect.Effect<void> =>
  Effect.sync(() => fiber.interruptUnsafe())

/** Reads the record, bounded; `context` is its holder's (for the metrics). */
export const read = (store: SessionStore.Service, bounds: Bounds, context: Context.Context<never>) =>
  observed(store, "read", context, bounded(bounds.store, "load", store.read))

/**
 * How many cells of this process hold each store object (a manager's, a
 * pool's key): built on it and not closed yet.
 */
const holders = new WeakMap<SessionStore.Service, number>()

/** A cell is built on `store`: one more holder of it in this process. */
export const hold = (store: SessionStore.Service): void => {
  holders.set(store, (holders.get(store) ?? 0) + 1)
}

/** A cell built on `store` closed. */
export const letGo = (store: SessionStore.Service): void => {
  const left = (holders.get(store) ?? 0) - 1
  if (left > 0) holders.set(store, left)
  else holders.delete(store)
}

/**
 * Whether a holder of `store` may not be its only one: other processes hold
 * it (`shared`), or another cell of this process was built on the same store
 * object (the managers of one process that a store in memory, a
 * `KeyValueStore` or a plain `make` coordinates). It changes as managers come
 * and go: read it when deciding, not once.
 */
export const hasOtherHolders = (store: SessionStore.Service): boolean => store.shared || (holders.get(store) ?? 0) > 1

/**
 * For each store no one else shares: the end, at the store, of the last write
 * this process sent it (not its caller's wait, which a timeout may end first).
 */
const lastWrite = new WeakMap<SessionStore.Service, Deferred.Deferred<void>>()

/**
 * `write`, sent once every write sent before it to `store` has ended at the
 * store. A store no one else shares may be a plain one (`SessionStore.make`
 * over load, save and clear), whose fence is a revision kept in memory,
 * checked, then a save: two steps, not one. A save its caller stopped waiting
 * for (a timeout) goes on, and the next write, checked meanwhile, would pass
 * too: the slow one could then land over the later one (a sign-out, retried
 * after a timeout, landing over the sign-in asked for after it). In order, a
 * late write lands before the next one is checked, which then sees it. A
 * shared store's write is one atomic compare-and-set (its contract): one
 * that lands late is refused by the fence, and needs no turn.
 *
 * A write never sent (its caller stopped while it waited) still hands on its
 * turn only once the one before it ended.
 */
const inTurn = <A, E>(store: SessionStore.Service, write: Effect.Effect<A, E>): Effect.Effect<A, E> =>
  store.shared ? write : Effect.suspend(() => {
    const before = lastWrite.get(store)
    const done = Deferred.makeUnsafe<void>()
    lastWrite.set(store, done)
    const turn = before === undefined ? Effect.void : Deferred.await(before)
    return Effect.andThen(turn, write).pipe(
      Effect.ensuring(Effect.andThen(
        turn,
        Effect.sync(() => {
          Deferred.doneUnsafe(done, Exit.void)
          if (lastWrite.get(store) === done) lastWrite.delete(store)
        })
      ))
    )
  })

// Conflicts in a row an overwrite rides out (other holders writing at that very moment).
const overwriteAttempts = 8

/**
 * Writes `record` fenced on `expected`. An `overwrite` goes over whatever is
 * stored: on a conflict it reads the record and writes again, fenced on what
 * it read (so a store that already is at `expected` costs one write, no read).
 */
export const write = (
  store: SessionStore.Service,
  bounds: Bounds,
  record: Option.Option<Session.Session>,
  expected: number,
  overwrite: boolean,
  context: Context.Context<never>
): Effect.Effect<WriteResult> => {
  const operation = Option.isSome(record) ? "save" : "clear"
  const fenced = (revision: number) =>
    observed(
      store,
      operation === "save" ? "write" : "clear",
      context,
      bounded(bounds.store, operation, inTurn(store, store.write(record, revision)))
    )
  const attempt = overwrite
    ? fenced(expected).pipe(
      Effect.catchTag(
        "StoreConflictError",
        () =>
          Effect.flatMap(read(store, bounds, context), (stored) => fenced(stored.revision)).pipe(
            Effect.retry({ while: (error) => error._tag === "StoreConflictError", times: overwriteAttempts - 2 })
          )
      )
    )
    : fenced(expected)
  return attempt.pipe(
    Effect.map((stored): WriteResult => ({ _tag: "Written", stored })),
    Effect.catch((error): Effect.Effect<WriteResult> =>
      error._tag === "StoreConflictError"
        ? Effect.map(
          Effect.option(read(store, bounds, context)),
          (stored): WriteResult => ({ _tag: "Conflict", stored })
        )
        : Effect.succeed({ _tag: "Failed", error })
    )
  )
}

/** The lock as held by one critical section. */
export type Lease = SessionStore.Lease

/**
 * Runs `use` under the store's lock, failing with a `StoreError` when the
 * lock is not granted within `bounds.lock`. Only the wait is bounded: once
 * granted, `use` runs as long as it needs.
 *
 * The wait alone is the span `moon-refresh/SessionStore.lock` and the lock's
 * metrics (`context`'s): `use` runs beside it, under the caller's span.
 */
export const withLease = <A, E>(
  store: SessionStore.Service,
  bounds: Bounds,
  context: Context.Context<never>,
  use: (lease: Lease) => Effect.Effect<A, E>
): Effect.Effect<A, E | SessionStore.StoreError> =>
  // Uninterruptible but for the two waits: the detached holder is stopped whenever this
  // stops, never left running between its fork and a wait (a holder left behind would
  // take the lock and keep it).
  Effect.uninterruptibleMask((restore) =>
    Effect.gen(function*() {
      const kind = Metrics.storeKindOf(store)
      const clock = Context.get(context, Clock.Clock)
      const start = clock.currentTimeNanosUnsafe()
      const granted = yield* Deferred.make<void>()
      const critical = (lease: Lease) => Effect.andThen(Deferred.succeed(granted, undefined), use(lease))
      // The span starts as the lock is asked for; `useSpan` does not make it the
      // parent of what runs under the lock (the holder's fiber keeps the caller's).
      const { holder, outcome } = yield* Effect.useSpan(
        "moon-refresh/SessionStore.lock",
        { attributes: { "moon.store.kind": kind } },
        (span) =>
          Effect.gen(function*() {
            // `SessionStore.make` gives every store a lease: its own, or one that cannot be lost.
            // Started at once, as `bounded` starts its operation. Detached: a caller that stops
            // waiting for the lock (its manager closing) asks the store to stop, but does not wait
            // for a store that never answers (a child fiber would be waited for).
            const holder = yield* Effect.forkDetach(store.withLease(critical), { startImmediately: true })
            const waited = yield* restore(
              Effect.raceFirst(Deferred.await(granted), Effect.asVoid(Fiber.await(holder))).pipe(
                Effect.timeoutOption(bounds.lock)
              )
            ).pipe(Effect.onInterrupt(() => interruptFork(holder)))
            // Not granted, and the holder ended: the store's lock failed.
            const outcome: Metrics.StoreOutcome = Option.isNone(waited)
              ? "timeout"
              : Deferred.isDoneUnsafe(granted)
              ? "ok"
              : "error"
            span.attribute("moon.store.outcome", outcome)
            Metrics.storeOperationEnded(kind, "lock", outcome, secondsSince(clock, start), context)
            return { holder, outcome }
          })
      )
      if (outcome === "timeout") {
        // Not awaited: a lock stuck in an uninterruptible wait must not hang us too.
        yield* interruptFork(holder)
        return yield* Effect.fail(
          new SessionStore.StoreError({
            operation: "lock",
            message: `the store's lock was not granted within ${Duration.format(Duration.millis(bounds.lock))}`
          })
        )
      }
      // Granted: stopping now stops `use` and waits for the store to let the lock go.
      return yield* restore(Fiber.join(holder)).pipe(Effect.onInterrupt(() => Fiber.interrupt(holder)))
    })
  )

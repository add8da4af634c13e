/**
 * A cross-process lock on a file, as a lease with an owner: the protocol is
 * in `fileLease.ts` (entries in `<file>.lock/`, one per generation, each
 * written only by its owner; staleness judged by the waiter's own monotonic
 * clock). This module runs it with Effect.
 *
 * - Waiting is one attempt at a time, retried on a schedule, so it is
 *   interruptible and bounded; a waiter keeps what it saw between attempts,
 *   which is how it tells that a holder stopped renewing.
 * - A holding renews its entry every third of the lease. It counts itself
 *   out (`lost`) once a renewal comes later than `lease - margin` after the
 *   one before (it was frozen or stalled): from then on a waiter may have
 *   taken over, so it renews, writes and ensures nothing more.
 * - Release marks the holder's own entry `done`, then removes it if its
 *   lease still runs: it can never free a lock another process holds,
 *   whatever happened meanwhile.
 * - A lock taken is registered for release in the same uninterruptible step
 *   that took it.
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Random from "effect/Random"
import * as Result from "effect/Result"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import * as Semaphore from "effect/Semaphore"
import type * as Fs from "node:fs/promises"
import { capMessage } from "../../internal/message.js"
import { type Lease, StoreError } from "../../SessionStore.js"
import * as FileLease from "./fileLease.js"

/** One time the lock was taken. */
export interface Holding {
  /** Set when the lock was released, or lost (a renewal came too late, or the entry was removed). */
  readonly lost: () => boolean
  /**
   * Whether the lock is still this holding's: renews it now and checks that
   * at least a quarter of the lease is left, so nobody can take it over
   * before the next step.
   */
  readonly stillHeld: Effect.Effect<boolean>
  /** See `SessionStore.Lease`. */
  readonly ensure: Lease["ensure"]
}

export interface LockOptions {
  /** The file the lock protects; the lock is the directory `<file>.lock` beside it. */
  readonly file: string
  readonly lease: Duration.Duration
  readonly timeout: Duration.Duration
}

/** The lock is held by someone else (another process, or another store of this one). */
export class Busy extends Data.TaggedError("Busy") {}

// `cause`: a file-system error on the lock's directory (its entries hold owners, never a token).
const lockError = (message: string, cause?: unknown) =>
  new StoreError({
    operation: "lock",
    message: capMessage(message),
    ...(cause === undefined ? {} : { cause })
  })

const messageOf = (error: unknown) => error instanceof Error ? error.message : String(error)

/** The part of the lease a holder keeps in reserve: it acts only while `lease - margin` has not passed. */
export const marginOf = (lease: number): number => lease / 20

/** Milliseconds on the monotonic clock (`Clock.monotonicTimeNanos`: `process.hrtime` unless a TestClock is given). */
export const monotonic: Effect.Effect<number> = Effect.map(Clock.monotonicTimeNanos, (nanos) => Number(nanos) / 1e6)

// Quick at first (a refresh holds the lock for a few milliseconds), then at
// most every 100 ms; jittered so waiters in several processes do not retry in step.
const waiting = Schedule.min([Schedule.exponential("5 millis", 1.5), Schedule.spaced("100 millis")]).pipe(
  Schedule.jittered
)

/** What a waiter saw of the lock's entries, kept across its attempts. */
export interface Watch {
  seen: FileLease.Observations
}

export const newWatch = (): Watch => ({ seen: new Map() })

const newOwner = Effect.map(
  Effect.all([
    Random.nextIntBetween(0, 0x7fffffff, { halfOpen: true }),
    Random.nextIntBetween(0, 0x7fffffff, { halfOpen: true })
  ]),
  ([a, b]) => `${process.pid}-${a.toString(36)}${b.toString(36)}`
)

const fsCall = <A>(what: string, run: () => Promise<A>) =>
  Effect.tryPromise({ try: run, catch: (error) => lockError(`${what}: ${messageOf(error)}`, error) })

interface Taken {
  readonly gen: number
  readonly owner: string
  readonly handle: Fs.FileHandle
  /** Before the entry was created: when its text began, at the earliest. */
  readonly createdAt: number
}

/**
 * One attempt: lists the entries, and if every one is done or stale, creates
 * the next generation and checks that nothing below came back to life
 * meanwhile (else withdraws). `Busy` when the lock is someone else's.
 */
const take = (options: LockOptions, watch: Watch): Effect.Effect<Taken, Busy | StoreError> =>
  Effect.gen(function*() {
    const dir = `${options.file}.lock`
    const lease = Duration.toMillis(options.lease)
    yield* fsCall(`cannot create the lock directory ${dir}`, () => FileLease.prepare(dir))
    const readStart = yield* monotonic
    const entries = yield* fsCall(`cannot read the lock ${dir}`, () => FileLease.list(dir))
    const seen = FileLease.observe(watch.seen, entries, yield* monotonic)
    watch.seen = seen
    if (!FileLease.isFree(entries, seen, readStart, lease)) return yield* new Busy()
    const gen = FileLease.nextGen(entries)
    const owner = yield* newOwner
    const own = FileLease.text(owner, 0, "held")
    const createdAt = yield* monotonic
    const handle = yield* fsCall(`cannot take the lock ${dir}`, () => FileLease.create(dir, gen, own))
    if (handle === undefined) return yield* new Busy()
    const checkStart = yield* monotonic
    const after = yield* fsCall(`cannot read the lock ${dir}`, () => FileLease.list(dir)).pipe(
      Effect.tapError(() => withdraw(handle, owner))
    )
    if (!FileLease.mayEnter(gen, own, after, seen, checkStart, lease)) {
      // A holder renewed (or someone else came in) between the listing and the creation.
      yield* withdraw(handle, owner)
      watch.seen = FileLease.observe(seen, after, yield* monotonic)
      return yield* new Busy()
    }
    yield* Effect.promise(() => FileLease.removeBelow(dir, after, gen))
    return { gen, owner, handle, createdAt }
  })

// Marks one's own entry done and lets go of it; best effort (a stale entry is taken over anyway).
const withdraw = (handle: Fs.FileHandle, owner: string, beat = 0) =>
  Effect.promise(() =>
    FileLease.rewrite(handle, FileLease.text(owner, beat, "done")).then(() => undefined, () => undefined)
      .finally(() => handle.close().catch(() => undefined))
  )

interface Held extends Holding {
  /** Renews now: `false` once the lock is lost (or released). */
  readonly renew: Effect.Effect<boolean>
  readonly release: Effect.Effect<void>
}

/** The holding of a generation taken: its renewals, its checks and its release. */
const hold = (options: LockOptions, taken: Taken): Held => {
  const dir = `${options.file}.lock`
  const lease = Duration.toMillis(options.lease)
  const limit = lease - marginOf(lease)
  const state = { status: "held" as "held" | "lost" | "released", beat: 0, lastBeat: taken.createdAt }
  const renewals = Semaphore.makeUnsafe(1)

  const lose = (why: string) =>
    Effect.suspend(() => {
      if (state.status !== "held") return Effect.succeed(false)
      state.status = "lost"
      return Effect.as(
        Effect.logWarning(`moon-refresh: the lock ${dir} was lost (${why}); nothing more is done under it`),
        false
      )
    })

  const renewOnce = Effect.gen(function*() {
    if (state.status !== "held") return false
    const start = yield* monotonic
    // A waiter may have watched the entry unchanged for a lease since the last renewal began.
    if (start - state.lastBeat >= limit) return yield* lose("not renewed in time: the process was frozen or stalled")
    // Counted before the write: whatever happens to it, the next text differs from this one.
    const own = FileLease.text(taken.owner, ++state.beat, "held")
    const written = yield* Effect.result(fsCall("renewal", () => FileLease.rewrite(taken.handle, own)))
    if (Result.isFailure(written)) return false
    const entries = yield* Effect.result(fsCall("renewal", () => FileLease.list(dir)))
    const end = yield* monotonic
    if (Result.isFailure(entries)) return false
    if (!entries.success.some((entry) => entry.gen === taken.gen && entry.text === own)) {
      return yield* lose("its entry was removed or replaced")
    }
    if (end - state.lastBeat >= limit) return yield* lose("the renewal came too late")
    state.lastBeat = start
    return true
  })
  const renew = renewals.withPermits(1)(renewOnce)

  const ensure = (atLeast: Duration.Input): Effect.Effect<void, StoreError> =>
    Effect.gen(function*() {
      // A lease shorter than what is asked for was chosen so: it is asked for
      // nearly whole (a renewal that has just been made).
      const wanted = Math.min(Duration.toMillis(Duration.fromInputUnsafe(atLeast)), limit * 0.9)
      if (!(yield* renew)) {
        return yield* lockError(
          state.status === "held" ? `cannot renew the lock ${dir}` : `the lock ${dir} is no longer this holder's`
        )
      }
      const entries = yield* fsCall(`cannot read the lock ${dir}`, () => FileLease.list(dir))
      // Someone judged the entry stale (or is about to learn it was not): no new request now.
      if (entries.some((entry) => entry.gen > taken.gen && !FileLease.isDone(entry.text))) {
        return yield* lockError(`another holder is taking over the lock ${dir}`)
      }
      const left = state.lastBeat + limit - (yield* monotonic)
      if (left < wanted) return yield* lockError(`the lock ${dir} has ${Math.floor(left)} ms left, not ${wanted} ms`)
    })

  const release = renewals.withPermits(1)(Effect.gen(function*() {
    const was = state.status
    state.status = "released"
    if (was === "released") return
    // Within its lease nobody can have taken the entry over, so removing it by name removes this holder's.
    const inLease = was === "held" && (yield* monotonic) - state.lastBeat < limit
    yield* withdraw(taken.handle, taken.owner, state.beat + 1)
    if (inLease) yield* Effect.promise(() => FileLease.remove(dir, taken.gen))
  }))

  return {
    lost: () => state.status !== "held",
    stillHeld: Effect.isSuccess(ensure(Duration.millis(lease / 4))),
    ensure,
    renew,
    release
  }
}

// Renewals are paced in real time whatever the Clock (other processes read
// them in real time); the gaps between them are measured on the Clock. The
// real clock is the one the `Clock` reference gives when none is provided.
const realClock = Clock.Clock.defaultValue()
const realSleep = (duration: Duration.Duration) => Effect.provideService(Effect.sleep(duration), Clock.Clock, realClock)

/**
 * One attempt at the lock. Its release is added to the current scope in the
 * same uninterruptible step that took it, with the renewals (every third of
 * the lease) that run until then, so an interruption never leaves it held.
 */
export const attempt = (
  options: LockOptions,
  watch: Watch = newWatch()
): Effect.Effect<Holding, Busy | StoreError, Scope.Scope> =>
  Effect.acquireRelease(Effect.map(take(options, watch), (taken) => hold(options, taken)), (held) => held.release)
    .pipe(
      Effect.tap((held) =>
        Effect.forkScoped(
          realSleep(Duration.millis(Duration.toMillis(options.lease) / 3)).pipe(
            Effect.andThen(held.renew),
            Effect.repeat({ while: (renewed) => renewed || !held.lost() })
          )
        )
      )
    )

/**
 * Retries `effect` while it fails with `Busy`, for at most `options.timeout`;
 * then fails with a `StoreError`. Only the waits between attempts are cut
 * short by the timeout, never an attempt that is running.
 */
export const retryWhileBusy = <A, E, R>(
  options: LockOptions,
  effect: Effect.Effect<A, E | Busy, R>
): Effect.Effect<A, E | StoreError, R> =>
  effect.pipe(
    Effect.retry({
      schedule: waiting.pipe(Schedule.upTo({ duration: options.timeout })),
      while: (error) => error instanceof Busy
    }),
    Effect.catchIf(
      (error): error is Busy => error instanceof Busy,
      () =>
        Effect.fail(lockError(`the lock ${options.file}.lock was still held after ${Duration.format(options.timeout)}`))
    )
  )

/**
 * Runs `use` with the lock held, releasing it when `use` ends however it
 * ends. Waits for the lock, interruptibly, at most `options.timeout`.
 */
export const withHolding = <A, E, R>(
  options: LockOptions,
  use: (holding: Holding) => Effect.Effect<A, E, R>
): Effect.Effect<A, E | StoreError, R> =>
  Effect.acquireUseRelease(
    Scope.make(),
    (scope) =>
      Effect.flatMap(
        Effect.suspend(() => {
          const watch = newWatch()
          return Scope.provide(retryWhileBusy(options, attempt(options, watch)), scope)
        }),
        use
      ),
    (scope, exit) => Scope.close(scope, Exit.isSuccess(exit) ? Exit.void : exit)
  )

/** {@link withHolding}, one attempt: fails with `Busy` when someone else holds the lock. */
export const withHoldingOnce = <A, E, R>(
  options: LockOptions,
  watch: Watch,
  use: (holding: Holding) => Effect.Effect<A, E, R>
): Effect.Effect<A, E | Busy | StoreError, R> =>
  Effect.acquireUseRelease(
    Scope.make(),
    (scope) => Effect.flatMap(Scope.provide(attempt(options, watch), scope), use),
    (scope, exit) => Scope.close(scope, Exit.isSuccess(exit) ? Exit.void : exit)
  )
/** The lock as one store uses it: see {@link makeStoreLock}. */
export interface StoreLock {
  /**
   * Runs `critical` holding the lock. Re-entrant: a fiber that holds it
   * through this store (or was forked by one that does) runs `critical` at
   * once. Fibers of this process wait in line in memory rather than polling.
   */
  readonly withLock: <A, E, R>(critical: Effect.Effect<A, E, R>) => Effect.Effect<A, E | StoreError, R>
  /** {@link withLock}, giving `use` the lease of the holding it runs under. */
  readonly withLease: <A, E, R>(use: (lease: Lease) => Effect.Effect<A, E, R>) => Effect.Effect<A, E | StoreError, R>
  /**
   * Runs a short step (a write) holding the lock: the caller's own, or the
   * one this store's running `withLock` holds (a write outside it, such as a
   * sign-out while a refresh waits for the caller's mutex, must not wait for
   * it), or one taken for the step.
   */
  readonly underLock: <A, E, R>(
    use: (holding: Holding) => Effect.Effect<A, E, R>
  ) => Effect.Effect<A, E | StoreError, R>
}

// More than a store ever has writes in flight at once.
const maxBorrowers = 64

// Each store lock's reference has a key of its own.
let storeLocks = 0

export const makeStoreLock = (options: LockOptions): Effect.Effect<StoreLock> =>
  Effect.gen(function*() {
    // The holding the current fiber runs under, through this store; fibers it
    // forks inherit it.
    const held = Context.Reference<Option.Option<Holding>>(`moon-refresh/fileLock/held/${++storeLocks}`, {
      defaultValue: Option.none
    })
    const current = Effect.map(Effect.service(held), Option.filter((holding) => !holding.lost()))
    const withHeld = <A, E, R>(holding: Holding, effect: Effect.Effect<A, E, R>) =>
      Effect.provideService(effect, held, Option.some(holding))
    const inLine = yield* Semaphore.make(1)
    // The holding of the running `withLock`, lent to writes made outside it;
    // the lock is released only once they are done.
    let lent: Holding | undefined
    const borrowers = yield* Semaphore.make(maxBorrowers)

    const withLease = <A, E, R>(use: (lease: Lease) => Effect.Effect<A, E, R>): Effect.Effect<A, E | StoreError, R> =>
      Effect.flatMap(current, (mine) =>
        Option.isSome(mine) ?
          use(mine.value) :
          inLine.withPermits(1)(withHolding(options, (holding) =>
            Effect.acquireUseRelease(
              Effect.sync(() => {
                lent = holding
              }),
              () => withHeld(holding, use(holding)),
              () =>
                Effect.andThen(
                  Effect.sync(() => {
                    lent = undefined
                  }),
                  borrowers.withPermits(maxBorrowers)(Effect.void)
                )
            ))))

    const withLock = <A, E, R>(critical: Effect.Effect<A, E, R>): Effect.Effect<A, E | StoreError, R> =>
      withLease(() => critical)

    const borrow = <A, E, R>(use: (holding: Holding) => Effect.Effect<A, E, R>) =>
      borrowers.withPermits(1)(Effect.suspend(() =>
        lent !== undefined && !lent.lost() ? Effect.asSome(withHeld(lent, use(lent))) : Effect.succeedNone
      ))

    const underLock = <A, E, R>(
      use: (holding: Holding) => Effect.Effect<A, E, R>
    ): Effect.Effect<A, E | StoreError, R> =>
      Effect.flatMap(current, (mine) =>
        Option.isSome(mine) ? use(mine.value) : Effect.suspend(() => {
          const watch = newWatch()
          return retryWhileBusy(
            options,
            Effect.flatMap(borrow(use), (borrowed) =>
              Option.isSome(borrowed)
                ? Effect.succeed(borrowed.value)
                : withHoldingOnce(options, watch, (holding) =>
                  withHeld(holding, use(holding))))
          )
        }))

    return { withLock, withLease, underLock }
  })

/**
 * A cross-process lock on a file, as a lease: `proper-lockfile` creates
 * `<file>.lock` with `mkdir` (atomic on local and network file systems) and
 * keeps touching its mtime while held; a lock whose mtime is older than the
 * lease belongs to a dead (or frozen) holder and is taken over. A holder killed
 * with SIGKILL so keeps the lock for one lease at most.
 *
 * Effect drives the waiting (one `mkdir` attempt at a time, retried on a
 * schedule), so waiting is interruptible and bounded, and a lock taken is
 * registered for release in the same uninterruptible step that took it.
 */
import { Data, Duration, Effect, Exit, FiberRef, Option, Schedule, Scope } from "effect"
import * as Fs from "node:fs/promises"
import * as Lockfile from "proper-lockfile"
import * as RefreshError from "../RefreshError.js"
import { StoreError } from "../SessionStore.js"

/** One time the lock was taken. */
export interface Holding {
  /** Set when the lock was released, or lost (proper-lockfile's `onCompromised`). */
  readonly lost: () => boolean
  /**
   * Whether the lock is still this holding's, checked on disk: the lock
   * directory is the one this holding created, and its lease has more than a
   * quarter left, so nobody can judge it stale before the next step.
   */
  readonly stillHeld: Effect.Effect<boolean>
}

export interface LockOptions {
  /** The file the lock protects; the lock is `<file>.lock` beside it. */
  readonly file: string
  readonly lease: Duration.Duration
  readonly timeout: Duration.Duration
}

/** The lock is held by someone else (another process, or another store of this one). */
export class Busy extends Data.TaggedError("Busy") {}

const lockError = (message: string) => new StoreError({ operation: "lock", message: RefreshError.capMessage(message) })

const messageOf = (error: unknown) => error instanceof Error ? error.message : String(error)

// Quick at first (a refresh holds the lock for a few milliseconds), then at
// most every 100 ms; jittered so waiters in several processes do not retry in step.
const waiting = Schedule.exponential("5 millis", 1.5).pipe(
  Schedule.union(Schedule.spaced("100 millis")),
  Schedule.jittered
)

/**
 * One attempt at the lock (a `mkdir`, and a takeover if the lock is stale).
 * Its release is added to the current scope in the same uninterruptible step
 * that took it, so an interruption never leaves it held.
 */
export const attempt = (options: LockOptions): Effect.Effect<Holding, Busy | StoreError, Scope.Scope> => {
  const lockPath = `${options.file}.lock`
  const leaseMillis = Duration.toMillis(options.lease)
  return Effect.acquireRelease(
    Effect.tryPromise({
      try: async () => {
        const state = { released: false, compromised: false }
        const release = await Lockfile.lock(options.file, {
          stale: leaseMillis,
          realpath: false,
          lockfilePath: lockPath,
          // The default throws from a timer, which would kill the process.
          onCompromised: () => {
            state.compromised = true
          }
        })
        const { ino } = await Fs.stat(lockPath)
        return { release, ino, state }
      },
      catch: (error) =>
        typeof error === "object" && error !== null && "code" in error && error.code === "ELOCKED"
          ? new Busy()
          : lockError(`cannot take the lock ${lockPath}: ${messageOf(error)}`)
    }),
    ({ release, state }) =>
      Effect.suspend(() => {
        state.released = true
        // ERELEASED (it was lost) or ENOENT: nothing left to release.
        return Effect.promise(() => release().catch(() => undefined))
      })
  ).pipe(
    Effect.map(({ ino, state }): Holding => {
      const lost = () => state.released || state.compromised
      return {
        lost,
        stillHeld: Effect.promise(() =>
          Fs.stat(lockPath).then(
            // The file system's mtimes are on the OS clock, not on Effect's Clock.
            (stat) => !lost() && stat.ino === ino && Date.now() - stat.mtimeMs < leaseMillis * 0.75,
            () => false
          )
        )
      }
    })
  )
}

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
      schedule: waiting.pipe(Schedule.upTo(options.timeout)),
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
    (scope) => Effect.flatMap(Scope.extend(retryWhileBusy(options, attempt(options)), scope), use),
    (scope, exit) => Scope.close(scope, Exit.isSuccess(exit) ? Exit.void : exit)
  )

/** {@link withHolding}, one attempt: fails with `Busy` when someone else holds the lock. */
export const withHoldingOnce = <A, E, R>(
  options: LockOptions,
  use: (holding: Holding) => Effect.Effect<A, E, R>
): Effect.Effect<A, E | Busy | StoreError, R> =>
  Effect.acquireUseRelease(
    Scope.make(),
    (scope) => Effect.flatMap(Scope.extend(attempt(options), scope), use),
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

export const makeStoreLock = (options: LockOptions): Effect.Effect<StoreLock> =>
  Effect.gen(function*() {
    const held = FiberRef.unsafeMake<Option.Option<Holding>>(Option.none())
    const current = Effect.map(FiberRef.get(held), Option.filter((holding) => !holding.lost()))
    const withHeld = <A, E, R>(holding: Holding, effect: Effect.Effect<A, E, R>) =>
      Effect.locally(effect, held, Option.some(holding))
    const inLine = yield* Effect.makeSemaphore(1)
    // The holding of the running `withLock`, lent to writes made outside it;
    // the lock is released only once they are done.
    let lent: Holding | undefined
    const borrowers = yield* Effect.makeSemaphore(maxBorrowers)

    const withLock = <A, E, R>(critical: Effect.Effect<A, E, R>): Effect.Effect<A, E | StoreError, R> =>
      Effect.flatMap(current, (mine) =>
        Option.isSome(mine) ?
          critical :
          inLine.withPermits(1)(withHolding(options, (holding) =>
            Effect.acquireUseRelease(
              Effect.sync(() => {
                lent = holding
              }),
              () => withHeld(holding, critical),
              () =>
                Effect.zipRight(
                  Effect.sync(() => {
                    lent = undefined
                  }),
                  borrowers.withPermits(maxBorrowers)(Effect.void)
                )
            ))))

    const borrow = <A, E, R>(use: (holding: Holding) => Effect.Effect<A, E, R>) =>
      borrowers.withPermits(1)(Effect.suspend(() =>
        lent !== undefined && !lent.lost() ? Effect.asSome(withHeld(lent, use(lent))) : Effect.succeedNone
      ))

    const underLock = <A, E, R>(
      use: (holding: Holding) => Effect.Effect<A, E, R>
    ): Effect.Effect<A, E | StoreError, R> =>
      Effect.flatMap(current, (mine) =>
        Option.isSome(mine) ? use(mine.value) : retryWhileBusy(
          options,
          Effect.flatMap(borrow(use), (borrowed) =>
            Option.isSome(borrowed)
              ? Effect.succeed(borrowed.value)
              : withHoldingOnce(options, (holding) =>
                withHeld(holding, use(holding))))
        ))

    return { withLock, underLock }
  })

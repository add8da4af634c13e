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
import { Duration, Effect, Exit, Schedule, Scope } from "effect"
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

// ELOCKED: someone else holds it. Anything else is an I/O failure.
const isHeldElsewhere = (error: unknown) =>
  typeof error === "object" && error !== null && "code" in error && error.code === "ELOCKED"

const lockError = (message: string) => new StoreError({ operation: "lock", message: RefreshError.capMessage(message) })

const messageOf = (error: unknown) => error instanceof Error ? error.message : String(error)

// Quick at first (a refresh holds the lock for a few milliseconds), then at
// most every 100 ms; jittered so waiters in several processes do not retry in step.
const waiting = Schedule.exponential("5 millis", 1.5).pipe(
  Schedule.union(Schedule.spaced("100 millis")),
  Schedule.jittered
)

/**
 * Takes the lock, waiting at most `timeout`, and adds its release to the
 * current scope.
 */
export const acquire = (options: LockOptions): Effect.Effect<Holding, StoreError, Scope.Scope> => {
  const lockPath = `${options.file}.lock`
  const leaseMillis = Duration.toMillis(options.lease)
  const attempt = Effect.acquireRelease(
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
      catch: (error) => error
    }),
    ({ release, state }) =>
      Effect.suspend(() => {
        state.released = true
        // ERELEASED (it was lost) or ENOENT: nothing left to release.
        return Effect.promise(() => release().catch(() => undefined))
      })
  )
  return attempt.pipe(
    Effect.retry({ schedule: waiting, while: isHeldElsewhere }),
    Effect.timeoutFail({
      duration: options.timeout,
      onTimeout: () => lockError(`the lock ${lockPath} was still held after ${Duration.format(options.timeout)}`)
    }),
    Effect.mapError((error) =>
      error instanceof StoreError ? error : lockError(`cannot take the lock ${lockPath}: ${messageOf(error)}`)
    ),
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
 * Runs `use` with the lock held, releasing it when `use` ends however it
 * ends. Waiting for the lock is interruptible.
 */
export const withHolding = <A, E, R>(
  options: LockOptions,
  use: (holding: Holding) => Effect.Effect<A, E, R>
): Effect.Effect<A, E | StoreError, R> =>
  Effect.acquireUseRelease(
    Scope.make(),
    (scope) => Effect.flatMap(Scope.extend(acquire(options), scope), use),
    (scope, exit) => Scope.close(scope, Exit.isSuccess(exit) ? Exit.void : exit)
  )

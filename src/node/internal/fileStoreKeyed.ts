/**
 * The keyed form of `NodeSessionStore`: one session file per key in one
 * directory, each with its own lock and record, and one watcher on the
 * directory shared by every key whose change feed runs.
 *
 * File names: the hex SHA-256 of the key's UTF-8 bytes, `<64 hex>.json`.
 * Fixed length, lower case, only `[0-9a-f]`: no path separator, no `..`, no
 * NUL, no name too long, and no two keys that differ only in case can meet on
 * a case-insensitive file system. Not reversible: to find a key's file,
 * compute its name (`NodeSessionStore.keyFileName`).
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Queue from "effect/Queue"
import * as RcRef from "effect/RcRef"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Semaphore from "effect/Semaphore"
import * as Stream from "effect/Stream"
import { createHash } from "node:crypto"
import * as NodeFs from "node:fs"
import * as Fs from "node:fs/promises"
import * as Path from "node:path"
import { capMessage } from "../../internal/message.js"
import * as StoreKey from "../../internal/storeKey.js"
import type * as SessionStore from "../../SessionStore.js"
import * as FileStore from "./fileStore.js"

/** The file name of `key`'s session. */
export const fileNameOf = (key: string): string => `${createHash("sha256").update(key, "utf8").digest("hex")}.json`

const ours = /^[0-9a-f]{64}\.json$/

// Temporary files are `.<name>.<pid>.<n>.tmp` (see `FileStore.replace`).
const isTemporary = (name: string) => name.startsWith(".") && ours.test(name.slice(1, 70)) && name[70] === "."

/** The directory's watch, with what the tests look at. */
export interface KeyedWatch extends FileStore.Watch {
  /** Files followed now (a file followed twice counts once). */
  readonly followed: () => number
  /** Whether the watcher and the poll run (only while something is followed). */
  readonly running: () => boolean
}

const messageOf = (error: unknown) => capMessage(error instanceof Error ? error.message : String(error))

/**
 * One `fs.watch` on the directory and one poll, started when the first file
 * is followed and stopped when the last one is left: a pool of 100,000 keys
 * holds one watcher, not one per key. A notification wakes the followers of
 * the file it names (all of them when it names none).
 *
 * The poll, for file systems whose notifications are lost, stats the
 * directory every `pollInterval`: a write renames a file into it, which
 * changes the directory's times. Only then (or while those times are so
 * recent that a second write could share them) does it wake every follower
 * to re-read, so a quiet directory costs one `stat` a poll.
 */
export const makeWatch = (dir: string, pollInterval: number): Effect.Effect<KeyedWatch, never, Scope.Scope> =>
  Effect.gen(function*() {
    const followers = new Map<string, Set<() => void>>()
    let running = false
    const wake = (name: string) => followers.get(name)?.forEach((follower) => follower())
    const wakeAll = () => followers.forEach((set) => set.forEach((follower) => follower()))

    const notifications = Stream.callback<void, unknown>((queue) =>
      Effect.acquireRelease(
        Effect.try({
          try: () =>
            NodeFs.watch(dir, { persistent: false }, (_event, name) => {
              if (name === null) wakeAll()
              else wake(name)
            }).on("error", (error) => Queue.failCauseUnsafe(queue, Cause.fail(error))),
          catch: (error) => error
        }),
        (watcher) => Effect.sync(() => watcher.close())
      )
    ).pipe(
      Stream.runDrain,
      Effect.tapError((error) =>
        Effect.logDebug(`NodeSessionStore: watching ${dir} failed (${messageOf(error)}); polling until it restarts`)
      ),
      Effect.retry(Schedule.spaced(pollInterval)),
      Effect.ignore
    )

    let previous: string | undefined
    const poll = Effect.promise(() => Fs.stat(dir, { bigint: true }).catch(() => undefined)).pipe(
      Effect.map((stat) => {
        if (stat === undefined) return
        const times = `${stat.mtimeNs}:${stat.ctimeNs}`
        // File times are on the OS clock, and some file systems keep them in whole seconds.
        const recent = Date.now() - Number(stat.mtimeNs / 1_000_000n) < 2_000
        if (times !== previous || recent) wakeAll()
        previous = times
      })
    )

    const watching = yield* RcRef.make({
      acquire: Effect.gen(function*() {
        yield* Effect.acquireRelease(
          Effect.sync(() => {
            running = true
            previous = undefined
          }),
          () =>
            Effect.sync(() => {
              running = false
            })
        )
        yield* Effect.forkScoped(notifications)
        // The first poll only notes the directory's times: each follower read its file when it began.
        yield* Effect.forkScoped(Effect.andThen(
          Effect.sleep(pollInterval),
          Effect.repeat(poll, Schedule.spaced(pollInterval))
        ))
      })
    })

    const follow = (base: string, follower: () => void): Effect.Effect<void, never, Scope.Scope> =>
      Effect.andThen(
        Effect.acquireRelease(
          Effect.sync(() => {
            const set = followers.get(base) ?? new Set()
            set.add(follower)
            followers.set(base, set)
          }),
          () =>
            Effect.sync(() => {
              const set = followers.get(base)
              set?.delete(follower)
              if (set?.size === 0) followers.delete(base)
            })
        ),
        RcRef.get(watching)
      )

    return {
      follow,
      // A poll that wakes every follower must not start a read per key at once.
      reads: yield* Semaphore.make(16),
      followed: () => followers.size,
      running: () => running
    }
  })

/** The keyed store, and its watch for the tests. */
export interface KeyedFiles {
  readonly keyed: SessionStore.Keyed
  readonly watch: KeyedWatch
}

/**
 * The keyed store on a prepared directory. `forKey` checks the key and
 * builds its store without any I/O: the pool calls it each time it takes a
 * session in, and nothing of a key outlives its last user but its file.
 */
export const makeKeyed = (dir: string, config: FileStore.Config): Effect.Effect<KeyedFiles, never, Scope.Scope> =>
  Effect.gen(function*() {
    yield* FileStore.removeTemporaries(dir, isTemporary, 60_000)
    const watch = yield* makeWatch(dir, config.pollInterval)
    const forKey = (key: string) =>
      Effect.flatMap(StoreKey.check("NodeSessionStore", key), (valid) => {
        const base = fileNameOf(valid)
        return FileStore.makeFollowedService({ file: Path.join(dir, base), dir, base }, config, watch)
      })
    return { keyed: { forKey }, watch }
  })

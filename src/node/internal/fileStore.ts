/**
 * The session file of `NodeSessionStore`: where it lives and who may read
 * it, reading it, replacing it atomically, and noticing when another process
 * replaced it. The lock is in `fileLock.ts`; the public module ties them
 * together into a `SessionStore`.
 */
import * as Cause from "effect/Cause"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as PubSub from "effect/PubSub"
import * as Queue from "effect/Queue"
import * as Result from "effect/Result"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Semaphore from "effect/Semaphore"
import * as Stream from "effect/Stream"
import * as NodeFs from "node:fs"
import * as Fs from "node:fs/promises"
import * as Path from "node:path"
import { capMessage } from "../../internal/message.js"
import * as Metrics from "../../internal/metrics.js"
import type * as Session from "../../Session.js"
import * as SessionStore from "../../SessionStore.js"
import * as FileLock from "./fileLock.js"

/** Why a path was refused when the store was built. */
export type RefusalReason = "InsecurePermissions" | "NotAFile" | "NotADirectory" | "Unavailable"

export interface Refusal {
  readonly path: string
  readonly reason: RefusalReason
  readonly mode?: number | undefined
  readonly message: string
}

/** Where the session file is: its absolute path, its directory and its name there. */
export interface Location {
  readonly file: string
  readonly dir: string
  readonly base: string
}

const octal = (mode: number) => (mode & 0o777).toString(8).padStart(4, "0")

const codeOf = (error: unknown): string | undefined =>
  typeof error === "object" && error !== null && "code" in error && typeof error.code === "string"
    ? error.code
    : undefined

const messageOf = (error: unknown) => capMessage(error instanceof Error ? error.message : String(error))

// Modes mean nothing on Windows (ACLs decide there): no mode is set or checked.
const checksModes = process.platform !== "win32"

const refuseReadable = (path: string, mode: number, kind: "file" | "directory"): Refusal => ({
  path,
  reason: "InsecurePermissions",
  mode: mode & 0o777,
  message: `NodeSessionStore: the ${kind} ${path} has mode ${
    octal(mode)
  }: other users can reach the tokens it would hold; run \`chmod ${kind === "file" ? "600" : "700"} ${path}\``
})

/**
 * Creates the directory (mode 0700, whatever the umask) if it is missing, and
 * refuses one that other users can read, or that is not a directory. Gives
 * its absolute path.
 */
const prepareDir = async (path: string): Promise<Result.Result<string, Refusal>> => {
  const dir = Path.resolve(path)
  const created = await Fs.mkdir(dir, { recursive: true, mode: 0o700 })
  // `mode` passes through the umask: set it exactly on every directory made here.
  if (created !== undefined && checksModes) {
    for (let at = dir; at.length >= created.length; at = Path.dirname(at)) await Fs.chmod(at, 0o700)
  }
  const dirStat = await Fs.stat(dir)
  if (!dirStat.isDirectory()) {
    return Result.fail({
      path: dir,
      reason: "NotADirectory",
      message: `NodeSessionStore: ${dir} is not a directory`
    })
  }
  if (checksModes && (dirStat.mode & 0o077) !== 0) {
    return Result.fail(refuseReadable(dir, dirStat.mode, "directory"))
  }
  return Result.succeed(dir)
}

const unavailable = (path: string) => (error: unknown): Refusal => ({
  path,
  reason: "Unavailable",
  message: `NodeSessionStore: cannot use ${path}: ${messageOf(error)}`
})

/**
 * The directory of a keyed store, as {@link prepare} prepares a file's:
 * created 0700 if missing, refused if other users can read it.
 */
export const prepareDirectory = (path: string): Effect.Effect<string, Refusal> =>
  Effect.tryPromise({ try: () => prepareDir(path), catch: unavailable(path) }).pipe(Effect.flatMap(Effect.fromResult))

/**
 * Creates the directory (mode 0700, whatever the umask) if it is missing,
 * and refuses a directory or a file that other users can read, a file that is
 * not a regular file, and a directory that cannot be created.
 */
export const prepare = (path: string): Effect.Effect<Location, Refusal> =>
  Effect.tryPromise({
    try: async (): Promise<Result.Result<Location, Refusal>> => {
      const file = Path.resolve(path)
      const dir = await prepareDir(Path.dirname(file))
      if (Result.isFailure(dir)) return Result.fail(dir.failure)
      const fileStat = await Fs.lstat(file).catch((error) =>
        codeOf(error) === "ENOENT" ? undefined : Promise.reject(error)
      )
      if (fileStat !== undefined && !fileStat.isFile()) {
        return Result.fail({
          path: file,
          reason: "NotAFile",
          message: `NodeSessionStore: ${file} is ${
            fileStat.isDirectory() ? "a directory" : "not a regular file"
          }; give the path of the session file`
        })
      }
      if (fileStat !== undefined && checksModes && (fileStat.mode & 0o077) !== 0) {
        return Result.fail(refuseReadable(file, fileStat.mode, "file"))
      }
      return Result.succeed({ file, dir: dir.success, base: Path.basename(file) })
    },
    catch: unavailable(path)
  }).pipe(Effect.flatMap(Effect.fromResult))

// Only ever given a file-system error (a path, a code, a syscall: no content of the file), kept as the cause.
const storeError = (operation: SessionStore.StoreError["operation"], file: string) => (error: unknown) =>
  new SessionStore.StoreError({
    operation,
    message: capMessage(`${file}: ${messageOf(error)}`),
    cause: error
  })

const decode = Schema.decodeUnknownResult(SessionStore.StoredJson)

// A file that does not decode (a hand edit, another program's format) keeps
// the revision it names, when it names one, so a fenced write over it still
// moves the revision forward for anyone who read it before.
const salvageRevision = (text: string): number => {
  try {
    const revision: unknown = JSON.parse(text)?.revision
    return typeof revision === "number" && Number.isSafeInteger(revision) && revision >= 0 ? revision : 0
  } catch {
    return 0
  }
}

/** What a read of the file found: the record, and whether the file decoded. */
export interface Read {
  readonly stored: SessionStore.Stored
  readonly undecodable: boolean
}

/** Reads the file: a missing file is the empty record, one that does not decode a sign-out at the revision it names. */
export const read = (location: Location): Effect.Effect<Read, SessionStore.StoreError> =>
  Effect.tryPromise({
    try: () => Fs.readFile(location.file, "utf8"),
    catch: (error) => error
  }).pipe(
    Effect.map((text): Read =>
      Result.match(decode(text), {
        onFailure: () => ({ stored: { revision: salvageRevision(text), session: Option.none() }, undecodable: true }),
        onSuccess: (stored) => ({ stored, undecodable: false })
      })
    ),
    Effect.catchIf((error) => codeOf(error) === "ENOENT", () =>
      Effect.succeed<Read>({ stored: SessionStore.empty, undecodable: false })),
    Effect.mapError(storeError("load", location.file))
  )

let temporaries = 0

/**
 * Replaces the file with `stored`, atomically: a temporary file in the same
 * directory (created exclusively, mode 0600), flushed to disk, renamed over
 * the file, and the directory flushed so the rename survives a power loss.
 * `beforeRename` runs last, between the flush and the rename (the lock's
 * check): when it fails, the temporary file is removed and nothing changes.
 */
export const replace = <E>(
  location: Location,
  stored: SessionStore.Stored,
  beforeRename: Effect.Effect<void, E>
): Effect.Effect<void, E | SessionStore.StoreError> => {
  const operation = Option.isSome(stored.session) ? "save" : "clear"
  const temporary = Path.join(location.dir, `.${location.base}.${process.pid}.${++temporaries}.tmp`)
  const text = Schema.encodeSync(SessionStore.StoredJson)(stored)
  const writeTemporary = Effect.tryPromise({
    try: async () => {
      const handle = await Fs.open(temporary, "wx", 0o600)
      try {
        // `open`'s mode passes through the umask: set it exactly.
        if (checksModes) await handle.chmod(0o600)
        await handle.writeFile(text, "utf8")
        await handle.sync()
      } finally {
        await handle.close()
      }
    },
    catch: storeError(operation, location.file)
  })
  const rename = Effect.tryPromise({
    try: async () => {
      await Fs.rename(temporary, location.file)
      await syncDirectory(location.dir)
    },
    catch: storeError(operation, location.file)
  })
  const removeTemporary = Effect.promise(() => Fs.rm(temporary, { force: true }))
  return writeTemporary.pipe(
    Effect.andThen(beforeRename),
    Effect.andThen(rename),
    Effect.tapError(() => removeTemporary),
    // Half a replacement is worse than none or a whole one.
    Effect.uninterruptible
  )
}

// Windows cannot open a directory to flush it; its renames are journaled by NTFS.
const syncDirectory = async (dir: string) => {
  if (process.platform === "win32") return
  const handle = await Fs.open(dir, "r")
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}

/**
 * Temporary files a crashed writer left behind (older than `olderThan`
 * milliseconds). Best effort: another process may be removing them too.
 */
export const removeLeftovers = (location: Location, olderThan: number): Effect.Effect<void> =>
  removeTemporaries(location.dir, (name) => name.startsWith(`.${location.base}.`), olderThan)

/** {@link removeLeftovers} for every temporary file in `dir` whose name passes `ours`. */
export const removeTemporaries = (
  dir: string,
  ours: (name: string) => boolean,
  olderThan: number
): Effect.Effect<void> =>
  Effect.promise(async () => {
    const names = await Fs.readdir(dir).catch(() => [] as Array<string>)
    for (const name of names) {
      if (!ours(name) || !name.endsWith(".tmp")) continue
      const path = Path.join(dir, name)
      // The file system's mtimes are on the OS clock, not on Effect's Clock.
      const stat = await Fs.stat(path).catch(() => undefined)
      if (stat !== undefined && Date.now() - stat.mtimeMs > olderThan) await Fs.rm(path, { force: true })
    }
  })

/**
 * A tick each time the file may have changed: a file-system notification on
 * the directory (the rename replaces the file's inode, so the file itself
 * cannot be watched), or `pollInterval` passing, for file systems whose
 * notifications are unreliable (network shares, some containers). A watcher
 * that fails is logged at debug level and started again after `pollInterval`.
 */
export const ticks = (location: Location, pollInterval: number): Stream.Stream<void> => {
  const notifications = Stream.callback<void, unknown>((queue) =>
    Effect.acquireRelease(
      Effect.try({
        try: () =>
          NodeFs.watch(location.dir, { persistent: false }, (_event, name) => {
            if (name === null || name === location.base) Queue.offerUnsafe(queue, undefined)
          }).on("error", (error) => Queue.failCauseUnsafe(queue, Cause.fail(error))),
        catch: (error) => error
      }),
      (watcher) => Effect.sync(() => watcher.close())
    )
  ).pipe(
    Stream.tapError((error) =>
      Effect.logDebug(
        `NodeSessionStore: watching ${location.dir} failed (${messageOf(error)}); polling until it restarts`
      )
    ),
    Stream.retry(Schedule.spaced(pollInterval)),
    // Unreachable (the retry never gives up), but it types the stream as infallible.
    Stream.catch(() => Stream.empty)
  )
  const polls = Stream.fromSchedule(Schedule.spaced(pollInterval)).pipe(Stream.as(undefined))
  // A rename is several notifications: one read after they settle. The polls
  // stay outside the debounce, so a burst that never settles still gets them.
  return Stream.merge(notifications.pipe(Stream.debounce("20 millis")), polls)
}

/** The store's options, checked, in milliseconds. */
export interface Config {
  readonly lease: number
  readonly lockTimeout: number
  readonly pollInterval: number
}

/**
 * What a store on one file is made of, whatever its change feed: the read,
 * the fenced write under the lock, and `finish`, which makes the service
 * from them and a feed. A write holds the lock (see `FileLock.makeStoreLock`):
 * the manager writes inside `withLock` during a refresh; `signIn`, `save` and
 * `clear` write outside.
 */
interface Core {
  readonly read: Effect.Effect<SessionStore.Stored, SessionStore.StoreError>
  /** The revision this store last wrote or its feed last published: an eager feed skips it. */
  readonly lastSeen: { current: number }
  readonly finish: (changes: Stream.Stream<SessionStore.Stored>) => SessionStore.Service
}

const makeCore = (location: Location, config: Config): Effect.Effect<Core> =>
  Effect.gen(function*() {
    const lock = yield* FileLock.makeStoreLock({
      file: location.file,
      lease: Duration.millis(config.lease),
      timeout: Duration.millis(config.lockTimeout)
    })
    // Writes under one holding (a refresh that forked its save, a borrowed lock) commit one at a time.
    const commits = yield* Semaphore.make(1)
    const lastSeen = { current: -1 }
    let warned = false

    const readStored = Effect.flatMap(read(location), ({ stored, undecodable }) => {
      const warn = undecodable && !warned
      warned = undecodable
      // The content itself is not logged: it may hold tokens.
      return warn
        ? Effect.as(
          Effect.logWarning(`NodeSessionStore: ${location.file} does not decode; treated as signed out`),
          stored
        )
        : Effect.succeed(stored)
    })

    const lockLost = (operation: "save" | "clear") =>
      new SessionStore.StoreError({
        operation,
        message: `the lock on ${location.file} was lost (held past its lease); nothing was written`
      })

    const commit = (holding: FileLock.Holding, session: Option.Option<Session.Session>, expected: number) =>
      commits.withPermits(1)(Effect.gen(function*() {
        const current = yield* readStored
        if (current.revision !== expected) return yield* Effect.fail(SessionStore.conflict(expected, current.revision))
        const next: SessionStore.Stored = { revision: expected + 1, session }
        const operation = Option.isSome(session) ? "save" : "clear"
        yield* replace(
          location,
          next,
          Effect.filterOrFail(holding.stillHeld, (ours) => ours, () => lockLost(operation))
        )
        lastSeen.current = next.revision
        return next
      }))

    const write = (session: Option.Option<Session.Session>, expected: number) =>
      lock.underLock((holding) => commit(holding, session, expected))

    const finish = (changes: Stream.Stream<SessionStore.Stored>): SessionStore.Service => {
      const service = SessionStore.make({ read: readStored, write, withLease: lock.withLease, changes, shared: true })
      // `make`'s save and clear read outside the lock and retry a few times on a
      // conflict, which several busy processes can exhaust. Under the lock only
      // a write of this process can come between the read and the write.
      const overwrite = (session: Option.Option<Session.Session>, operation: "save" | "clear") =>
        lock.underLock(() => Effect.flatMap(service.read, (stored) => service.write(session, stored.revision))).pipe(
          Effect.retry({ while: (error) => error._tag === "StoreConflictError", times: 3 }),
          Effect.catchTag("StoreConflictError", (conflict) =>
            Effect.fail(
              new SessionStore.StoreError({
                operation,
                message: `the record changed under the lock: ${conflict.message}`,
                cause: conflict
              })
            ))
        )
      return Metrics.markStore({
        ...service,
        save: (session) => overwrite(Option.some(session), "save"),
        clear: overwrite(Option.none(), "clear")
      }, "file")
    }
    return { read: readStored, lastSeen, finish }
  })

/**
 * The store on a prepared location, with its change feed running for as
 * long as the scope: the feed's fiber lives in it.
 */
export const makeService = (
  location: Location,
  config: Config
): Effect.Effect<SessionStore.Service, never, Scope.Scope> =>
  Effect.gen(function*() {
    const core = yield* makeCore(location, config)
    yield* removeLeftovers(location, 60_000)
    core.lastSeen.current = (yield* Effect.orElseSucceed(core.read, () => SessionStore.empty)).revision
    const feed = yield* PubSub.unbounded<SessionStore.Stored>()
    yield* ticks(location, config.pollInterval).pipe(
      Stream.mapEffect(() =>
        core.read.pipe(
          Effect.tapError((error) =>
            Effect.logDebug(`NodeSessionStore: re-reading for the change feed failed: ${error.message}`)
          ),
          Effect.option
        )
      ),
      Stream.runForEach((stored) => {
        if (Option.isNone(stored) || stored.value.revision === core.lastSeen.current) return Effect.void
        core.lastSeen.current = stored.value.revision
        return PubSub.publish(feed, stored.value)
      }),
      Effect.forkScoped
    )
    return core.finish(Stream.fromPubSub(feed))
  })

/**
 * Tells the store of one file when that file may have changed: a keyed
 * store's one watcher on its directory, shared by every key (see
 * `fileStoreKeyed.ts`).
 */
export interface Watch {
  /** Calls `wake` each time the file named `base` may have changed, for as long as the scope. */
  readonly follow: (base: string, wake: () => void) => Effect.Effect<void, never, Scope.Scope>
  /** Bounds the feeds' re-reads in flight at once, across every key. */
  readonly reads: Semaphore.Semaphore
}

/**
 * The store on a location in a watched directory. Its change feed costs
 * nothing until it runs: each run follows the file through `watch`, starts
 * with the record as it is once followed (so a write made between a reader's
 * read and its subscription is not missed), then brings every new revision.
 * Building it does no I/O.
 */
export const makeFollowedService = (
  location: Location,
  config: Config,
  watch: Watch
): Effect.Effect<SessionStore.Service> =>
  Effect.map(makeCore(location, config), (core) =>
    core.finish(Stream.unwrap(Effect.gen(function*() {
      // One wake waiting is enough: a read after it sees every write before it.
      const wakes = yield* Queue.dropping<void>(1)
      yield* watch.follow(location.base, () => void Queue.offerUnsafe(wakes, undefined))
      yield* Queue.offer(wakes, undefined)
      let last = -1
      return Stream.fromQueue(wakes).pipe(
        Stream.mapEffect(() =>
          watch.reads.withPermits(1)(core.read).pipe(
            Effect.tapError((error) =>
              Effect.logDebug(`NodeSessionStore: re-reading for the change feed failed: ${error.message}`)
            ),
            Effect.option
          )
        ),
        Stream.filterMap((stored) => {
          if (Option.isNone(stored) || stored.value.revision === last) return Result.failVoid
          last = stored.value.revision
          return Result.succeed(stored.value)
        })
      )
    }))))

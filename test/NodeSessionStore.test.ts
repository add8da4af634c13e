import { describe, expect, it } from "@effect/vitest"
import { Cause, Deferred, Effect, Exit, Fiber, Option, Redacted, Stream } from "effect"
import { NodeSessionStore } from "moon-refresh/node"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as FileLease from "../src/node/internal/fileLease.js"
import * as FileStore from "../src/node/internal/fileStore.js"
import { session, storeContract } from "./support/StoreContract.js"

/** A fresh directory under the system's temporary directory, removed with the scope. */
const tempDir = Effect.acquireRelease(
  Effect.sync(() => Fs.mkdtempSync(Path.join(Os.tmpdir(), "moon-node-store-"))),
  (dir) => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true }))
)

/** `session.json` in a fresh temporary directory. */
const sessionFile = Effect.map(tempDir, (dir) => ({ dir, path: Path.join(dir, "session.json") }))

/** Whether some entry of the file's lock directory is held (not released). */
const isLocked = (path: string) =>
  Fs.existsSync(`${path}.lock`) &&
  Fs.readdirSync(`${path}.lock`).some((name) =>
    /^g\d+$/.test(name) && !FileLease.isDone(Fs.readFileSync(Path.join(`${path}.lock`, name), "utf8"))
  )

const modeOf = (path: string) => Fs.statSync(path).mode & 0o777

/** Runs `f` with the process umask set to `mask`, restoring it after. */
const withUmask = <A, E, R>(mask: number, effect: Effect.Effect<A, E, R>) =>
  Effect.acquireUseRelease(Effect.sync(() => process.umask(mask)), () => effect, (previous) =>
    Effect.sync(() => {
      process.umask(previous)
    }))

storeContract(
  "NodeSessionStore",
  Effect.map(tempDir, (dir) => ({
    // Two `make`s on one path: they coordinate through the file system only, as two processes do.
    open: NodeSessionStore.make({
      path: Path.join(dir, "moon", "session.json"),
      lease: "2 seconds",
      pollInterval: "500 millis"
    })
  })),
  { feedWithin: "15 seconds" }
)

describe("NodeSessionStore permissions", () => {
  it.live("creates the directory 0700 and the file 0600 under umask 022", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const path = Path.join(dir, "a", "b", "session.json")
      const store = yield* withUmask(0o022, NodeSessionStore.make({ path }))
      yield* withUmask(0o022, store.save(session("1")))
      expect(modeOf(Path.join(dir, "a"))).toBe(0o700)
      expect(modeOf(Path.join(dir, "a", "b"))).toBe(0o700)
      expect(modeOf(path)).toBe(0o600)
      // No temporary file is left beside it.
      expect(Fs.readdirSync(Path.join(dir, "a", "b"))).toStrictEqual(["session.json"])
    }))

  it.live("refuses an existing file that others can read, naming the path and the mode", () =>
    Effect.gen(function*() {
      const { path } = yield* sessionFile
      Fs.writeFileSync(path, "{}", { mode: 0o644 })
      Fs.chmodSync(path, 0o644)
      const error = yield* Effect.flip(NodeSessionStore.make({ path }))
      expect(error).toBeInstanceOf(NodeSessionStore.FileStoreError)
      expect(error).toMatchObject({ _tag: "FileStoreError", reason: "InsecurePermissions", path, mode: 0o644 })
      expect(error.message).toContain(path)
      expect(error.message).toContain("0644")
    }))

  it.live("refuses an existing directory that others can read", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const shared = Path.join(dir, "shared")
      Fs.mkdirSync(shared)
      Fs.chmodSync(shared, 0o755)
      const error = yield* Effect.flip(NodeSessionStore.make({ path: Path.join(shared, "session.json") }))
      expect(error).toMatchObject({ reason: "InsecurePermissions", path: shared, mode: 0o755 })
      expect(error.message).toContain("chmod 700")
    }))

  it.live("refuses a path that is a directory", () =>
    Effect.gen(function*() {
      const { path } = yield* sessionFile
      Fs.mkdirSync(path, { mode: 0o700 })
      const error = yield* Effect.flip(NodeSessionStore.make({ path }))
      expect(error).toMatchObject({ reason: "NotAFile", path })
    }))

  it.live("refuses a directory that cannot be created", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const blocker = Path.join(dir, "blocker")
      Fs.writeFileSync(blocker, "", { mode: 0o600 })
      const error = yield* Effect.flip(NodeSessionStore.make({ path: Path.join(blocker, "session.json") }))
      expect(error.reason).toBe("Unavailable")
      expect(error.message).toContain(blocker)
    }))

  it("dies naming the option when an option is invalid", () => {
    const exit = Effect.runSyncExit(
      Effect.scoped(NodeSessionStore.make({ path: "session.json", lease: "1 second" }))
    )
    expect(Exit.isFailure(exit) && Cause.pretty(exit.cause)).toContain(
      "NodeSessionStore: option \"lease\" must be at least 2 seconds"
    )
  })
})

describe("NodeSessionStore file format", () => {
  it.live("holds SessionStore.StoredJson; a file that does not decode is a sign-out, and a fenced write over it works", () =>
    Effect.gen(function*() {
      const { path } = yield* sessionFile
      const store = yield* NodeSessionStore.make({ path })
      yield* store.save(session("1"))
      const onDisk = JSON.parse(Fs.readFileSync(path, "utf8"))
      expect(onDisk).toMatchObject({ revision: 1, session: { refreshToken: "refresh-1" } })
      // A hand edit that breaks the session but keeps the revision.
      Fs.writeFileSync(path, JSON.stringify({ revision: 7, session: { garbage: true } }))
      const broken = yield* store.read
      expect(broken.revision).toBe(7)
      expect(Option.isNone(broken.session)).toBe(true)
      const written = yield* store.write(Option.some(session("2")), 7)
      expect(written.revision).toBe(8)
      // Not JSON at all: revision 0, and a write at 0 replaces it.
      Fs.writeFileSync(path, "not json")
      expect((yield* store.read).revision).toBe(0)
      yield* store.write(Option.some(session("3")), 0)
      expect(Option.map((yield* store.read).session, (s) => Redacted.value(s.refreshToken))).toStrictEqual(
        Option.some("refresh-3")
      )
    }))
})

const tokenOf = (stored: { readonly session: Option.Option<{ readonly refreshToken: Redacted.Redacted<string> }> }) =>
  Option.getOrElse(Option.map(stored.session, (s) => Redacted.value(s.refreshToken)), () => "none")

describe("NodeSessionStore lock", () => {
  it.live("write inside withLock uses the lock held; a fiber forked there writes after it ended by taking it anew", () =>
    Effect.gen(function*() {
      const { path } = yield* sessionFile
      const store = yield* NodeSessionStore.make({ path, lockTimeout: "2 seconds" })
      const go = yield* Deferred.make<void>()
      const late = yield* store.withLock(Effect.gen(function*() {
        // The lock is not re-taken (that would wait for itself until lockTimeout).
        yield* store.write(Option.some(session("1")), 0)
        return yield* Effect.forkDetach(Effect.andThen(Deferred.await(go), store.write(Option.some(session("2")), 1)))
      }))
      expect(isLocked(path)).toBe(false)
      yield* Deferred.succeed(go, undefined)
      const written = yield* Fiber.join(late)
      expect(written.revision).toBe(2)
      expect(isLocked(path)).toBe(false)
    }))

  it.live("a write from outside goes through while this store's lock holder waits for it", () =>
    Effect.gen(function*() {
      // The manager's shape: a refresh holds the lock and waits for the manager's
      // mutex, which a sign-out holds while it writes. The write must not wait for the lock.
      const { path } = yield* sessionFile
      const store = yield* NodeSessionStore.make({ path, lockTimeout: "3 seconds" })
      yield* store.save(session("1"))
      const inside = yield* Deferred.make<void>()
      const signedOut = yield* Deferred.make<void>()
      const refresh = yield* Effect.forkChild(store.withLock(Effect.gen(function*() {
        const read = yield* store.read
        yield* Deferred.succeed(inside, undefined)
        yield* Deferred.await(signedOut)
        // Its fenced write finds the sign-out in the way.
        return yield* Effect.flip(store.write(Option.some(session("2")), read.revision))
      })))
      yield* Deferred.await(inside)
      // A clear that waited for the lock would wait for ever (its holder waits for the clear), and fail
      // after lockTimeout: that it succeeds is what shows it did not wait.
      const cleared = yield* store.clear
      yield* Deferred.succeed(signedOut, undefined)
      expect(cleared.revision).toBe(2)
      expect(yield* Fiber.join(refresh)).toMatchObject({ _tag: "StoreConflictError", expected: 1, actual: 2 })
      expect(Option.isNone((yield* store.read).session)).toBe(true)
      expect(isLocked(path)).toBe(false)
    }))

  it.live("waiting for the lock is interruptible, and an interrupted holder releases it", () =>
    Effect.gen(function*() {
      const { path } = yield* sessionFile
      // A wait of a minute for the lock: an interruption that had to wait it out would trip the hang guard.
      const options = { path, lockTimeout: "1 minute" } as const
      const [a, b] = [yield* NodeSessionStore.make(options), yield* NodeSessionStore.make(options)]
      const inside = yield* Deferred.make<void>()
      const holder = yield* Effect.forkChild(
        a.withLock(Effect.andThen(Deferred.succeed(inside, undefined), Effect.never))
      )
      yield* Deferred.await(inside)
      const waiter = yield* Effect.forkChild(b.withLock(Effect.void))
      yield* Effect.sleep("200 millis")
      yield* Fiber.interrupt(waiter).pipe(
        Effect.timeoutOrElse({
          duration: "10 seconds",
          orElse: () => Effect.fail("the interruption waited for the lock")
        })
      )
      const exit = yield* Fiber.await(waiter)
      expect(Exit.hasInterrupts(exit)).toBe(true)
      expect(isLocked(path)).toBe(true)
      yield* Fiber.interrupt(holder)
      expect(isLocked(path)).toBe(false)
      yield* b.withLock(Effect.void).pipe(Effect.timeout("10 seconds"))
    }))

  it.live("a write whose lock was taken away writes nothing and leaves no temporary file", () =>
    Effect.gen(function*() {
      const { dir, path } = yield* sessionFile
      const store = yield* NodeSessionStore.make({ path })
      yield* store.save(session("1"))
      const error = yield* Effect.flip(store.withLock(Effect.gen(function*() {
        // What a takeover after a stall looks like from the stalled holder: its lock directory is gone.
        Fs.rmSync(`${path}.lock`, { recursive: true })
        return yield* store.write(Option.some(session("2")), 1)
      })))
      expect(error).toMatchObject({ _tag: "StoreError", operation: "save" })
      expect(error.message).toContain("lock")
      expect(tokenOf(yield* store.read)).toBe("refresh-1")
      expect(Fs.readdirSync(dir).sort()).toStrictEqual(["session.json"])
    }))
})

describe("NodeSessionStore change feed", () => {
  it.live("a file-system notification brings another holder's write without waiting for the poll", () =>
    Effect.gen(function*() {
      const { path } = yield* sessionFile
      const options = { path, pollInterval: "1 hour" } as const
      const [a, b] = [yield* NodeSessionStore.make(options), yield* NodeSessionStore.make(options)]
      const seen = yield* Deferred.make<number>()
      yield* Effect.forkScoped(Stream.runForEach(b.changes, (stored) => Deferred.succeed(seen, stored.revision)))
      yield* Effect.sleep("100 millis")
      yield* a.write(Option.some(session("1")), 0)
      // An hour's poll: only the notification can bring it (the wait's bound is a hang guard).
      expect(yield* Deferred.await(seen).pipe(Effect.timeout("15 seconds"))).toBe(1)
    }))

  it.live("polling goes on when the directory cannot be watched", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const missing = {
        file: Path.join(dir, "gone", "session.json"),
        dir: Path.join(dir, "gone"),
        base: "session.json"
      }
      const ticks = yield* FileStore.ticks(missing, 50).pipe(
        Stream.take(3),
        Stream.runCollect,
        Effect.timeout("15 seconds")
      )
      expect(ticks.length).toBe(3)
    }))
})

// NodeSessionStore.makeKeyed: one session file per key in one directory. The
// store contract on one key, keys that never touch each other, hostile keys
// that stay inside the directory, one watcher for the whole directory, and a
// SessionPool on it.
import { describe, expect, it } from "@effect/vitest"
import { Cause, Deferred, Effect, Exit, Fiber, Option, Redacted, Stream } from "effect"
import type { SessionStore } from "moon-refresh"
import { NodeSessionStore } from "moon-refresh/node"
import { createHash } from "node:crypto"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as FileStoreKeyed from "../src/node/internal/fileStoreKeyed.js"
import { acrossExpiries, eventually, followFeeds } from "./support/KeyedPool.js"
import { session, storeContract } from "./support/StoreContract.js"

/** A fresh directory under the system's temporary directory, removed with the scope. */
const tempDir = Effect.acquireRelease(
  Effect.sync(() => Fs.mkdtempSync(Path.join(Os.tmpdir(), "moon-node-keyed-"))),
  (dir) => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true }))
)

/** A keyed store on `sessions/` in a fresh temporary directory. */
const keyedIn = (dir: string) =>
  NodeSessionStore.makeKeyed({ directory: Path.join(dir, "sessions"), lease: "2 seconds", pollInterval: "500 millis" })

const tokenOf = (stored: SessionStore.Stored) =>
  Option.match(stored.session, { onNone: () => "none", onSome: (s) => Redacted.value(s.refreshToken) })

const isOurName = (name: string) => /^[0-9a-f]{64}\.json(\.lock)?$/.test(name)

storeContract(
  "NodeSessionStore.makeKeyed, forKey(\"some-user\")",
  Effect.map(tempDir, (dir) => ({
    // Each handle from a keyed store of its own on one directory, as two processes have.
    open: Effect.flatMap(keyedIn(dir), (keyed) => keyed.forKey("some-user"))
  })),
  { feedWithin: "15 seconds" }
)

describe("NodeSessionStore.makeKeyed: keys", () => {
  it.live("names each key's file by the hex SHA-256 of the key, in the directory, 0700 and 0600", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const keyed = yield* keyedIn(dir)
      yield* (yield* keyed.forKey("ada")).save(session("ada"))
      const sessions = Path.join(dir, "sessions")
      expect(NodeSessionStore.keyFileName("ada")).toBe(`${createHash("sha256").update("ada").digest("hex")}.json`)
      expect(Fs.readdirSync(sessions)).toStrictEqual([NodeSessionStore.keyFileName("ada")])
      expect(Fs.statSync(sessions).mode & 0o777).toBe(0o700)
      expect(Fs.statSync(Path.join(sessions, NodeSessionStore.keyFileName("ada"))).mode & 0o777).toBe(0o600)
    }))

  it.live("gives the same record for the same key, from any forKey and any store on the directory", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const [one, two] = [yield* keyedIn(dir), yield* keyedIn(dir)]
      yield* (yield* one.forKey("ada")).write(Option.some(session("1")), 0)
      for (const keyed of [one, two, one]) {
        const stored = yield* (yield* keyed.forKey("ada")).read
        expect([stored.revision, tokenOf(stored)]).toStrictEqual([1, "refresh-1"])
      }
    }))

  it.live("keys whose names would meet under a naive encoding get records of their own", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const keyed = yield* keyedIn(dir)
      // Case (case-insensitive file systems), escaping, separators, normalisation, truncation.
      const keys = [
        "Ada",
        "ada",
        "a/b",
        "a%2Fb",
        "a_b",
        "a\\b",
        "./ada",
        "ada/.",
        "x".repeat(300),
        "x".repeat(300) + "y",
        "café",
        "cafe\u0301"
      ]
      for (const [i, key] of keys.entries()) yield* (yield* keyed.forKey(key)).save(session(`k${i}`))
      for (const [i, key] of keys.entries()) {
        expect(tokenOf(yield* (yield* keyed.forKey(key)).read)).toBe(`refresh-k${i}`)
      }
      expect(new Set(keys.map(NodeSessionStore.keyFileName)).size).toBe(keys.length)
      expect(Fs.readdirSync(Path.join(dir, "sessions")).sort()).toStrictEqual(
        keys.map(NodeSessionStore.keyFileName).sort()
      )
    }))

  it.live("hostile keys stay inside the directory", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const keyed = yield* keyedIn(dir)
      const hostile = [
        "../../etc/passwd",
        "../outside",
        "/etc/passwd",
        "..",
        ".",
        "a\u0000b",
        "C:\\Windows",
        "x".repeat(1_000_000)
      ]
      for (const key of hostile) {
        const store = yield* keyed.forKey(key)
        yield* store.save(session("h"))
        // Its lock too, held while looking.
        yield* store.withLock(Effect.sync(() => {
          expect(Fs.readdirSync(Path.join(dir, "sessions")).every(isOurName)).toBe(true)
        }))
      }
      // Nothing beside the directory, and in it only files named by a hash.
      expect(Fs.readdirSync(dir)).toStrictEqual(["sessions"])
      expect(Fs.readdirSync(Path.join(dir, "sessions")).sort()).toStrictEqual(
        hostile.map(NodeSessionStore.keyFileName).sort()
      )
    }))

  it.live("refuses an empty key and one with a lone surrogate with a StoreError of operation \"key\"", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const keyed = yield* keyedIn(dir)
      for (const key of ["", "\uD800", "a\uDC00b"]) {
        const error = yield* Effect.flip(keyed.forKey(key))
        expect(error).toMatchObject({ _tag: "StoreError", operation: "key" })
        expect(error.message).toMatch(/^NodeSessionStore: a key must/)
      }
      // A well-formed pair is a key like any other.
      yield* (yield* keyed.forKey("\uD83D\uDE00")).save(session("emoji"))
    }))
})

describe("NodeSessionStore.makeKeyed: isolation", () => {
  it.live("writes and clears of one key never show in another's load or change feed", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const [here, there] = [yield* keyedIn(dir), yield* keyedIn(dir)]
      const [ada, bob] = [yield* here.forKey("ada"), yield* there.forKey("bob")]
      const seen: Array<string> = []
      const bobWrote = yield* Deferred.make<void>()
      yield* Effect.forkScoped(Stream.runForEach(bob.changes, (stored) =>
        Effect.andThen(
          Effect.sync(() => seen.push(`${stored.revision}:${tokenOf(stored)}`)),
          stored.revision === 1 ? Deferred.succeed(bobWrote, undefined) : Effect.void
        )))
      yield* eventually("bob's feed has read the record", () => seen.length > 0)
      yield* ada.save(session("a1"))
      yield* ada.save(session("a2"))
      yield* ada.clear
      yield* ada.withLock(ada.read)
      expect(yield* bob.read).toStrictEqual({ revision: 0, session: Option.none() })
      expect(Option.isNone(yield* bob.load)).toBe(true)
      // Bob's own write comes through his feed, and nothing of ada's came before it.
      yield* (yield* here.forKey("bob")).save(session("b1"))
      yield* Deferred.await(bobWrote).pipe(Effect.timeout("15 seconds"))
      expect(seen).toStrictEqual(["0:none", "1:refresh-b1"])
      expect((yield* ada.read).revision).toBe(3)
    }))

  it.live("one key's lock does not hold up another's", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const [here, there] = [yield* keyedIn(dir), yield* keyedIn(dir)]
      const inside = yield* Deferred.make<void>()
      const holder = yield* Effect.forkChild((yield* here.forKey("ada")).withLock(
        Effect.andThen(Deferred.succeed(inside, undefined), Effect.never)
      ))
      yield* Deferred.await(inside)
      // Bob's lock is taken, through either store, while ada's is held (for ever: a lock that waited
      // for it would run into the hang guard).
      yield* (yield* there.forKey("bob")).withLock(Effect.void).pipe(Effect.timeout("10 seconds"))
      yield* (yield* here.forKey("bob")).withLock(Effect.void).pipe(Effect.timeout("10 seconds"))
      yield* Fiber.interrupt(holder)
    }))
})

describe("NodeSessionStore.makeKeyed: the directory's watcher", () => {
  it.live("exists only while some key's feed runs: one for all of them, none for keys nobody follows", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const { keyed, watch } = yield* FileStoreKeyed.makeKeyed(dir, {
        lease: 2_000,
        lockTimeout: 5_000,
        pollInterval: 500
      })
      const stores = yield* Effect.forEach(Array.from({ length: 1_000 }, (_, i) => `user-${i}`), keyed.forKey)
      expect(watch.running()).toBe(false)
      const { feeds, received } = yield* followFeeds(stores.slice(0, 3))
      yield* eventually("three keys followed", () => watch.followed() === 3)
      expect(watch.running()).toBe(true)
      yield* stores[1]!.save(session("1"))
      yield* Deferred.await(received).pipe(Effect.timeout("15 seconds"))
      yield* Fiber.interruptAll(feeds)
      expect(watch.followed()).toBe(0)
      expect(watch.running()).toBe(false)
    }))

  it.live("a record another program renames into place reaches the key's feed", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const { keyed, watch } = yield* FileStoreKeyed.makeKeyed(dir, {
        lease: 2_000,
        lockTimeout: 5_000,
        pollInterval: 200
      })
      const store = yield* keyed.forKey("ada")
      const seen = yield* Deferred.make<number>()
      yield* Effect.forkScoped(
        Stream.runForEach(
          store.changes,
          (stored) => stored.revision > 0 ? Deferred.succeed(seen, stored.revision) : Effect.void
        )
      )
      yield* eventually("ada followed", () => watch.followed() === 1)
      // Found by the notification or by the poll, whichever comes first; the other finds nothing new.
      const file = Path.join(dir, NodeSessionStore.keyFileName("ada"))
      Fs.writeFileSync(`${file}.new`, JSON.stringify({ revision: 4, session: null }), { mode: 0o600 })
      Fs.renameSync(`${file}.new`, file)
      expect(yield* Deferred.await(seen).pipe(Effect.timeout("15 seconds"))).toBe(4)
    }))
})

describe("NodeSessionStore.makeKeyed: options", () => {
  it.live("refuses a directory others can read with a FileStoreError", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const shared = Path.join(dir, "shared")
      Fs.mkdirSync(shared)
      Fs.chmodSync(shared, 0o755)
      const error = yield* Effect.flip(NodeSessionStore.makeKeyed({ directory: shared }))
      expect(error).toMatchObject({ _tag: "FileStoreError", reason: "InsecurePermissions", path: shared })
    }))

  it("dies naming the option when the directory is missing or a time is invalid", () => {
    for (
      const [options, message] of [
        [{ directory: "" }, `NodeSessionStore: option "directory" must be the path of a directory`],
        [{ directory: "sessions", lease: "1 second" }, `NodeSessionStore: option "lease" must be at least 2 seconds`]
      ] as const
    ) {
      const exit = Effect.runSyncExit(Effect.scoped(NodeSessionStore.makeKeyed(options)))
      expect(Exit.isFailure(exit) && Cause.pretty(exit.cause)).toContain(message)
    }
  })
})

describe("NodeSessionStore.makeKeyed under a SessionPool", () => {
  it.effect(
    "50 keys across two expiries: one refresh POST a key an expiry, no reuse; an idle session comes back from its file without a POST",
    () =>
      Effect.gen(function*() {
        const dir = yield* tempDir
        const { keyed, watch } = yield* FileStoreKeyed.makeKeyed(dir, {
          lease: 10_000,
          lockTimeout: 30_000,
          pollInterval: 2_000
        })
        yield* acrossExpiries({ keyed, following: () => watch.running() })
      })
  )
})

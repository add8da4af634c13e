import { NodeFileSystem, NodePath } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import type { LogLevel } from "effect"
import { DateTime, Effect, FileSystem, Layer, Logger, Option, Path, Redacted, Ref, References } from "effect"
import { KeyValueStore } from "effect/persistence"
import { Session, SessionStore } from "moon-refresh"
import { storeContract } from "./support/StoreContract.js"

const accessToken = "eyJhbGciOiJIUzI1NiJ9.stored-access-token.signature"
const refreshToken = "stored-refresh-token-v7"

const session = Session.unsafeMake({
  accessToken,
  refreshToken,
  expiresAt: Date.UTC(2030, 0, 2, 3, 4, 5, 678),
  tokenType: "bearer",
  // Fields beyond `id` and `email` are the server's and must survive a round trip.
  user: { id: "user-1", email: "ada@example.com", role: "authenticated", app_metadata: { provider: "email" } }
})

const reveal = (value: Session.Session) => ({
  accessToken: Redacted.value(value.accessToken),
  refreshToken: Redacted.value(value.refreshToken),
  expiresAt: DateTime.toEpochMillis(value.expiresAt),
  tokenType: value.tokenType,
  user: value.user
})

const revealOption = Option.map(reveal)

const key = "moon-session"

const kvStore = <E, R>(kv: Layer.Layer<KeyValueStore.KeyValueStore, E, R>) =>
  SessionStore.layerKeyValueStore({ key }).pipe(Layer.provideMerge(kv))

/** Runs `effect` with warnings and everything else captured as logfmt lines. */
const capturingLogs = <A, E, R>(effect: Effect.Effect<A, E, R>) => {
  const lines: Array<{ readonly level: LogLevel.LogLevel; readonly line: string }> = []
  const capture = Logger.make((options) => {
    lines.push({ level: options.logLevel, line: Logger.formatLogFmt.log(options) })
  })
  return effect.pipe(
    Effect.provide(Logger.layer([capture])),
    Effect.provideService(References.MinimumLogLevel, "All"),
    Effect.map((a) => ({ result: a, lines }))
  )
}

describe("SessionStore.layerMemory", () => {
  it.effect("starts empty, then loads what was saved, and nothing after clear", () =>
    Effect.gen(function*() {
      const store = yield* SessionStore.SessionStore
      expect(yield* store.load).toStrictEqual(Option.none())
      yield* store.save(session)
      expect(revealOption(yield* store.load)).toStrictEqual(Option.some(reveal(session)))
      yield* store.clear
      expect(yield* store.load).toStrictEqual(Option.none())
    }).pipe(Effect.provide(SessionStore.layerMemory())))

  it.effect("starts from the initial session it is given", () =>
    Effect.gen(function*() {
      const store = yield* SessionStore.SessionStore
      expect(revealOption(yield* store.load)).toStrictEqual(Option.some(reveal(session)))
    }).pipe(Effect.provide(SessionStore.layerMemory(session))))
})

describe("SessionStore.layerKeyValueStore", () => {
  it.effect("round-trips a session: tokens, expiry to the millisecond, and every user field", () =>
    Effect.gen(function*() {
      const store = yield* SessionStore.SessionStore
      expect(yield* store.load).toStrictEqual(Option.none())
      yield* store.save(session)
      const loaded = yield* store.load
      expect(Option.map(loaded, (s) => s instanceof Session.Session)).toStrictEqual(Option.some(true))
      expect(revealOption(loaded)).toStrictEqual(Option.some(reveal(session)))
    }).pipe(Effect.provide(kvStore(KeyValueStore.layerMemory))))

  it.effect("stores the tokens in clear under the given key (as documented)", () =>
    Effect.gen(function*() {
      const store = yield* SessionStore.SessionStore
      const kv = yield* KeyValueStore.KeyValueStore
      yield* store.save(session)
      const raw = yield* kv.get(key)
      expect(raw).toBeTypeOf("string")
      const json = JSON.parse(raw!)
      expect(json).toMatchObject({
        accessToken,
        refreshToken,
        expiresAt: "2030-01-02T03:04:05.678Z",
        user: { id: "user-1", role: "authenticated" }
      })
    }).pipe(Effect.provide(kvStore(KeyValueStore.layerMemory))))

  it.effect("clear removes the key", () =>
    Effect.gen(function*() {
      const store = yield* SessionStore.SessionStore
      const kv = yield* KeyValueStore.KeyValueStore
      yield* store.save(session)
      yield* store.clear
      expect(yield* kv.has(key)).toBe(false)
      expect(yield* store.load).toStrictEqual(Option.none())
    }).pipe(Effect.provide(kvStore(KeyValueStore.layerMemory))))

  const undecodable = [
    ["garbage that is not JSON", `{"accessToken": "${accessToken}", oops`],
    ["JSON of the wrong shape", JSON.stringify({ access_token: accessToken, refresh_token: refreshToken })],
    ["a session with an empty token", JSON.stringify({ ...encodedSession(), accessToken: "" })],
    ["a session whose expiry is not a date", JSON.stringify({ ...encodedSession(), expiresAt: "tomorrow-ish" })]
  ] as const

  for (const [what, value] of undecodable) {
    it.effect(`loads ${what} as no session, with a warning that does not print the value`, () =>
      Effect.gen(function*() {
        const kv = yield* KeyValueStore.KeyValueStore
        const store = yield* SessionStore.SessionStore
        yield* kv.set(key, value)
        const { lines, result } = yield* capturingLogs(store.load)
        expect(result).toStrictEqual(Option.none())
        const warnings = lines.filter((line) => line.level === "Warn")
        expect(warnings).toHaveLength(1)
        expect(warnings[0]!.line).toContain("does not decode")
        for (const { line } of lines) {
          expect(line).not.toContain(accessToken)
          expect(line).not.toContain(refreshToken)
        }
      }).pipe(Effect.provide(kvStore(KeyValueStore.layerMemory))))
  }

  it.effect("a KeyValueStore failure is a StoreError naming the operation, never a defect", () =>
    Effect.gen(function*() {
      const failing = Layer.succeed(
        KeyValueStore.KeyValueStore,
        KeyValueStore.make({
          get: () => Effect.fail(systemError("get")),
          getUint8Array: () => Effect.fail(systemError("getUint8Array")),
          set: () => Effect.fail(systemError("set")),
          remove: () => Effect.fail(systemError("remove")),
          clear: Effect.fail(systemError("clear")),
          size: Effect.fail(systemError("size")),
          keys: Effect.fail(systemError("keys"))
        })
      )
      const errors = yield* Effect.gen(function*() {
        const store = yield* SessionStore.SessionStore
        return [
          yield* Effect.flip(store.load),
          yield* Effect.flip(store.save(session)),
          yield* Effect.flip(store.clear)
        ]
      }).pipe(Effect.provide(SessionStore.layerKeyValueStore({ key }).pipe(Layer.provide(failing))))
      expect(errors.map((error) => [error._tag, error.operation])).toStrictEqual([
        ["StoreError", "load"],
        ["StoreError", "save"],
        ["StoreError", "clear"]
      ])
    }))
})

describe("SessionStore.layerKeyValueStore on the file system", () => {
  const nodeFs = Layer.merge(NodeFileSystem.layer, NodePath.layer)

  /** A fresh temporary directory, removed when the test ends. */
  const tempDir = Effect.flatMap(FileSystem.FileSystem, (fs) => fs.makeTempDirectoryScoped({ prefix: "moon-refresh-" }))

  const storeIn = (directory: string) =>
    SessionStore.layerKeyValueStore({ key }).pipe(Layer.provide(KeyValueStore.layerFileSystem(directory)))

  it.effect("a session saved by one process is loaded by the next, intact", () =>
    Effect.gen(function*() {
      const directory = yield* tempDir
      // Two separate layer builds: nothing is shared but the directory.
      yield* Effect.flatMap(SessionStore.SessionStore, (store) => store.save(session)).pipe(
        Effect.provide(storeIn(directory))
      )
      const loaded = yield* Effect.flatMap(SessionStore.SessionStore, (store) => store.load).pipe(
        Effect.provide(storeIn(directory))
      )
      expect(revealOption(loaded)).toStrictEqual(Option.some(reveal(session)))
    }).pipe(Effect.scoped, Effect.provide(nodeFs)))

  it.effect("writes one file under the directory, holding the tokens in clear; clear deletes it", () =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const path = yield* Path.Path
      const directory = yield* tempDir
      yield* Effect.gen(function*() {
        const store = yield* SessionStore.SessionStore
        yield* store.save(session)
        expect(yield* fs.readDirectory(directory)).toStrictEqual([key])
        const text = yield* fs.readFileString(path.join(directory, key))
        expect(text).toContain(accessToken)
        expect(text).toContain(refreshToken)
        yield* store.clear
        expect(yield* fs.readDirectory(directory)).toStrictEqual([])
        expect(yield* store.load).toStrictEqual(Option.none())
      }).pipe(Effect.provide(storeIn(directory)))
    }).pipe(Effect.scoped, Effect.provide(nodeFs)))

  it.effect("a file holding garbage loads as no session with a warning, and the next save repairs it", () =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const path = yield* Path.Path
      const directory = yield* tempDir
      yield* fs.writeFileString(path.join(directory, key), "\u0000\u0001 not a session")
      yield* Effect.gen(function*() {
        const store = yield* SessionStore.SessionStore
        const { lines, result } = yield* capturingLogs(store.load)
        expect(result).toStrictEqual(Option.none())
        expect(lines.filter((line) => line.level === "Warn")).toHaveLength(1)
        yield* store.save(session)
        expect(revealOption(yield* store.load)).toStrictEqual(Option.some(reveal(session)))
      }).pipe(Effect.provide(storeIn(directory)))
    }).pipe(Effect.scoped, Effect.provide(nodeFs)))

  it.effect("a directory that cannot be written gives StoreErrors, not defects", () =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const path = yield* Path.Path
      // A file where the directory should be: every read and write under it fails.
      const notADirectory = path.join(yield* tempDir, "a-file")
      yield* fs.writeFileString(notADirectory, "")
      const errors = yield* Effect.gen(function*() {
        const store = yield* SessionStore.SessionStore
        return [yield* Effect.flip(store.save(session)), yield* Effect.flip(store.load)]
      }).pipe(Effect.provide(storeIn(notADirectory)))
      expect(errors.map((error) => [error._tag, error.operation])).toStrictEqual([
        ["StoreError", "save"],
        ["StoreError", "load"]
      ])
      for (const error of errors) expect(error.message).not.toContain(accessToken)
    }).pipe(Effect.scoped, Effect.provide(nodeFs)))
})

function encodedSession() {
  return {
    accessToken,
    refreshToken,
    expiresAt: "2030-01-02T03:04:05.678Z",
    tokenType: "bearer",
    user: { id: "user-1" }
  }
}

function systemError(method: string) {
  return new KeyValueStore.KeyValueStoreError({ method, message: "disk on fire" })
}

// The memory store, two managers of one process sharing one instance.
storeContract(
  "SessionStore.makeMemory",
  Effect.map(SessionStore.makeMemory(), (store) => ({ open: Effect.succeed(store) })),
  { feedWithin: "1 second" }
)

describe("SessionStore.make: withLease and withLock", () => {
  const fenced = Effect.map(Ref.make(SessionStore.empty), (ref) => ({
    read: Ref.get(ref),
    write: (next: Option.Option<Session.Session>, expected: number) =>
      Effect.as(Ref.set(ref, { revision: expected + 1, session: next }), { revision: expected + 1, session: next })
  }))

  it.effect("a store with no lock of its own gets a lease whose ensure always succeeds, under the in-process lock", () =>
    Effect.gen(function*() {
      const store = SessionStore.make(yield* fenced)
      const inside = yield* Ref.make(0)
      const most = yield* Ref.make(0)
      const critical = store.withLease((lease) =>
        Effect.gen(function*() {
          yield* lease.ensure("1 hour")
          const now = yield* Ref.updateAndGet(inside, (n) => n + 1)
          yield* Ref.update(most, (m) => Math.max(m, now))
          yield* Effect.yieldNow
          yield* Ref.update(inside, (n) => n - 1)
        })
      )
      yield* Effect.all([critical, critical, store.withLock(Effect.void), critical], { concurrency: "unbounded" })
      // One at a time, withLock and withLease sharing the one lock.
      expect(yield* Ref.get(most)).toBe(1)
    }))

  it.effect("withLock is derived from withLease when only that is given, and withLease wraps a given withLock", () =>
    Effect.gen(function*() {
      const calls: Array<string> = []
      const lost = new SessionStore.StoreError({ operation: "lock", message: "taken over" })
      const leased = SessionStore.make({
        ...(yield* fenced),
        withLease: (use) =>
          Effect.suspend(() => {
            calls.push("withLease")
            return use({ ensure: () => Effect.fail(lost) })
          })
      })
      expect(yield* leased.withLock(Effect.succeed(7))).toBe(7)
      expect(calls).toStrictEqual(["withLease"])
      expect(yield* Effect.flip(leased.withLease((lease) => lease.ensure("1 second")))).toBe(lost)
      calls.length = 0

      const locked = SessionStore.make({
        ...(yield* fenced),
        withLock: (critical) => Effect.andThen(Effect.sync(() => calls.push("withLock")), critical)
      })
      yield* locked.withLease((lease) => lease.ensure("1 hour"))
      expect(calls).toStrictEqual(["withLock"])
    }))
})

describe("SessionStore.load, save, clear and fromSimple", () => {
  it.effect("load, save and clear work over any store's record; a plain store is adapted by fromSimple", () =>
    Effect.gen(function*() {
      const saved = yield* Ref.make(Option.none<Session.Session>())
      const store = SessionStore.fromSimple({
        load: Ref.get(saved),
        save: (value) => Ref.set(saved, Option.some(value)),
        clear: Ref.set(saved, Option.none())
      })
      expect(yield* SessionStore.load(store)).toStrictEqual(Option.none())
      const written = yield* SessionStore.save(store, session)
      expect(written.revision).toBe(1)
      expect(Option.map(yield* SessionStore.load(store), (s) => Redacted.value(s.refreshToken))).toStrictEqual(
        Option.some(Redacted.value(session.refreshToken))
      )
      expect(Option.isSome(yield* Ref.get(saved))).toBe(true)
      const cleared = yield* SessionStore.clear(store)
      expect(cleared).toStrictEqual({ revision: 2, session: Option.none() })
      expect(yield* SessionStore.load(store)).toStrictEqual(Option.none())
      expect(yield* Ref.get(saved)).toStrictEqual(Option.none())
      // Its revision lives in memory: a second adapter over the same backend starts from the backend's value.
      expect((yield* store.read).revision).toBe(2)
    }))
})

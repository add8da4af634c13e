import * as NodeServices from "@effect/platform-node/NodeServices"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Option, Redacted } from "effect"
import { KeyValueStore } from "effect/persistence"
import { Session, SessionStore } from "moon-refresh"
import { PrivateKeyValueStore } from "moon-refresh/node"
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"

// The umask most systems give a user: without the store's own modes, files
// would be 0644 and directories 0755 here.
let umask = 0
let root = ""
beforeAll(() => {
  umask = process.umask(0o022)
  root = mkdtempSync(Path.join(Os.tmpdir(), "moon-refresh-private-kv-"))
})
afterAll(() => {
  process.umask(umask)
  rmSync(root, { recursive: true, force: true })
})

const modeOf = (path: string) => statSync(path).mode & 0o777
let dirs = 0
const freshDir = () => Path.join(root, `store-${++dirs}`, "nested")

const session = Session.unsafeMake({
  accessToken: "access-token-secret",
  refreshToken: "refresh-token-secret",
  expiresAt: Date.UTC(2030, 0, 1),
  user: { id: "u1" }
})

describe("PrivateKeyValueStore", () => {
  it.effect("writes the directory 0700 and each file 0600 under umask 0022, where layerFileSystem writes 0755 and 0644", () =>
    Effect.gen(function*() {
      const dir = freshDir()
      const kv = yield* PrivateKeyValueStore.make(dir)
      yield* kv.set("moon-session", "value")
      expect([modeOf(Path.dirname(dir)), modeOf(dir), modeOf(Path.join(dir, "moon-session"))]).toStrictEqual([
        0o700,
        0o700,
        0o600
      ])
      expect(yield* kv.get("moon-session")).toBe("value")

      // The platform's store, same umask: readable by every user of the machine.
      const platformDir = freshDir()
      yield* Effect.flatMap(KeyValueStore.KeyValueStore, (platform) => platform.set("moon-session", "value")).pipe(
        Effect.provide(KeyValueStore.layerFileSystem(platformDir).pipe(Layer.provide(NodeServices.layer)))
      )
      expect([modeOf(platformDir), modeOf(Path.join(platformDir, "moon-session"))]).toStrictEqual([0o755, 0o644])
    }))

  it.effect("under SessionStore.layerKeyValueStore, keeps the session's tokens in a 0600 file and loads them back", () =>
    Effect.gen(function*() {
      const dir = freshDir()
      const loaded = yield* Effect.gen(function*() {
        const store = yield* SessionStore.SessionStore
        yield* store.save(session)
        return yield* store.load
      }).pipe(
        Effect.provide(
          SessionStore.layerKeyValueStore({ key: "moon-session" }).pipe(
            Layer.provide(PrivateKeyValueStore.layerFileSystem(dir))
          )
        )
      )
      expect(Option.map(loaded, (s) => Redacted.value(s.refreshToken))).toStrictEqual(
        Option.some("refresh-token-secret")
      )
      const file = Path.join(dir, "moon-session")
      expect(modeOf(file)).toBe(0o600)
      expect(readFileSync(file, "utf8")).toContain("refresh-token-secret")
    }))

  it.effect("replaces a value atomically, leaving no temporary file, and makes a file another tool left 0644 private", () =>
    Effect.gen(function*() {
      const dir = freshDir()
      const kv = yield* PrivateKeyValueStore.make(dir)
      writeFileSync(Path.join(dir, "left-by-another-tool"), "old", { mode: 0o644 })
      yield* kv.set("left-by-another-tool", "new")
      yield* kv.set("bytes", new Uint8Array([1, 2, 3]))
      expect(modeOf(Path.join(dir, "left-by-another-tool"))).toBe(0o600)
      expect(yield* kv.get("left-by-another-tool")).toBe("new")
      expect(yield* kv.getUint8Array("bytes")).toStrictEqual(new Uint8Array([1, 2, 3]))
      expect(readdirSync(dir).sort()).toStrictEqual(["bytes", "left-by-another-tool"])
    }))

  it.effect("names files as layerFileSystem does, so its directory can be taken over once it is 0700", () =>
    Effect.gen(function*() {
      const dir = freshDir()
      yield* Effect.flatMap(KeyValueStore.KeyValueStore, (platform) => platform.set("users/ada", "written before"))
        .pipe(
          Effect.provide(KeyValueStore.layerFileSystem(dir).pipe(Layer.provide(NodeServices.layer)))
        )
      chmodSync(dir, 0o700)
      const kv = yield* PrivateKeyValueStore.make(dir)
      expect(readdirSync(dir)).toStrictEqual(["users%2Fada"])
      expect(yield* kv.get("users/ada")).toBe("written before")
    }))

  it.effect("refuses a directory other users can read, naming it and the chmod to run", () =>
    Effect.gen(function*() {
      const dir = Path.join(root, "open")
      mkdirSync(dir, { mode: 0o755 })
      const error = yield* Effect.flip(PrivateKeyValueStore.make(dir))
      expect(error._tag).toBe("FileStoreError")
      expect(error.reason).toBe("InsecurePermissions")
      expect(error.mode).toBe(0o755)
      expect(error.message).toBe(
        `PrivateKeyValueStore: the directory ${dir} has mode 0755: other users can reach the tokens it would hold; run \`chmod 700 ${dir}\``
      )
    }))

  it.effect("refuses a path that is a file, as a directory it cannot use", () =>
    Effect.gen(function*() {
      const file = Path.join(root, "a-file")
      writeFileSync(file, "", { mode: 0o600 })
      const error = yield* Effect.flip(PrivateKeyValueStore.make(file))
      expect([error.reason, error.path]).toStrictEqual(["Unavailable", file])
      expect(error.message).toMatch(/^PrivateKeyValueStore: cannot use /)
    }))

  it.effect("has the rest of a KeyValueStore: missing keys, remove, size, clear, and the keys layerFileSystem refuses", () =>
    Effect.gen(function*() {
      const kv = yield* PrivateKeyValueStore.make(freshDir())
      expect(yield* kv.get("missing")).toBeUndefined()
      expect(yield* kv.getUint8Array("missing")).toBeUndefined()
      yield* kv.set("a", "1")
      yield* kv.set("b", "2")
      expect([yield* kv.size, yield* kv.has("a")]).toStrictEqual([2, true])
      yield* kv.remove("a")
      yield* kv.remove("a")
      expect([yield* kv.size, yield* kv.has("a")]).toStrictEqual([1, false])
      yield* kv.clear
      expect(yield* kv.isEmpty).toBe(true)
      for (const key of ["", ".", ".."]) {
        const error = yield* Effect.flip(kv.set(key, "x"))
        expect(error._tag).toBe("KeyValueStoreError")
      }
    }))
})

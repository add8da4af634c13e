// docs/05-persistence.md: where a session is kept between runs.
import { KeyValueStore } from "@effect/platform"
import { NodeContext } from "@effect/platform-node"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as NodePath from "@effect/platform-node/NodePath"
import { Effect, Layer, Option, Schema } from "effect"
import { Session, SessionManager, SessionStore } from "moon-refresh"
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises"
import * as Path from "node:path"

// [memory]
// Nothing survives the process: for tests, or a session handed in at start.
export const InMemory = SessionStore.layerMemory()
// [/memory]

// [file]
// One JSON file per key under ./.moon (tokens in clear: keep the directory private).
export const OnDisk = SessionStore.layerKeyValueStore({ key: "moon-session" }).pipe(
  Layer.provide(KeyValueStore.layerFileSystem(".moon")),
  Layer.provide(NodeContext.layer)
)
// [/file]

// [browser]
// In a browser: localStorage, through the same KeyValueStore interface.
export const InLocalStorage = SessionStore.layerKeyValueStore({ key: "moon-session" }).pipe(
  Layer.provide(KeyValueStore.layerStorage(() => globalThis.localStorage))
)
// [/browser]

// [custom]
// Your own store: three effects (and, for a store shared by several processes,
// `withLock`: the manager re-reads the store inside it before refreshing).
// `Schema.parseJson(Session.Session)` is the stored form: tokens in clear.
const StoredSession = Schema.parseJson(Session.Session)

export const makeCustom = (backend: {
  readonly get: () => Promise<string | null>
  readonly set: (value: string) => Promise<void>
  readonly del: () => Promise<void>
}): SessionStore.Service => {
  const call = <A>(operation: "load" | "save" | "clear", f: () => Promise<A>) =>
    Effect.tryPromise({
      try: f,
      catch: () => new SessionStore.StoreError({ operation, message: `backend unavailable during ${operation}` })
    })
  // `make` fills in what the backend does not offer (here, the lock).
  return SessionStore.make({
    load: call("load", backend.get).pipe(
      // A value that does not decode is "no session", never a crash.
      Effect.map((json) => (json === null ? Option.none() : Schema.decodeUnknownOption(StoredSession)(json)))
    ),
    save: (session) =>
      Effect.flatMap(
        Effect.orDie(Schema.encode(StoredSession)(session)),
        (json) => call("save", () => backend.set(json))
      ),
    clear: call("clear", backend.del)
  })
}
// [/custom]

// [file-by-path]
// The same file store as OnDisk, importing @effect/platform-node's modules by
// path: with skipLibCheck false, its index needs @types/ws; these do not.
export const OnDiskByPath = SessionStore.layerKeyValueStore({ key: "moon-session" }).pipe(
  Layer.provide(KeyValueStore.layerFileSystem(".moon")),
  Layer.provide(Layer.merge(NodeFileSystem.layer, NodePath.layer))
)
// [/file-by-path]

// [file-node-fs]
// A session file without @effect/platform-node: makeCustom over node:fs.
// The directory is created 0700 and the file 0600; a save writes a temporary
// file and renames it, so a crash mid-save never leaves half a session.
export const layerFile = (dir: string) => {
  const file = Path.join(dir, "session.json")
  return Layer.succeed(
    SessionStore.SessionStore,
    makeCustom({
      get: () => readFile(file, "utf8").catch((error) => (error.code === "ENOENT" ? null : Promise.reject(error))),
      set: async (value) => {
        await mkdir(dir, { recursive: true, mode: 0o700 })
        await writeFile(`${file}.tmp`, value, { mode: 0o600 })
        await rename(`${file}.tmp`, file)
      },
      del: () => rm(file, { force: true })
    })
  )
}

export const OnDiskNodeFs = layerFile(".moon")
// [/file-node-fs]

// [signin]
// Start from a Moon login response (same body shapes as a refresh), then let
// the manager keep the session alive.
export const signInFromLogin = (loginResponseBody: unknown) =>
  Effect.gen(function*() {
    const session = yield* Schema.decodeUnknown(Session.MoonResponse)(loginResponseBody)
    yield* SessionManager.signIn(session)
  })
// [/signin]

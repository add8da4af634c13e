/**
 * A `KeyValueStore` (`effect/persistence`) on files only their owner can
 * read: what `KeyValueStore.layerFileSystem` is, for values that hold tokens.
 *
 * `KeyValueStore.layerFileSystem` writes each value with the process's umask:
 * under the usual `0022`, its directory is `0755` and its files `0644`, so any
 * user of the machine can read a session stored there, refresh token
 * included. A `KeyValueStore` has no notion of permissions, so nothing built
 * on one (`SessionStore.layerKeyValueStore` included) can promise more than
 * the store under it. This one promises it:
 *
 * - **Private.** The directory is created `0700` and every file `0600`,
 *   whatever the umask. An existing directory that other users can read or
 *   enter is refused with a `FileStoreError` (`reason: "InsecurePermissions"`,
 *   with the `chmod` to run), as `NodeSessionStore` refuses one.
 * - **Atomic.** A value is written to a temporary file in the directory,
 *   flushed, and renamed over the old one: a reader sees the old value or the
 *   new, never a part, and a crash mid-write loses nothing.
 * - **The same files.** Keys are file names as `layerFileSystem` makes them
 *   (`encodeURIComponent(key)`), so a directory it wrote can be taken over
 *   once its mode is `0700` (values written since are `0600`).
 *
 * It is still one process's store: for a session that several processes
 * share, use `NodeSessionStore`. Node only: import it from `moon-refresh/node`;
 * it needs no `FileSystem` or `Path` service. Modes are not set or checked on
 * Windows, where ACLs decide.
 *
 * @since 0.3.0
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as KeyValueStore from "effect/persistence/KeyValueStore"
import * as Fs from "node:fs/promises"
import * as Path from "node:path"
import * as FileStore from "./internal/fileStore.js"
import * as PrivateFile from "./internal/privateFile.js"
import { FileStoreError } from "./NodeSessionStore.js"

const codeOf = (error: unknown): unknown =>
  typeof error === "object" && error !== null && "code" in error ? error.code : undefined

const isMissing = (error: unknown): boolean => codeOf(error) === "ENOENT"

// The words `@effect/platform`'s `SystemError` began its message with.
const reasonOf = (error: unknown): string => {
  switch (codeOf(error)) {
    case "ENOENT":
      return "NotFound"
    case "EACCES":
    case "EPERM":
      return "PermissionDenied"
    case "EEXIST":
      return "AlreadyExists"
    case "EISDIR":
      return "BadResource"
    default:
      return "Unknown"
  }
}

// A file-system error names the call and the path, never the value. The
// message is worded as before Effect 4 (`<reason>: KeyValueStore.<method>
// (<path>): <cause>`), so a `StoreError` built from it reads the same.
const call = <A>(method: string, path: string, f: () => Promise<A>, key?: string) =>
  Effect.tryPromise({
    try: f,
    catch: (cause) =>
      new KeyValueStore.KeyValueStoreError({
        method,
        ...(key === undefined ? {} : { key }),
        message: `${reasonOf(cause)}: KeyValueStore.${method} (${path}): ${
          cause instanceof Error ? cause.message : String(cause)
        }`,
        cause
      })
  })

// A missing file is a missing key.
const orUndefined = <A>(method: string, path: string, key: string, f: () => Promise<A>) =>
  call(method, path, () => f().catch((error) => isMissing(error) ? undefined : Promise.reject(error)), key)

// The keys `layerFileSystem` refuses, refused the same way.
const withKey = <A>(
  dir: string,
  method: string,
  key: string,
  f: (path: string) => Effect.Effect<A, KeyValueStore.KeyValueStoreError>
) =>
  key.length === 0 || key === "." || key === ".."
    ? Effect.fail(new KeyValueStore.KeyValueStoreError({ method, key, message: `Invalid key ${key}` }))
    : f(Path.join(dir, encodeURIComponent(key)))

// The values' files: every name but the temporary files of writes in flight.
const files = (dir: string, method: string) =>
  Effect.map(
    call(method, dir, () => Fs.readdir(dir)),
    (names) => names.filter((name) => !name.startsWith(PrivateFile.temporaryPrefix))
  )

const store = (dir: string): KeyValueStore.KeyValueStore =>
  KeyValueStore.make({
    get: (key) => withKey(dir, "get", key, (path) => orUndefined("get", path, key, () => Fs.readFile(path, "utf8"))),
    getUint8Array: (key) =>
      withKey(dir, "getUint8Array", key, (path) =>
        orUndefined("getUint8Array", path, key, async () =>
          new Uint8Array(await Fs.readFile(path)))),
    set: (key, value) =>
      withKey(dir, "set", key, (path) =>
        // Half a replacement is worse than none or a whole one.
        Effect.uninterruptible(call("set", path, () =>
          PrivateFile.write(path, value), key))),
    remove: (key) =>
      withKey(dir, "remove", key, (path) => call("remove", path, () => Fs.rm(path, { force: true }), key)),
    // The files only, not the directory: removing it would drop its mode.
    clear: Effect.flatMap(files(dir, "clear"), (names) =>
      Effect.forEach(names, (name) =>
        call("clear", dir, () =>
          Fs.rm(Path.join(dir, name), { force: true })), {
        discard: true
      })),
    size: Effect.map(files(dir, "size"), (names) =>
      names.length),
    // As `layerFileSystem` reads them back: a name that does not decode fails.
    keys: Effect.flatMap(files(dir, "keys"), (names) =>
      call("keys", dir, () =>
        Promise.resolve().then(() => names.map(decodeURIComponent))))
  })

/**
 * Checks (or creates, mode `0700`) the directory and gives the store on it.
 * Fails with a `FileStoreError` when the directory cannot be used: other
 * users can read or enter it (`InsecurePermissions`), it is not a directory,
 * or it cannot be created.
 *
 * @since 0.3.0
 * @category constructors
 */
export const make = (directory: string): Effect.Effect<KeyValueStore.KeyValueStore, FileStoreError> =>
  FileStore.prepareDirectory(directory).pipe(
    Effect.mapError((refusal) =>
      new FileStoreError({
        ...refusal,
        // The refusal is worded for the session file; this is the store's directory.
        message: refusal.message.replace(/^NodeSessionStore:/, "PrivateKeyValueStore:")
      })
    ),
    Effect.map(store)
  )

/**
 * The `KeyValueStore` on a private directory; see {@link make}. Where a
 * program provides `KeyValueStore.layerFileSystem(directory)`, this layer
 * takes the same directory, needs no `FileSystem` or `Path`, and keeps the
 * files to their owner.
 *
 * @example
 * ```ts
 * import { Layer } from "effect"
 * import { SessionStore } from "moon-refresh"
 * import { PrivateKeyValueStore } from "moon-refresh/node"
 *
 * // The session in .moon/moon-session: directory 0700, file 0600.
 * const StoreLive = SessionStore.layerKeyValueStore({ key: "moon-session" }).pipe(
 *   Layer.provide(PrivateKeyValueStore.layerFileSystem(".moon"))
 * )
 * ```
 *
 * @since 0.3.0
 * @category layers
 */
export const layerFileSystem = (directory: string): Layer.Layer<KeyValueStore.KeyValueStore, FileStoreError> =>
  Layer.effect(KeyValueStore.KeyValueStore, make(directory))

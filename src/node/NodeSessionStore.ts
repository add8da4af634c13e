/**
 * A session file that several Node processes on one host share safely: CLIs,
 * workers, the replicas of a single-host server. One refresh per expiry among
 * all of them, sign-outs that reach every process, and a file only its owner
 * can read.
 *
 * - **Atomic writes**: a temporary file in the same directory, flushed, then
 *   renamed over the file. A reader sees the old record or the new one,
 *   never a part; a crash mid-write leaves the old one.
 * - **Fenced writes**: the file holds `SessionStore.StoredJson` (the session
 *   and a revision). A write names the revision it replaces and is refused
 *   (`StoreConflictError`) if the record moved on, so a sign-out cannot be
 *   undone by a process that still holds the old session.
 * - **A lock with an owner, that survives a crash**: the directory
 *   `<path>.lock` holds one entry per holder, written only by that holder
 *   (renewed in place, released by its owner only), held as a lease. A
 *   waiter takes it over from a holder whose entry has not changed for a
 *   whole lease, measured on the waiter's own monotonic clock (no clock is
 *   compared with another, so a clock step changes nothing): a holder killed
 *   with SIGKILL holds it for about one lease. A holder frozen past its lease
 *   (SIGSTOP, a paused container) finds on resuming that it lost it, and
 *   neither writes nor releases anything another holder has.
 * - **A change feed**: file-system notifications on the directory, and a
 *   re-read every `pollInterval` where those are unreliable.
 * - **Private**: the directory is created `0700` and the file `0600`, whatever
 *   the umask; an existing file or directory that other users can read is
 *   refused with a `FileStoreError`.
 *
 * For a `SessionPool` (one session per user of a server), `makeKeyed` and
 * `layerKeyed` give the same for each key: one file per key in a directory.
 *
 * Node only: import it from `moon-refresh/node`. See docs/08-many-processes.md
 * for the guarantees and their limits.
 *
 * @since 0.2.0
 */
import type * as Config from "effect/Config"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Options_ from "../internal/options.js"
import * as SessionStore from "../SessionStore.js"
import * as FileStore from "./internal/fileStore.js"
import * as FileStoreKeyed from "./internal/fileStoreKeyed.js"

/**
 * The store could not be built on this path. `reason` says why:
 *
 * - `InsecurePermissions`: the file or its directory can be read by other
 *   users (`mode` holds its permission bits); `chmod 600` the file, `chmod 700`
 *   the directory.
 * - `NotAFile`: the path is a directory, a symbolic link or a device.
 * - `NotADirectory`: something that is not a directory stands where the
 *   file's directory should be.
 * - `Unavailable`: the directory could not be created or read.
 *
 * The message names the path, never a token.
 *
 * @since 0.2.0
 * @category errors
 */
export class FileStoreError extends Schema.TaggedError<FileStoreError>("moon-refresh/FileStoreError")(
  "FileStoreError",
  {
    path: Schema.String,
    reason: Schema.Literals(["InsecurePermissions", "NotAFile", "NotADirectory", "Unavailable"]),
    mode: Schema.optional(Schema.Number),
    message: Schema.String
  }
) {}

/**
 * @since 0.2.0
 * @category models
 */
export interface Options {
  /** The session file. Its directory is created (mode `0700`) if missing. */
  readonly path: string
  /**
   * How long a holder that died (or froze) keeps the lock before another
   * process takes it over: a waiter takes over once the holder's entry has
   * not changed for a whole lease, on the waiter's own monotonic clock. A live
   * holder renews it every third of it, and acts under it only while 95% of
   * a lease has not passed since its last renewal began (5% is its margin for
   * the time a renewal takes). So `lease.ensure(atLeast)` (see
   * `SessionStore.Lease`), called before each refresh POST with the request
   * timeout plus a margin, succeeds for `atLeast` up to 95% of the lease.
   *
   * Default 15 seconds: the `RefreshClient`'s default timeout (10 s) plus a
   * 5 s margin, of which the lock keeps 0.75 s, leaving 4.25 s for the
   * caller's own margin. At least 2 seconds (a renewal every 667 ms).
   */
  readonly lease?: Duration.Input | undefined
  /**
   * The longest to wait for the lock (a `StoreError` with operation `"lock"`
   * after it). The `SessionManager`'s own `lockTimeout` applies on top.
   * Default 30 seconds.
   */
  readonly lockTimeout?: Duration.Input | undefined
  /**
   * How often the file is re-read for the change feed, in case a
   * file-system notification is lost (network shares, some containers).
   * Default 2 seconds.
   */
  readonly pollInterval?: Duration.Input | undefined
}

/**
 * @since 0.2.0
 * @category constants
 */
export const defaults = {
  lease: Duration.seconds(15),
  lockTimeout: Duration.seconds(30),
  pollInterval: Duration.seconds(2)
} as const

const owner = "NodeSessionStore"

// Renewals come every third of the lease: shorter, and one slow disk write or
// event-loop pause of a few hundred milliseconds would cost the holder its lock.
const shortestLease = 2000

interface Checked extends FileStore.Config {
  readonly path: string
}

const resolve = (options: Options): Result.Result<Checked, Options_.Invalid> =>
  Result.gen(function*() {
    if (typeof options.path !== "string" || options.path.trim() === "") {
      return yield* Result.fail({ owner, option: "path", reason: "must be the path of a file" })
    }
    return { ...yield* resolveTimes(options), path: options.path }
  })

const resolveTimes = (options: Omit<Options, "path">): Result.Result<FileStore.Config, Options_.Invalid> =>
  Result.gen(function*() {
    const lease = yield* Options_.millis(owner, "lease", options.lease ?? defaults.lease, "positive")
    if (lease < shortestLease) {
      return yield* Result.fail({ owner, option: "lease", reason: "must be at least 2 seconds" })
    }
    return {
      lease,
      lockTimeout: yield* Options_.millis(
        owner,
        "lockTimeout",
        options.lockTimeout ?? defaults.lockTimeout,
        "positive"
      ),
      pollInterval: yield* Options_.millis(
        owner,
        "pollInterval",
        options.pollInterval ?? defaults.pollInterval,
        "positive"
      )
    }
  })

/**
 * Opens the session file at `options.path`: checks (or creates) its
 * directory and the file's permissions, then starts the change feed, which
 * lives in the scope. Fails with a `FileStoreError` when the path cannot be
 * used; dies (a defect naming the option) when an option is invalid.
 *
 * Two stores made on one path, in one process or in several, coordinate
 * through the file system as two processes do.
 *
 * @since 0.2.0
 * @category constructors
 */
export const make = (options: Options): Effect.Effect<SessionStore.Service, FileStoreError, Scope.Scope> =>
  Effect.flatMap(Options_.orDie(resolve(options)), build)

const build = (config: Checked): Effect.Effect<SessionStore.Service, FileStoreError, Scope.Scope> =>
  FileStore.prepare(config.path).pipe(
    Effect.mapError((refusal) => new FileStoreError(refusal)),
    Effect.flatMap((location) => FileStore.makeService(location, config))
  )

/**
 * The `SessionStore` on a session file; see {@link make}.
 *
 * @example
 * ```ts
 * import { Layer } from "effect"
 * import { FetchHttpClient } from "effect/http"
 * import { RefreshClient, SessionManager } from "moon-refresh"
 * import { NodeSessionStore } from "moon-refresh/node"
 *
 * // Every process of the program (a CLI, its workers) uses the same file.
 * const SessionLive = SessionManager.layer().pipe(
 *   Layer.provide(RefreshClient.layer()),
 *   Layer.provide(NodeSessionStore.layer({ path: ".moon/session.json" })),
 *   Layer.provide(FetchHttpClient.layer)
 * )
 * ```
 *
 * @since 1.0.0
 * @category layers
 */
export const layer = (options: Options): Layer.Layer<SessionStore.SessionStore, FileStoreError> =>
  Layer.effect(SessionStore.SessionStore, make(options))

/**
 * {@link layer} with the options read from `Config`: one `Config` of them, or
 * a `Config` per option. An invalid value is a `Config.ConfigError` naming
 * the option, where {@link layer} would die.
 *
 * @example
 * ```ts
 * import { Config } from "effect"
 * import { NodeSessionStore } from "moon-refresh/node"
 *
 * const StoreLive = NodeSessionStore.layerConfig({
 *   path: Config.String("MOON_SESSION_FILE").pipe(Config.withDefault(".moon/session.json"))
 * })
 * ```
 *
 * @since 1.0.0
 * @category layers
 */
export const layerConfig = (
  config: Config.Wrap<Options>
): Layer.Layer<SessionStore.SessionStore, FileStoreError | Config.ConfigError> =>
  Layer.effect(SessionStore.SessionStore, Effect.flatMap(Options_.fromConfig(config, resolve), build))

/**
 * The `SessionStore` on a session file.
 *
 * @deprecated Use {@link layer}: every store's layer has that name
 * (`BrowserSessionStore.layer`, `RedisSessionStore.layer`). Kept for 0.3 code;
 * goes in 2.0.
 *
 * @since 0.2.0
 * @category layers
 */
export const layerFile = (options: Options): Layer.Layer<SessionStore.SessionStore, FileStoreError> => layer(options)

/**
 * @since 0.2.0
 * @category models
 */
export interface KeyedOptions extends Omit<Options, "path"> {
  /**
   * The directory of the session files, one per key. Created (mode `0700`)
   * if missing; refused if other users can read it. Keep it for these files
   * only.
   */
  readonly directory: string
}

/**
 * The name of `key`'s session file in a keyed store's directory: the hex
 * SHA-256 of the key's UTF-8 bytes, then `.json` (its lock is the same name
 * with `.lock` added). Whatever the key holds (`../`, `/`, NUL, a megabyte,
 * letters that differ only in case), the name is 69 characters of `[0-9a-f]`
 * and `.json`: it stays inside the directory and never meets another key's,
 * on any file system. The name does not say whose file it is: compute it
 * from the key to find one.
 *
 * @since 0.2.0
 * @category utils
 */
export const keyFileName = (key: string): string => FileStoreKeyed.fileNameOf(key)

interface CheckedKeyed extends FileStore.Config {
  readonly directory: string
}

const resolveKeyed = (options: KeyedOptions): Result.Result<CheckedKeyed, Options_.Invalid> =>
  typeof options.directory !== "string" || options.directory.trim() === ""
    ? Result.fail({ owner, option: "directory", reason: "must be the path of a directory" })
    : Result.map(resolveTimes(options), (config) => ({ ...config, directory: options.directory }))

/**
 * Opens a keyed store on `options.directory`: one session file per key
 * (your application's user id), named by {@link keyFileName}, each with its
 * own lock (`<name>.lock`) and record, as {@link make} gives for one file.
 * What a `SessionPool` needs, with several processes sharing the directory.
 *
 * `forKey` does no I/O and holds nothing: a key's store is built each time it
 * is asked for (the same file every time), and its change feed costs nothing
 * until it runs. The directory has one watcher and one poll, shared by every
 * key whose feed runs, and only while one does. A key that is empty or not
 * well-formed Unicode (a lone surrogate) fails with a `StoreError` whose
 * operation is `"key"`.
 *
 * Fails with a `FileStoreError` when the directory cannot be used; dies (a
 * defect naming the option) when an option is invalid.
 *
 * @since 0.2.0
 * @category constructors
 */
export const makeKeyed = (
  options: KeyedOptions
): Effect.Effect<SessionStore.Keyed, FileStoreError, Scope.Scope> =>
  Effect.flatMap(Options_.orDie(resolveKeyed(options)), buildKeyed)

const buildKeyed = (config: CheckedKeyed): Effect.Effect<SessionStore.Keyed, FileStoreError, Scope.Scope> =>
  FileStore.prepareDirectory(config.directory).pipe(
    Effect.mapError((refusal) => new FileStoreError(refusal)),
    Effect.flatMap((dir) => FileStoreKeyed.makeKeyed(dir, config)),
    Effect.map(({ keyed }) => keyed)
  )

/**
 * The `KeyedSessionStore` on a directory of session files; see
 * {@link makeKeyed}.
 *
 * @example
 * ```ts
 * import { Layer } from "effect"
 * import { FetchHttpClient } from "effect/http"
 * import { RefreshClient, SessionPool } from "moon-refresh"
 * import { NodeSessionStore } from "moon-refresh/node"
 *
 * // One file per user in .moon/sessions/, shared by every process of the server.
 * const PoolLive = SessionPool.layer().pipe(
 *   Layer.provide(RefreshClient.layer()),
 *   Layer.provide(NodeSessionStore.layerKeyed({ directory: ".moon/sessions" })),
 *   Layer.provide(FetchHttpClient.layer)
 * )
 * ```
 *
 * @since 0.2.0
 * @category layers
 */
export const layerKeyed = (
  options: KeyedOptions
): Layer.Layer<SessionStore.KeyedSessionStore, FileStoreError> =>
  Layer.effect(SessionStore.KeyedSessionStore, makeKeyed(options))

/**
 * {@link layerKeyed} with the options read from `Config`: one `Config` of
 * them, or a `Config` per option. An invalid value is a `Config.ConfigError`
 * naming the option, where {@link layerKeyed} would die.
 *
 * @since 1.0.0
 * @category layers
 */
export const layerKeyedConfig = (
  config: Config.Wrap<KeyedOptions>
): Layer.Layer<SessionStore.KeyedSessionStore, FileStoreError | Config.ConfigError> =>
  Layer.effect(SessionStore.KeyedSessionStore, Effect.flatMap(Options_.fromConfig(config, resolveKeyed), buildKeyed))

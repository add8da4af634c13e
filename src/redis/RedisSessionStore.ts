/**
 * A `SessionStore` on Redis, for several replicas or workers acting for the
 * same Moon account: they share one record, one lock and one change feed.
 *
 * - The record: `SessionStore.StoredJson` under `key`, with its revision. A
 *   write is a script that compares the revision and sets the record and
 *   publishes it in one step (fenced): a holder that stalled past its lease
 *   cannot overwrite a newer session or a sign-out.
 * - The lock: `SET key:lock token NX PX lease`, renewed while the refresh
 *   runs, deleted only by its owner (compare-and-delete), and given up by
 *   lease expiry when the holder dies.
 * - The change feed: a `PUBLISH` on `key:changes` with every write (keyspace
 *   notifications are off on most servers), and a re-read after every
 *   reconnect, since pub/sub forgets what it sent while a subscriber was away.
 *
 * Reads of the `SessionManager` stay in memory, and its single flight stays
 * in the process: Redis is only asked at a refresh, a sign-in or a sign-out.
 *
 * For a `SessionPool` (one session per user of a server), `makeKeyed` and
 * `layerKeyed` give the same for each user key under a prefix, with one
 * subscriber connection for all of them.
 *
 * Needs `ioredis` (an optional peer dependency of `moon-refresh`).
 *
 * @since 0.2.0
 */
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import * as SchemaIssue from "effect/SchemaIssue"
import type * as Scope from "effect/Scope"
import type { RedisOptions } from "ioredis"
import { Redis } from "ioredis"
import * as Options_ from "../internal/options.js"
import * as SessionStore from "../SessionStore.js"
import * as Internal from "./internal/redis.js"

/**
 * The ioredis client the store runs its commands on. The store opens one
 * more connection of its own for the change feed (`client.duplicate()`).
 *
 * @since 0.2.0
 * @category tags
 */
export class RedisClient extends Context.Service<RedisClient, Redis>()("moon-refresh/RedisSessionStore/RedisClient") {}

/**
 * @since 0.2.0
 * @category models
 */
export interface Options {
  /**
   * The key of the record, one per Moon account (for example
   * `"moon-session:ada"`). The lock is `key:lock`, the channels `key:changes`
   * and `key:released`, so a hash tag in the key (`"{moon-session:ada}"`)
   * keeps them on one Redis Cluster slot.
   */
  readonly key: string
  /**
   * How long a lock outlives a holder that died (Redis expires it). A live
   * holder renews it every third of it while its refresh runs (owner-checked:
   * a renewal of a lock that expired or passed to another holder fails, and
   * the holder knows it lost it). `lease.ensure(atLeast)` (see
   * `SessionStore.Lease`), called before each refresh POST with the request
   * timeout plus a margin, renews it and succeeds for `atLeast` up to 95% of
   * the lease (5% is kept for the time the renewal takes).
   *
   * Default 15 seconds: the `RefreshClient`'s default timeout (10 s) plus a
   * 5 s margin, of which the lock keeps 0.75 s, leaving 4.25 s for the
   * caller's own margin. At least twice `timeout`, so that a renewal sent at
   * a third of the lease is answered (or given up) before the lease ends.
   */
  readonly lease?: Duration.Input | undefined
  /**
   * The longest to wait for the lock before failing with a `StoreError`
   * (`operation: "lock"`). Keep it above `lease`, so a holder that died is
   * taken over within it. Default 30 seconds.
   */
  readonly lockTimeout?: Duration.Input | undefined
  /**
   * The longest one Redis operation may take, waiting for the connection
   * included, before it fails with a `StoreError`. Default 2 seconds.
   */
  readonly timeout?: Duration.Input | undefined
}

/**
 * @since 0.2.0
 * @category constants
 */
export const defaults = {
  lease: Duration.seconds(15),
  lockTimeout: Duration.seconds(30),
  timeout: Duration.seconds(2)
} as const

const owner = "RedisSessionStore"

const resolve = (options: Options): Result.Result<Internal.Settings, Options_.Invalid> =>
  Result.gen(function*() {
    const millis = (option: keyof typeof defaults) =>
      Options_.millis(owner, option, options[option] ?? defaults[option], "positive")
    const key = typeof options.key === "string" && options.key.length > 0
      ? options.key
      : yield* Result.fail({ owner, option: "key", reason: "must be a non-empty string" })
    // Redis counts a lease in whole milliseconds.
    const lease = Math.ceil(yield* millis("lease"))
    const timeout = yield* millis("timeout")
    if (lease < 2 * timeout) {
      return yield* Result.fail({ owner, option: "lease", reason: "must be at least twice `timeout`" })
    }
    return { key, lease, lockTimeout: yield* millis("lockTimeout"), timeout }
  })

/**
 * The ioredis settings of the clients this module creates. Spread them into
 * your own client's options to get the same behaviour when Redis is down:
 *
 * - `enableOfflineQueue: false`: a command sent while disconnected fails at
 *   once instead of waiting in a queue and running later, after the store
 *   gave up on it (a late `SET NX` would hold the lock for a whole lease).
 *   The store waits for the connection itself, within its `timeout`.
 * - `maxRetriesPerRequest: 0` and `autoResendUnfulfilledCommands: false`: a
 *   command in flight when the connection drops fails at once and is not
 *   sent again on reconnect.
 * - `socketTimeout: 5000`: a server that stops answering (frozen, or a
 *   connection that died silently) is dropped and reconnected.
 * - `connectTimeout: 5000`; ioredis's default `retryStrategy` reconnects
 *   forever, backing off to 2 seconds.
 *
 * A client with other settings works too: every operation is bounded by the
 * store's `timeout` whatever the client does.
 *
 * @since 0.2.0
 * @category constants
 */
export const clientOptions: RedisOptions = Internal.clientOptions

/**
 * Builds the store on the `RedisClient` in context. The change feed's
 * connection lives in the scope. Dies (a defect naming the option) when an
 * option is invalid. Connects lazily: no Redis needs to be up for this to
 * succeed, and operations fail with a `StoreError` until it is.
 *
 * @since 0.2.0
 * @category constructors
 */
export const make = (options: Options): Effect.Effect<SessionStore.Service, never, RedisClient | Scope.Scope> =>
  Effect.flatMap(Options_.orDie(resolve(options)), build)

const build = (settings: Internal.Settings): Effect.Effect<SessionStore.Service, never, RedisClient | Scope.Scope> =>
  Effect.flatMap(RedisClient, (client) => Internal.makeStore(client, settings))

/**
 * The store as a layer, on the `RedisClient` in context.
 *
 * @example
 * ```ts
 * import { Layer } from "effect"
 * import { RefreshClient, SessionManager } from "moon-refresh"
 * import { RedisSessionStore } from "moon-refresh/redis"
 *
 * // Every replica acting for this account uses the same key.
 * export const SessionLive = SessionManager.layer().pipe(
 *   Layer.provide(RefreshClient.layer()),
 *   Layer.provide(RedisSessionStore.layer({ key: "moon-session:ada" })),
 *   Layer.provide(RedisSessionStore.layerClientFromEnv()) // REDIS_URL
 * )
 * ```
 *
 * @since 0.2.0
 * @category layers
 */
export const layer = (options: Options): Layer.Layer<SessionStore.SessionStore, never, RedisClient> =>
  Layer.effect(SessionStore.SessionStore, make(options))

/**
 * Opens an ioredis client on `url` with {@link clientOptions} (and
 * `options` over them), and closes it with the scope.
 *
 * @since 0.2.0
 * @category constructors
 */
export const makeClient = (
  url: Redacted.Redacted<string> | string,
  options: RedisOptions = {}
): Effect.Effect<Redis, never, Scope.Scope> =>
  Effect.flatMap(Effect.context<never>(), (services) =>
    Effect.acquireRelease(
      Effect.sync(() => {
        const client = new Redis(Redacted.isRedacted(url) ? Redacted.value(url) : url, {
          ...clientOptions,
          ...options
        })
        // Without a listener ioredis prints every failed reconnect; the
        // store's operations report what matters as `StoreError`s.
        client.on("error", (error: Error) =>
          Effect.runForkWith(services)(Effect.logDebug(`moon-refresh: Redis client: ${error.message}`)))
        return client
      }),
      Internal.close
    ))

/**
 * A client you already have. The layer does not close it.
 *
 * @since 0.2.0
 * @category layers
 */
export const layerClient = (client: Redis): Layer.Layer<RedisClient> => Layer.succeed(RedisClient, client)

const isRedisUrl = (url: string): boolean => {
  try {
    const protocol = new URL(url).protocol
    return protocol === "redis:" || protocol === "rediss:"
  } catch {
    return false
  }
}

// The refusal quotes no input: the URL may hold a password.
const notRedisUrl = () =>
  new Config.ConfigError(
    new Schema.SchemaError(new SchemaIssue.InvalidValue({ message: "must be a redis:// or rediss:// URL" }))
  )

/**
 * A client on the URL the `Config` gives, opened with {@link clientOptions}
 * (and `options` over them) and closed with the layer's scope. A URL that is
 * not `redis://` or `rediss://` is a `ConfigError`. Read it as a `Redacted`
 * (`Config.Redacted`): it may hold a password.
 *
 * @example
 * ```ts
 * import { Config } from "effect"
 * import { RedisSessionStore } from "moon-refresh/redis"
 *
 * const ClientLive = RedisSessionStore.layerClientConfig(Config.Redacted("SESSIONS_REDIS_URL"))
 * ```
 *
 * @since 1.0.0
 * @category layers
 */
export function layerClientConfig(
  url: Config.Config<Redacted.Redacted<string>>,
  options?: RedisOptions
): Layer.Layer<RedisClient, Config.ConfigError>
/**
 * Called without a `Config`: the URL in `REDIS_URL`, as 0.3's
 * `layerClientConfig()` read it.
 *
 * @deprecated Use {@link layerClientFromEnv}`()`, named for the variable it
 * reads. Kept for 0.3 code; goes in 2.0.
 *
 * @since 0.2.0
 * @category layers
 */
export function layerClientConfig(): Layer.Layer<RedisClient, Config.ConfigError>
export function layerClientConfig(
  url: Config.Config<Redacted.Redacted<string>> = Config.Redacted(redisUrlVariable),
  options: RedisOptions = {}
): Layer.Layer<RedisClient, Config.ConfigError> {
  return Layer.effect(
    RedisClient,
    Effect.flatMap(
      Config.mapEffect(url, (u) => isRedisUrl(Redacted.value(u)) ? Effect.succeed(u) : Effect.fail(notRedisUrl())),
      (valid) => makeClient(valid, options)
    )
  )
}

const redisUrlVariable = "REDIS_URL"

/**
 * A client on the URL in the environment variable `REDIS_URL` (read through
 * the `ConfigProvider`, as a `Redacted`); otherwise {@link layerClientConfig}.
 *
 * @since 1.0.0
 * @category layers
 */
export const layerClientFromEnv = (options?: RedisOptions): Layer.Layer<RedisClient, Config.ConfigError> =>
  layerClientConfig(Config.Redacted(redisUrlVariable), options)

/**
 * {@link layer} with the options read from `Config`: one `Config` of them, or
 * a `Config` per option. An invalid value is a `Config.ConfigError` naming
 * the option, where {@link layer} would die. Needs a `RedisClient`, as
 * {@link layer} does.
 *
 * @example
 * ```ts
 * import { Config, Layer } from "effect"
 * import { RedisSessionStore } from "moon-refresh/redis"
 *
 * export const StoreLive = RedisSessionStore.layerConfig({
 *   key: Config.String("MOON_SESSION_KEY"),
 *   lease: Config.Duration("MOON_LOCK_LEASE").pipe(Config.withDefault("15 seconds"))
 * }).pipe(Layer.provide(RedisSessionStore.layerClientFromEnv()))
 * ```
 *
 * @since 1.0.0
 * @category layers
 */
export function layerConfig(
  config: Config.Wrap<Options>
): Layer.Layer<SessionStore.SessionStore, Config.ConfigError, RedisClient>
/**
 * Given plain options: the store with a client of its own from `REDIS_URL`,
 * as 0.3's `layerConfig(options)` was.
 *
 * @deprecated Use {@link layerFromEnv}`(options)`, named for the variable it
 * reads; `layerConfig` takes `Config.Wrap<Options>`. Kept for 0.3 code; goes in 2.0.
 *
 * @since 0.2.0
 * @category layers
 */
export function layerConfig(options: Options): Layer.Layer<SessionStore.SessionStore, Config.ConfigError>
export function layerConfig(
  config: Config.Wrap<Options> | Options
): Layer.Layer<SessionStore.SessionStore, Config.ConfigError, RedisClient> {
  return isPlain<Options>(config)
    ? layerFromEnv(config)
    : Layer.effect(SessionStore.SessionStore, Effect.flatMap(Options_.fromConfig(config, resolve), build))
}

// 0.3's plain options, told from `Config.Wrap<Options>` (whose `key` is a `Config`, or which is one).
const isPlain = <O>(config: Config.Wrap<O> | O): config is O =>
  !Config.isConfig(config) && Object.values(config as object).every((value) => !Config.isConfig(value))

/**
 * The store with a client of its own on the URL in the environment variable
 * `REDIS_URL`: {@link layer} and {@link layerClientFromEnv} in one.
 *
 * @example
 * ```ts
 * import { Layer } from "effect"
 * import { RefreshClient, SessionManager } from "moon-refresh"
 * import { RedisSessionStore } from "moon-refresh/redis"
 *
 * export const SessionLive = SessionManager.layer().pipe(
 *   Layer.provide(RefreshClient.layer()),
 *   Layer.provide(RedisSessionStore.layerFromEnv({ key: "moon-session:ada" }))
 * )
 * ```
 *
 * @since 1.0.0
 * @category layers
 */
export const layerFromEnv = (options: Options): Layer.Layer<SessionStore.SessionStore, Config.ConfigError> =>
  layer(options).pipe(Layer.provide(layerClientFromEnv()))

/**
 * @since 0.2.0
 * @category models
 */
export interface KeyedOptions extends Omit<Options, "key"> {
  /**
   * What every record key starts with, for example `"moon-session:"`. A
   * user key's record is {@link recordKey}`(prefix, key)`, its lock and
   * channels that with `:lock`, `:changes` and `:released` added. No braces:
   * the key's part is the Redis Cluster hash tag.
   */
  readonly prefix: string
}

/**
 * The Redis key of a user key's record: `prefix{key}`, the key
 * percent-encoded (`encodeURIComponent`). The encoding is reversible
 * (`decodeURIComponent` of what is between the braces gives the key back)
 * and leaves no `:` and no braces, so no user key's record can be another's
 * lock or channel, and the braces make it the Redis Cluster hash tag (a
 * record and its lock on one slot).
 *
 * @since 0.2.0
 * @category utils
 */
export const recordKey = (prefix: string, key: string): string => Internal.recordKey(prefix, key)

const resolveKeyed = (options: KeyedOptions): Result.Result<Internal.KeyedSettings, Options_.Invalid> =>
  Result.gen(function*() {
    const prefix = typeof options.prefix === "string" && options.prefix.length > 0 && !/[{}]/.test(options.prefix)
      ? options.prefix
      : yield* Result.fail({ owner, option: "prefix", reason: "must be a non-empty string without braces" })
    const { key: _, ...settings } = yield* resolve({ ...options, key: prefix })
    return { ...settings, prefix }
  })

/**
 * Builds a keyed store on the `RedisClient` in context: one record, lock and
 * change feed per user key (your application's user id) under `prefix`, as
 * {@link make} gives for one key. What a `SessionPool` needs, with several
 * replicas sharing Redis.
 *
 * `forKey` does no I/O: a key's store is built each time it is asked for
 * (the same record every time). The store opens one connection of its own
 * for every key's change feed, and subscribes to a key's channel on it only
 * while that key's feed runs (or a holder waits for its lock): a replica gets
 * the messages of the keys it holds, not every user's. A key that is empty or
 * not well-formed Unicode (a lone surrogate) fails with a `StoreError` whose
 * operation is `"key"`. Dies (a defect naming the option) when an option is
 * invalid.
 *
 * @since 0.2.0
 * @category constructors
 */
export const makeKeyed = (
  options: KeyedOptions
): Effect.Effect<SessionStore.Keyed, never, RedisClient | Scope.Scope> =>
  Effect.flatMap(Options_.orDie(resolveKeyed(options)), buildKeyed)

const buildKeyed = (
  settings: Internal.KeyedSettings
): Effect.Effect<SessionStore.Keyed, never, RedisClient | Scope.Scope> =>
  Effect.flatMap(RedisClient, (client) => Effect.map(Internal.makeKeyed(client, settings), ({ keyed }) => keyed))

/**
 * The keyed store as a layer, on the `RedisClient` in context; see
 * {@link makeKeyed}.
 *
 * @example
 * ```ts
 * import { Layer } from "effect"
 * import { RefreshClient, SessionPool } from "moon-refresh"
 * import { RedisSessionStore } from "moon-refresh/redis"
 *
 * // Every replica serving these users uses the same prefix.
 * export const PoolLive = SessionPool.layer().pipe(
 *   Layer.provide(RefreshClient.layer()),
 *   Layer.provide(RedisSessionStore.layerKeyed({ prefix: "moon-session:" })),
 *   Layer.provide(RedisSessionStore.layerClientFromEnv()) // REDIS_URL
 * )
 * ```
 *
 * @since 0.2.0
 * @category layers
 */
export const layerKeyed = (
  options: KeyedOptions
): Layer.Layer<SessionStore.KeyedSessionStore, never, RedisClient> =>
  Layer.effect(SessionStore.KeyedSessionStore, makeKeyed(options))

/**
 * {@link layerKeyed} with the options read from `Config`: one `Config` of
 * them, or a `Config` per option. An invalid value is a `Config.ConfigError`
 * naming the option, where {@link layerKeyed} would die. Needs a
 * `RedisClient`, as {@link layerKeyed} does.
 *
 * @since 1.0.0
 * @category layers
 */
export function layerKeyedConfig(
  config: Config.Wrap<KeyedOptions>
): Layer.Layer<SessionStore.KeyedSessionStore, Config.ConfigError, RedisClient>
/**
 * Given plain options: the keyed store with a client of its own from
 * `REDIS_URL`, as 0.3's `layerKeyedConfig(options)` was.
 *
 * @deprecated Use {@link layerKeyedFromEnv}`(options)`, named for the variable
 * it reads; `layerKeyedConfig` takes `Config.Wrap<KeyedOptions>`. Kept for 0.3
 * code; goes in 2.0.
 *
 * @since 0.2.0
 * @category layers
 */
export function layerKeyedConfig(
  options: KeyedOptions
): Layer.Layer<SessionStore.KeyedSessionStore, Config.ConfigError>
export function layerKeyedConfig(
  config: Config.Wrap<KeyedOptions> | KeyedOptions
): Layer.Layer<SessionStore.KeyedSessionStore, Config.ConfigError, RedisClient> {
  return isPlain<KeyedOptions>(config)
    ? layerKeyedFromEnv(config)
    : Layer.effect(
      SessionStore.KeyedSessionStore,
      Effect.flatMap(Options_.fromConfig(config, resolveKeyed), buildKeyed)
    )
}

/**
 * The keyed store with a client of its own on the URL in the environment
 * variable `REDIS_URL`: {@link layerKeyed} and {@link layerClientFromEnv} in one.
 *
 * @since 1.0.0
 * @category layers
 */
export const layerKeyedFromEnv = (
  options: KeyedOptions
): Layer.Layer<SessionStore.KeyedSessionStore, Config.ConfigError> =>
  layerKeyed(options).pipe(Layer.provide(layerClientFromEnv()))

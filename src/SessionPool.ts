/**
 * Many users on one server: one Moon session per key (your application's user
 * id), each kept alive with the rules of a `SessionManager` (one refresh at a
 * time, ahead of expiry, saved before use, fenced writes), created on first
 * use and dropped when idle. A dropped session stays in its store and comes
 * back from it, without a request, while it is valid.
 *
 * What a pool adds to many managers: one timer and one event feed for every
 * key instead of fibers per key, refreshes spread in time, a cap on the
 * refresh POSTs in flight across the pool, and a pool-wide back-off when
 * refreshes keep failing. One key's failure stays with that key: a rejected
 * token signs out that key only.
 *
 * @since 0.2.0
 */
import type * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as HttpClient from "effect/http/HttpClient"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import type * as Redacted from "effect/Redacted"
import * as Result from "effect/Result"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as AuthHttpClient from "./AuthHttpClient.js"
import * as Options_ from "./internal/options.js"
import * as Internal from "./internal/pool.js"
import * as Core from "./internal/session/core.js"
import * as SessionOptions from "./internal/sessionOptions.js"
import * as RefreshClient from "./RefreshClient.js"
import type * as RefreshError from "./RefreshError.js"
import type * as Session from "./Session.js"
import * as SessionManager from "./SessionManager.js"
import * as SessionStore from "./SessionStore.js"

/**
 * An event of one key's session (a `SessionManager.SessionEvent`, without
 * `Initial`, which belongs to a single manager's subscription).
 *
 * @since 0.2.0
 * @category models
 */
export interface KeyedEvent {
  readonly key: string
  readonly event: SessionManager.SessionEvent
}

/**
 * What the pool holds now.
 *
 * @since 0.2.0
 * @category models
 */
export interface Stats {
  /** Sessions in memory. */
  readonly live: number
  /** Of those, the ones with a proactive refresh planned. */
  readonly scheduled: number
  /** Refresh POSTs in flight now, and the most at once since the pool started. */
  readonly refreshesInFlight: number
  readonly maxRefreshesInFlight: number
}

/**
 * @since 0.2.0
 * @category models
 */
export interface Service {
  /** An access token of `key`'s session; the session is loaded from its store on first use. */
  readonly accessToken: (key: string) => Effect.Effect<Redacted.Redacted<string>, SessionManager.SessionError>
  readonly session: (key: string) => Effect.Effect<Session.Session, SessionManager.SessionError>
  /** What `key` holds now, loading it from its store if it is not in memory (hence the `StoreError`). */
  readonly current: (key: string) => Effect.Effect<Option.Option<Session.Session>, SessionStore.StoreError>
  readonly refresh: (key: string) => Effect.Effect<Session.Session, SessionManager.SessionError>
  readonly signIn: (key: string, session: Session.Session) => Effect.Effect<void, SessionStore.StoreError>
  readonly signInWithRefreshToken: (
    key: string,
    refreshToken: Redacted.Redacted<string> | string
  ) => Effect.Effect<Session.Session, RefreshError.RefreshError | SessionStore.StoreError>
  readonly signOut: (key: string) => Effect.Effect<void, SessionStore.StoreError>
  /** Every key's events, from the moment the stream is run. */
  readonly events: Stream.Stream<KeyedEvent>
  /** A `SessionManager` for one key, for code written against one (an `AuthHttpClient`, yours). */
  readonly manager: (key: string) => SessionManager.Service
  readonly stats: Effect.Effect<Stats>
}

/**
 * @since 0.2.0
 * @category tags
 */
export class SessionPool extends Context.Service<SessionPool, Service>()("moon-refresh/SessionPool") {}

/**
 * @since 0.2.0
 * @category models
 */
export interface Options {
  /** The options of each key's session, as a `SessionManager`'s. */
  readonly session?: SessionManager.Options | undefined
  /** A session not used for this long is dropped from memory (it stays in its store). Default 10 minutes. */
  readonly idleTimeToLive?: Duration.Input | undefined
  /** The most sessions in memory at once; the least recently used go first. Default 100,000. */
  readonly capacity?: number | undefined
  /** The most refresh POSTs in flight at once, across the pool. Default 16. */
  readonly maxConcurrentRefreshes?: number | undefined
  /**
   * The pool's name: the `pool` label of its metrics (`Metrics.poolSessions`
   * and the other `moon_refresh_pool_*` series) and the `moon.pool.name`
   * attribute of its spans. Give each pool of a program its own: two pools of
   * one name in one metric registry share their series. 1 to 64 letters,
   * digits, `_`, `-`, `.` or `:` (a label, never a user's key). Default
   * `"default"`.
   *
   * @since 1.1.0
   */
  readonly name?: string | undefined
}

const owner = "SessionPool"

// A label of the pool's metrics: short, and of characters every metrics backend takes.
const validName = /^[A-Za-z0-9_.:-]{1,64}$/

const resolveName = (name: unknown): Result.Result<string, Options_.Invalid> =>
  typeof name === "string" && validName.test(name) ? Result.succeed(name) : Result.fail({
    owner,
    option: "name",
    reason: "must be 1 to 64 letters, digits, \"_\", \"-\", \".\" or \":\""
  })

const resolve = (options: Options): Result.Result<Internal.PoolConfig, Options_.Invalid> =>
  Result.gen(function*() {
    return {
      name: yield* resolveName(options.name ?? "default"),
      session: yield* SessionOptions.resolve(options.session ?? {}, owner),
      idleTimeToLive: yield* Options_.millis(
        owner,
        "idleTimeToLive",
        options.idleTimeToLive ?? Duration.minutes(10),
        "positive"
      ),
      capacity: yield* Options_.integer(owner, "capacity", options.capacity ?? 100_000, { min: 1 }),
      maxConcurrentRefreshes: yield* Options_.integer(
        owner,
        "maxConcurrentRefreshes",
        options.maxConcurrentRefreshes ?? 16,
        { min: 1 }
      )
    }
  })

/**
 * Builds the pool from the `RefreshClient` and `KeyedSessionStore` in
 * context. Its timer, sweep and refreshes live in the scope. Dies (a defect
 * naming the option) when an option is invalid.
 *
 * @since 0.2.0
 * @category constructors
 */
export const make = (
  options: Options = {}
): Effect.Effect<Service, never, RefreshClient.RefreshClient | SessionStore.KeyedSessionStore | Scope.Scope> =>
  Effect.flatMap(Options_.orDie(resolve(options)), build)

const build = (
  config: Internal.PoolConfig
): Effect.Effect<Service, never, RefreshClient.RefreshClient | SessionStore.KeyedSessionStore | Scope.Scope> =>
  Effect.gen(function*() {
    const pool = yield* Internal.make(
      config,
      yield* RefreshClient.RefreshClient,
      yield* SessionStore.KeyedSessionStore
    )
    const service: Service = {
      accessToken: pool.accessToken,
      session: pool.session,
      current: (key) => pool.use(key, (cell) => Effect.sync(() => Option.fromNullishOr(Core.sessionOf(cell.state)))),
      refresh: (key) => pool.use(key, (cell) => cell.refresh),
      signIn: (key, session) => pool.use(key, (cell) => cell.signIn(session)),
      signInWithRefreshToken: (key, token) =>
        pool.use(key, (cell) => cell.signInWithRefreshToken(Internal.redact(token))),
      signOut: pool.signOut,
      events: Stream.fromPubSub(pool.events),
      manager: (key) => managerOf(service, key),
      stats: Effect.sync(() => ({
        live: pool.live(),
        scheduled: pool.armed(),
        refreshesInFlight: pool.inFlight(),
        maxRefreshesInFlight: pool.maxInFlight()
      }))
    }
    return service
  })

// A SessionManager for one key: the pool's members with the key applied.
const managerOf = (pool: Service, key: string): SessionManager.Service => ({
  accessToken: pool.accessToken(key),
  session: pool.session(key),
  current: Effect.orElseSucceed(pool.current(key), () => Option.none()),
  refresh: pool.refresh(key),
  signIn: (session) => pool.signIn(key, session),
  signInWithRefreshToken: (token) => pool.signInWithRefreshToken(key, token),
  signOut: pool.signOut(key),
  events: Stream.filterMap(pool.events, (keyed) => keyed.key === key ? Result.succeed(keyed.event) : Result.failVoid)
})

/**
 * The pool as a layer: give it a `RefreshClient` and a `KeyedSessionStore`
 * (`SessionStore.layerMemoryKeyed`, or a keyed Node or Redis store).
 *
 * @example
 * ```ts
 * import { FetchHttpClient } from "effect/http"
 * import { Effect, Layer } from "effect"
 * import { RefreshClient, SessionPool, SessionStore } from "moon-refresh"
 *
 * const PoolLive = SessionPool.layer({ idleTimeToLive: "15 minutes", maxConcurrentRefreshes: 8 }).pipe(
 *   Layer.provide(RefreshClient.layerFromEnv()),
 *   Layer.provide(SessionStore.layerMemoryKeyed),
 *   Layer.provide(FetchHttpClient.layer)
 * )
 *
 * // In a request handler: the access token of the user the request is for.
 * const tokenFor = (userId: string) => SessionPool.accessToken(userId).pipe(Effect.provide(PoolLive))
 * ```
 *
 * @since 0.2.0
 * @category layers
 */
export const layer = (
  options?: Options
): Layer.Layer<SessionPool, never, RefreshClient.RefreshClient | SessionStore.KeyedSessionStore> =>
  Layer.effect(SessionPool, make(options))

/**
 * {@link layer} with the options read from `Config`: one `Config` of them, or
 * a `Config` per option (`session` a record of its own, or one `Config`). An
 * invalid value is a `Config.ConfigError` naming the option, where
 * {@link layer} would die.
 *
 * @example
 * ```ts
 * import { Config } from "effect"
 * import { SessionPool } from "moon-refresh"
 *
 * const PoolLive = SessionPool.layerConfig({
 *   capacity: Config.Int("MOON_POOL_CAPACITY").pipe(Config.withDefault(100_000)),
 *   idleTimeToLive: Config.Duration("MOON_POOL_IDLE").pipe(Config.withDefault("10 minutes"))
 * })
 * ```
 *
 * @since 1.0.0
 * @category layers
 */
export const layerConfig = (
  config: Config.Wrap<Options>
): Layer.Layer<SessionPool, Config.ConfigError, RefreshClient.RefreshClient | SessionStore.KeyedSessionStore> =>
  Layer.effect(SessionPool, Effect.flatMap(Options_.fromConfig(config, resolve), build))

/**
 * An `AuthHttpClient` that signs requests with `key`'s session, over the
 * `HttpClient` in context: `origins` as for `AuthHttpClient.make`.
 *
 * @since 0.2.0
 * @category constructors
 */
export const httpClient = (
  key: string,
  options?: AuthHttpClient.Options
): Effect.Effect<AuthHttpClient.Service, never, SessionPool | HttpClient.HttpClient> =>
  Effect.gen(function*() {
    const pool = yield* SessionPool
    const client = yield* HttpClient.HttpClient
    return yield* AuthHttpClient.make(client, options).pipe(
      Effect.provideService(SessionManager.SessionManager, pool.manager(key))
    )
  })

/**
 * @since 0.2.0
 * @category accessors
 */
export const accessToken = (
  key: string
): Effect.Effect<Redacted.Redacted<string>, SessionManager.SessionError, SessionPool> =>
  Effect.flatMap(SessionPool, (pool) => pool.accessToken(key))

/**
 * @since 0.2.0
 * @category accessors
 */
export const session = (key: string): Effect.Effect<Session.Session, SessionManager.SessionError, SessionPool> =>
  Effect.flatMap(SessionPool, (pool) => pool.session(key))

/**
 * @since 0.2.0
 * @category accessors
 */
export const current = (
  key: string
): Effect.Effect<Option.Option<Session.Session>, SessionStore.StoreError, SessionPool> =>
  Effect.flatMap(SessionPool, (pool) => pool.current(key))

/**
 * @since 0.2.0
 * @category accessors
 */
export const refresh = (key: string): Effect.Effect<Session.Session, SessionManager.SessionError, SessionPool> =>
  Effect.flatMap(SessionPool, (pool) => pool.refresh(key))

/**
 * @since 0.2.0
 * @category accessors
 */
export const signIn = (
  key: string,
  session: Session.Session
): Effect.Effect<void, SessionStore.StoreError, SessionPool> =>
  Effect.flatMap(SessionPool, (pool) => pool.signIn(key, session))

/**
 * @since 0.2.0
 * @category accessors
 */
export const signInWithRefreshToken = (
  key: string,
  refreshToken: Redacted.Redacted<string> | string
): Effect.Effect<Session.Session, RefreshError.RefreshError | SessionStore.StoreError, SessionPool> =>
  Effect.flatMap(SessionPool, (pool) => pool.signInWithRefreshToken(key, refreshToken))

/**
 * @since 0.2.0
 * @category accessors
 */
export const signOut = (key: string): Effect.Effect<void, SessionStore.StoreError, SessionPool> =>
  Effect.flatMap(SessionPool, (pool) => pool.signOut(key))

/**
 * @since 0.2.0
 * @category accessors
 */
export const events: Stream.Stream<KeyedEvent, never, SessionPool> = Stream.unwrap(
  Effect.map(SessionPool, (pool) => pool.events)
)

/**
 * @since 0.2.0
 * @category accessors
 */
export const stats: Effect.Effect<Stats, never, SessionPool> = Effect.flatMap(SessionPool, (pool) => pool.stats)

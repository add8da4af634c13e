/**
 * Keeps one session alive: hands out a valid access token, refreshes ahead of
 * expiry, runs exactly one refresh at a time however many callers ask, saves
 * the rotated refresh token before anyone is handed the new access token, and
 * keeps a still-valid session through transient failures.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import type * as Config from "effect/Config"
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberSet from "effect/FiberSet"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as PubSub from "effect/PubSub"
import * as Random from "effect/Random"
import * as Redacted from "effect/Redacted"
import * as Result from "effect/Result"
import type * as Scope from "effect/Scope"
import type * as Stream from "effect/Stream"
import * as Stream_ from "effect/Stream"
import * as Options_ from "./internal/options.js"
import * as Cell from "./internal/session/cell.js"
import * as Core from "./internal/session/core.js"
import * as Events from "./internal/session/events.js"
import * as Store from "./internal/session/store.js"
import * as SessionOptions from "./internal/sessionOptions.js"
import * as RefreshClient from "./RefreshClient.js"
import type * as RefreshError from "./RefreshError.js"
import type * as Session from "./Session.js"
import * as SessionStore from "./SessionStore.js"

/**
 * There is no session: none was signed in, the user signed out, or the
 * refresh token was rejected. Reads fail with it without any request.
 *
 * @since 0.1.0
 * @category errors
 */
export const NoSessionError: typeof Events.NoSessionError = Events.NoSessionError

/**
 * @since 0.1.0
 * @category errors
 */
export type NoSessionError = Events.NoSessionError

/**
 * @since 0.1.0
 * @category errors
 */
export type SessionError = Events.SessionError

/**
 * Why a session ended: `UserSignedOut` (`signOut` was called),
 * `TokenRejected` (the server rejected the refresh token: the user must sign
 * in again), or `SignedOutElsewhere` (another holder of the store signed out,
 * or had the token rejected).
 *
 * @since 0.1.0
 * @category models
 */
export type SignOutReason = Events.SignOutReason

/**
 * @since 0.1.0
 * @category constructors
 */
export const SignOutReason: typeof Events.SignOutReason = Events.SignOutReason

/**
 * What happened to the session. Tokens inside a `Session` stay `Redacted`.
 * `Initial` opens every subscription; `SignedIn`, `Refreshed` (a new session
 * in use: this holder's refresh, or another holder's taken from the store),
 * `RefreshFailed`, `SaveFailed` and `SignedOut` follow.
 *
 * @since 0.1.0
 * @category models
 */
export type SessionEvent = Events.SessionEvent

/**
 * @since 0.1.0
 * @category constructors
 */
export const SessionEvent: typeof Events.SessionEvent = Events.SessionEvent

/**
 * @since 0.1.0
 * @category models
 */
export interface Service {
  /** An access token valid for at least the margin; refreshes first if needed. */
  readonly accessToken: Effect.Effect<Redacted.Redacted<string>, SessionError>
  /** The same, the whole session. */
  readonly session: Effect.Effect<Session.Session, SessionError>
  /** What is held now: no I/O, no refresh, whatever its expiry. */
  readonly current: Effect.Effect<Option.Option<Session.Session>>
  /**
   * Refreshes now, or joins the refresh in flight. Within the cooldown after a
   * failed refresh it fails at once with that failure instead of calling the server.
   */
  readonly refresh: Effect.Effect<Session.Session, SessionError>
  /**
   * Saves the session, then uses it. If the save fails, nothing changes.
   * Signing in with the session already held changes nothing.
   */
  readonly signIn: (session: Session.Session) => Effect.Effect<void, SessionStore.StoreError>
  /**
   * Refreshes `refreshToken` (one from a sign-in flow, or the environment),
   * saves the new session and signs in with it: the start of every session
   * that is not loaded from the store. The token is spent once the server
   * answers, so the new session is kept even if its save fails (then retried
   * in the background, as after any refresh). A rejected token fails with
   * `TokenRejectedError` and changes nothing. Runs under the store's lock: if
   * another holder of the store signed in meanwhile, its session is taken and
   * the token is not sent. If another holder's sign-out is written while the
   * request is out, the sign-out wins: the call returns the new session
   * without keeping it (`current` is `None`).
   */
  readonly signInWithRefreshToken: (
    refreshToken: Redacted.Redacted<string> | string
  ) => Effect.Effect<Session.Session, RefreshError.RefreshError | SessionStore.StoreError>
  /**
   * Forgets the session in memory at once (reads fail, `SignedOut` is
   * published), then writes the sign-out to the store. A refresh in flight
   * is dropped, never saved. If the store cannot be written, the call fails
   * with the `StoreError` and the sign-out is retried in the background until
   * it lands (or a later sign-in replaces it).
   */
  readonly signOut: Effect.Effect<void, SessionStore.StoreError>
  /**
   * Events from the moment the stream is run: first `Initial` with the
   * session held then, then every change. Subscribing and reading that
   * session are one step, so no change falls between them.
   */
  readonly events: Stream.Stream<SessionEvent>
}

/**
 * @since 0.1.0
 * @category tags
 */
export class SessionManager extends Context.Service<SessionManager, Service>()("moon-refresh/SessionManager") {}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Refresh when the access token has less than this left. Default 60 seconds. */
  readonly margin?: Duration.Input | undefined
  /** Refresh at `expiresAt - margin` without waiting for a caller. Default true. */
  readonly autoRefresh?: boolean | undefined
  /** The pause after a failed refresh before the next; doubles with each failure in a row. Default 10 seconds. */
  readonly cooldown?: Duration.Input | undefined
  /** The longest cooldown. Default 5 minutes. A server's `Retry-After` can make one longer (up to an hour). */
  readonly maxCooldown?: Duration.Input | undefined
  /**
   * Successful refreshes are at least this far apart, so a server that
   * issues short-lived tokens cannot make the manager refresh in a loop. A
   * refresh still starts at least a second before the token expires. Default
   * 30 seconds.
   */
  readonly minInterval?: Duration.Input | undefined
  /**
   * The longest a store's `load`, `save` or `clear` may take before it fails
   * with a `StoreError`: a store that hangs must not hang every reader.
   * Default 10 seconds.
   */
  readonly storeTimeout?: Duration.Input | undefined
  /**
   * The longest to wait for the store's lock, which another process may hold
   * while it refreshes. Past it the refresh fails with a `StoreError` (and a
   * cooldown). Default 60 seconds.
   */
  readonly lockTimeout?: Duration.Input | undefined
}

/**
 * @since 0.1.0
 * @category constants
 */
export const defaults: {
  readonly margin: Duration.Duration
  readonly autoRefresh: boolean
  readonly cooldown: Duration.Duration
  readonly maxCooldown: Duration.Duration
  readonly minInterval: Duration.Duration
  readonly storeTimeout: Duration.Duration
  readonly lockTimeout: Duration.Duration
} = SessionOptions.defaults

/**
 * Builds the manager from the `RefreshClient` and `SessionStore` in context,
 * starting from the stored session. Its background fibers live in the scope.
 * Dies (a defect naming the option) when an option is invalid.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: Options = {}
): Effect.Effect<
  Service,
  SessionStore.StoreError,
  RefreshClient.RefreshClient | SessionStore.SessionStore | Scope.Scope
> => Effect.flatMap(Options_.orDie(SessionOptions.resolve(options)), build)

const build = ({ bounds, config }: SessionOptions.Resolved): Effect.Effect<
  Service,
  SessionStore.StoreError,
  RefreshClient.RefreshClient | SessionStore.SessionStore | Scope.Scope
> =>
  Effect.gen(function*() {
    const store = yield* SessionStore.SessionStore
    // Where the manager's metrics go, whichever fiber records them: the registry it was built with.
    const context = yield* Effect.context<never>()
    const stored = yield* Store.read(store, bounds, context)
    // Holders of a shared store spread their refreshes over the first half of the margin.
    const jitter = store.shared ? yield* Random.next : 0
    const clock = yield* Clock.Clock
    const shared: Cell.Shared = {
      // Read at each decision: other managers of this process may be built on the same
      // store object, or close, while this one runs (see `Store.hasOtherHolders`).
      config: {
        ...config,
        get spread() {
          return Store.hasOtherHolders(store)
        }
      },
      bounds,
      client: yield* RefreshClient.RefreshClient,
      clock,
      daemon: yield* Cell.makeDaemon,
      fork: yield* FiberSet.makeRuntime<never>(),
      sendLease: Cell.defaultSendLease,
      context,
      owner: { module: "SessionManager", attributes: {} }
    }
    const events = yield* Effect.acquireRelease(PubSub.unbounded<Published>(), PubSub.shutdown)
    // Every event is numbered (by the cell, as its decision publishes it), so a subscriber's
    // `Initial` and the events after it never overlap or leave a gap.
    const cell = new Cell.Cell(
      shared,
      store,
      Core.initial(stored, jitter, clock.currentTimeMillisUnsafe(), shared.config),
      Cell.fiberTimer(shared),
      (event, n) => void PubSub.publishUnsafe(events, { n, event })
    )
    yield* Effect.forkScoped(Stream_.runForEach(store.changes, (record) => cell.changed(record)))
    // Closing waits (bounded) for what the store is owed; after the feed's fiber in the
    // scope, so the feed still runs meanwhile (another holder's write can settle the lock).
    yield* Effect.addFinalizer(() => cell.closing(SessionOptions.closeBound(config, bounds)))
    yield* cell.tick

    // The hot path: one field read and one clock read; no lock, no fork, no allocation.
    const slowToken = Effect.map(cell.slowSession, (session) => session.accessToken)
    const session: Effect.Effect<Session.Session, SessionError> = Effect.suspend(() =>
      clock.currentTimeMillisUnsafe() < cell.hot.freshUntil ? cell.hot.succeed : cell.slowSession
    )
    const accessToken: Effect.Effect<Redacted.Redacted<string>, SessionError> = Effect.suspend(() =>
      clock.currentTimeMillisUnsafe() < cell.hot.freshUntil ? cell.hot.succeedToken : slowToken
    )

    return SessionManager.of({
      accessToken,
      session,
      current: Effect.sync(() => Option.fromNullishOr(Core.sessionOf(cell.state))),
      refresh: cell.refresh,
      signIn: (next) => cell.signIn(next),
      signInWithRefreshToken: (token) =>
        cell.signInWithRefreshToken(Redacted.isRedacted(token) ? token : Redacted.make(token)),
      signOut: cell.signOut,
      events: Stream_.unwrap(
        Effect.map(PubSub.subscribe(events), (subscription) => {
          // Read once subscribed: an event published in between is already in the state, and skipped.
          const seen = cell.published
          return Stream_.concat(
            Stream_.succeed(SessionEvent.Initial({ session: Option.fromNullishOr(Core.sessionOf(cell.state)) })),
            Stream_.filterMap(
              Stream_.fromSubscription(subscription),
              ({ event, n }) => n > seen ? Result.succeed(event) : Result.failVoid
            )
          )
        })
      )
    })
  })

interface Published {
  readonly n: number
  readonly event: SessionEvent
}

/**
 * The manager as a layer: it loads the stored session when built, refreshes
 * ahead of expiry in a fiber of the layer's scope, and stops when the scope
 * closes.
 *
 * @example
 * ```ts
 * import { FetchHttpClient } from "effect/http"
 * import { Effect, Layer, Redacted } from "effect"
 * import { RefreshClient, SessionManager, SessionStore } from "moon-refresh"
 *
 * const SessionLive = SessionManager.layer({ margin: "2 minutes" }).pipe(
 *   Layer.provide(RefreshClient.layerFromEnv()),
 *   Layer.provide(SessionStore.layerMemory()),
 *   Layer.provide(FetchHttpClient.layer)
 * )
 *
 * // A valid access token for a client that is not an HttpClient: no I/O
 * // while the token has more than the margin left.
 * const authorization = SessionManager.accessToken.pipe(
 *   Effect.map((token) => `Bearer ${Redacted.value(token)}`),
 *   Effect.provide(SessionLive)
 * )
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options?: Options
): Layer.Layer<SessionManager, SessionStore.StoreError, RefreshClient.RefreshClient | SessionStore.SessionStore> =>
  Layer.effect(SessionManager, make(options))

/**
 * {@link layer} with the options read from `Config`: one `Config` of them, or
 * a `Config` per option. An invalid value is a `Config.ConfigError` naming
 * the option, where {@link layer} would die.
 *
 * @example
 * ```ts
 * import { Config } from "effect"
 * import { SessionManager } from "moon-refresh"
 *
 * const SessionLive = SessionManager.layerConfig({
 *   margin: Config.Duration("MOON_REFRESH_MARGIN").pipe(Config.withDefault("60 seconds")),
 *   autoRefresh: Config.Boolean("MOON_AUTO_REFRESH").pipe(Config.withDefault(true))
 * })
 * ```
 *
 * @since 1.0.0
 * @category layers
 */
export const layerConfig = (
  config: Config.Wrap<Options>
): Layer.Layer<
  SessionManager,
  SessionStore.StoreError | Config.ConfigError,
  RefreshClient.RefreshClient | SessionStore.SessionStore
> =>
  Layer.effect(
    SessionManager,
    Effect.flatMap(Options_.fromConfig(config, (options) => SessionOptions.resolve(options)), build)
  )

const use = <A, E>(f: (service: Service) => Effect.Effect<A, E>): Effect.Effect<A, E, SessionManager> =>
  Effect.flatMap(SessionManager, f)

/**
 * @since 0.1.0
 * @category accessors
 */
export const accessToken: Effect.Effect<Redacted.Redacted<string>, SessionError, SessionManager> = use((_) =>
  _.accessToken
)

/**
 * @since 0.1.0
 * @category accessors
 */
export const session: Effect.Effect<Session.Session, SessionError, SessionManager> = use((_) => _.session)

/**
 * @since 0.1.0
 * @category accessors
 */
export const current: Effect.Effect<Option.Option<Session.Session>, never, SessionManager> = use((_) => _.current)

/**
 * @since 0.1.0
 * @category accessors
 */
export const refresh: Effect.Effect<Session.Session, SessionError, SessionManager> = use((_) => _.refresh)

/**
 * @since 0.1.0
 * @category accessors
 */
export const signIn = (
  session: Session.Session
): Effect.Effect<void, SessionStore.StoreError, SessionManager> => use((_) => _.signIn(session))

/**
 * Signs in from a refresh token: see {@link Service.signInWithRefreshToken}.
 *
 * @example
 * ```ts
 * import { Config, Effect, Option } from "effect"
 * import { SessionManager } from "moon-refresh"
 *
 * // The most common start: use the stored session, else the token in the environment.
 * const start = Effect.gen(function*() {
 *   if (Option.isNone(yield* SessionManager.current)) {
 *     yield* SessionManager.signInWithRefreshToken(yield* Config.Redacted("MOON_REFRESH_TOKEN"))
 *   }
 * })
 * ```
 *
 * @since 0.2.0
 * @category accessors
 */
export const signInWithRefreshToken = (
  refreshToken: Redacted.Redacted<string> | string
): Effect.Effect<Session.Session, RefreshError.RefreshError | SessionStore.StoreError, SessionManager> =>
  use((_) => _.signInWithRefreshToken(refreshToken))

/**
 * @since 0.1.0
 * @category accessors
 */
export const signOut: Effect.Effect<void, SessionStore.StoreError, SessionManager> = use((_) => _.signOut)

/**
 * @since 0.1.0
 * @category accessors
 */
export const events: Stream.Stream<SessionEvent, never, SessionManager> = Stream_.unwrap(
  Effect.map(SessionManager, (_) => _.events)
)

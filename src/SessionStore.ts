/**
 * Where a session lives between runs. The `SessionManager` saves every new
 * session here *before* anyone is handed its access token, because Moon's
 * refresh tokens are single use: a rotated token that was never saved signs
 * the user out for good at the next start.
 *
 * @since 0.1.0
 */
import { KeyValueStore } from "@effect/platform"
import { Context, Effect, Layer, Option, Ref, Schema } from "effect"
import * as RefreshError from "./RefreshError.js"
import * as Session from "./Session.js"

/**
 * A store failed to load, save or clear. The message never holds a token.
 *
 * @since 0.1.0
 * @category errors
 */
export class StoreError extends Schema.TaggedError<StoreError>("moon-refresh/StoreError")("StoreError", {
  operation: Schema.Literal("load", "save", "clear", "lock"),
  message: Schema.String
}) {}

/**
 * @since 0.1.0
 * @category models
 */
export interface Service {
  /** The stored session, if any. A stored value that does not decode is `None` (and logged). */
  readonly load: Effect.Effect<Option.Option<Session.Session>, StoreError>
  readonly save: (session: Session.Session) => Effect.Effect<void, StoreError>
  readonly clear: Effect.Effect<void, StoreError>
  /**
   * Runs a refresh (load, POST, save) while holding the store's lock. The
   * `SessionManager` re-reads the store inside it and adopts a newer session
   * another holder saved instead of spending an already-rotated token.
   */
  readonly withLock: <A, E, R>(critical: Effect.Effect<A, E, R>) => Effect.Effect<A, E | StoreError, R>
}

/**
 * What {@link make} needs to build a store: `withLock` may be left out by a
 * store that only one process uses.
 *
 * @since 0.2.0
 * @category models
 */
export interface Implementation {
  readonly load: Service["load"]
  readonly save: Service["save"]
  readonly clear: Service["clear"]
  /** Omit it for a store used by one process: {@link make} gives it an in-process lock. */
  readonly withLock?: Service["withLock"] | undefined
}

/**
 * The one way to build a store: fills in what the implementation leaves out,
 * as `KeyValueStore.make` does. A store without its own lock gets an
 * in-process one (a semaphore of one permit), so two managers of one process
 * sharing it still refresh one at a time.
 *
 * @example
 * ```ts
 * import { Effect, Option } from "effect"
 * import { SessionStore, type Session } from "moon-refresh"
 *
 * // A store on your own database table (here a variable stands in for it).
 * let row: Session.Session | undefined
 * const store = SessionStore.make({
 *   load: Effect.sync(() => Option.fromNullable(row)),
 *   save: (session) => Effect.sync(() => { row = session }),
 *   clear: Effect.sync(() => { row = undefined })
 * })
 * ```
 *
 * @since 0.2.0
 * @category constructors
 */
export const make = (implementation: Implementation): Service => {
  const withLock = implementation.withLock ?? Effect.unsafeMakeSemaphore(1).withPermits(1)
  return { load: implementation.load, save: implementation.save, clear: implementation.clear, withLock }
}

/**
 * @since 0.1.0
 * @category tags
 */
export class SessionStore extends Context.Tag("moon-refresh/SessionStore")<SessionStore, Service>() {}

/**
 * A store in memory: nothing survives the process. For tests, and for
 * programs that get their session from elsewhere at each start.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeMemory = (initial?: Session.Session): Effect.Effect<Service> =>
  Effect.map(Ref.make(Option.fromNullable(initial)), (ref) =>
    make({
      load: Ref.get(ref),
      save: (session) => Ref.set(ref, Option.some(session)),
      clear: Ref.set(ref, Option.none())
    }))

/**
 * @since 0.1.0
 * @category layers
 */
export const layerMemory = (initial?: Session.Session): Layer.Layer<SessionStore> =>
  Layer.effect(SessionStore, makeMemory(initial))

/**
 * @since 0.1.0
 * @category models
 */
export interface KeyValueStoreOptions {
  /** The key the session is stored under. */
  readonly key: string
}

/**
 * A store on `@effect/platform`'s `KeyValueStore`: the file system in Node
 * (`KeyValueStore.layerFileSystem`), `localStorage` in a browser
 * (`KeyValueStore.layerStorage`), or anything else that implements it.
 *
 * The session is stored as JSON with its tokens in clear. Give it an
 * encrypting `KeyValueStore` (or a directory only the user can read) if that
 * matters where it runs.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeKeyValueStore = (
  options: KeyValueStoreOptions
): Effect.Effect<Service, never, KeyValueStore.KeyValueStore> =>
  Effect.map(KeyValueStore.KeyValueStore, (kv) => {
    const store = kv.forSchema(Session.Session)
    const fail = (operation: StoreError["operation"]) => (cause: { readonly message: string }) =>
      new StoreError({ operation, message: RefreshError.capMessage(cause.message) })
    return make({
      load: store.get(options.key).pipe(
        Effect.catchTag("ParseError", () =>
          // An unreadable value (an old format, a hand edit) is a signed-out
          // state, not a crash at start-up. The value itself is not logged.
          Effect.as(
            Effect.logWarning(`moon-refresh: stored session under "${options.key}" does not decode; treated as none`),
            Option.none()
          )),
        Effect.mapError(fail("load"))
      ),
      save: (session) => store.set(options.key, session).pipe(Effect.mapError(fail("save"))),
      clear: kv.remove(options.key).pipe(Effect.mapError(fail("clear")))
    })
  })

/**
 * @since 0.1.0
 * @category layers
 */
export const layerKeyValueStore = (
  options: KeyValueStoreOptions
): Layer.Layer<SessionStore, never, KeyValueStore.KeyValueStore> =>
  Layer.effect(SessionStore, makeKeyValueStore(options))

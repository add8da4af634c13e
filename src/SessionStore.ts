/**
 * Where a session lives between runs. The `SessionManager` saves every new
 * session here *before* anyone is handed its access token, because Moon's
 * refresh tokens are single use: a rotated token that was never saved signs
 * the user out for good at the next start.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as KeyValueStore from "effect/persistence/KeyValueStore"
import * as PubSub from "effect/PubSub"
import * as Ref from "effect/Ref"
import * as Schema from "effect/Schema"
import * as Semaphore from "effect/Semaphore"
import * as Stream from "effect/Stream"
import { capMessage } from "./internal/message.js"
import * as Metrics from "./internal/metrics.js"
import * as Session from "./Session.js"

/**
 * A store failed to load, save or clear, to take its lock (`"lock"`), or
 * refused a key of a keyed store (`"key"`: an empty key, say); or a
 * `SessionPool` at its capacity could not make room for another session
 * (`"capacity"`: every session in it busy). The message never holds a token.
 *
 * `cause` is the storage's own error where it holds no secret (since 1.0): a
 * file-system error (its `code`, `syscall` and `path`), a `KeyValueStore`'s
 * error, an IndexedDB `DOMException`, a Redis connection error, or the
 * `StoreConflictError` of a write that kept conflicting. It is left out where
 * the error could hold a token or the stored text: a reply of Redis to a
 * command (ioredis puts the command's arguments on it), an encoding error of
 * a session. A deadline, a lock lost or a refused key have no cause.
 *
 * @since 0.1.0
 * @category errors
 */
export class StoreError extends Schema.TaggedError<StoreError>("moon-refresh/StoreError")("StoreError", {
  operation: Schema.Literals(["load", "save", "clear", "lock", "key", "capacity"]),
  message: Schema.String,
  cause: Schema.optional(Schema.Defect())
}) {}

/**
 * A fenced write was refused: the record is no longer at the revision the
 * writer read, because another holder wrote in between. Nothing was written.
 * The `SessionManager` answers it by re-reading and adopting what is there.
 *
 * @since 0.2.0
 * @category errors
 */
export class StoreConflictError extends Schema.TaggedError<StoreConflictError>("moon-refresh/StoreConflictError")(
  "StoreConflictError",
  {
    expected: Schema.Number,
    actual: Schema.Number,
    message: Schema.String
  }
) {}

/**
 * What a store holds: a session, or a sign-out (`None`: a tombstone), and its
 * revision. Every write increases the revision by one; revision 0 with no
 * session is a store nobody wrote to yet. The revision is the fencing token of
 * the store's lock: a write names the revision it replaces and is refused
 * if the record moved on, so a holder that stalled past its lease cannot
 * overwrite a newer session, and a signed-out session cannot come back.
 *
 * @since 0.2.0
 * @category models
 */
export interface Stored {
  readonly revision: number
  readonly session: Option.Option<Session.Session>
}

/**
 * The stored form of a record, for stores that keep it as JSON (a file,
 * `localStorage`, Redis): `{ "revision": 3, "session": { … } }`, or
 * `"session": null` for a sign-out. The tokens are in clear.
 *
 * @since 0.2.0
 * @category schemas
 */
export const StoredSchema: Schema.Codec<
  Stored,
  { readonly revision: number; readonly session: typeof Session.Session.Encoded | null }
> = Schema.Struct({
  revision: Schema.Number.check(Schema.isInt(), Schema.isGreaterThanOrEqualTo(0)),
  session: Schema.OptionFromNullOr(Session.Session)
})

/**
 * `StoredSchema` to and from a JSON string.
 *
 * @since 0.2.0
 * @category schemas
 */
export const StoredJson: Schema.Codec<Stored, string> = Schema.fromJsonString(StoredSchema)

/**
 * The record of an empty store: revision 0, no session.
 *
 * @since 0.2.0
 * @category constructors
 */
export const empty: Stored = { revision: 0, session: Option.none() }

/**
 * The lock as held by one critical section.
 *
 * @since 0.3.0
 * @category models
 */
export interface Lease {
  /**
   * Renews the lock now if it is still this holder's, so that no other holder can take it over
   * for at least `atLeast` from now; fails with StoreError({ operation: "lock" }) if the lock
   * is no longer this holder's (taken over, released) or has less than that left. A lease
   * configured shorter than `atLeast` is asked for nearly whole instead (the stores of this
   * package: 90% of its usable part; a browser hold, half its bound): the user chose it. The
   * `SessionManager` calls it right before each refresh POST, with the refresh request's
   * default timeout plus a margin (12 s).
   */
  readonly ensure: (atLeast: Duration.Input) => Effect.Effect<void, StoreError>
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Service {
  /**
   * The stored session, if any. A stored value that does not decode is `None` (and logged).
   *
   * @deprecated Use {@link load}`(store)`, which works over `read` for any store. Kept for 0.2 callers.
   */
  readonly load: Effect.Effect<Option.Option<Session.Session>, StoreError>
  /**
   * Writes the session over whatever is stored (an unconditional write); gives the record written.
   *
   * @deprecated Use {@link save}`(store, session)`. Kept for 0.2 callers.
   */
  readonly save: (session: Session.Session) => Effect.Effect<Stored, StoreError>
  /**
   * Writes a sign-out over whatever is stored (an unconditional write); gives the record written.
   *
   * @deprecated Use {@link clear}`(store)`. Kept for 0.2 callers.
   */
  readonly clear: Effect.Effect<Stored, StoreError>
  /**
   * Runs a refresh (read, POST, write) while holding the store's lock, which
   * every holder of the store (other processes, tabs, replicas, for stores
   * that reach them) respects. The `SessionManager` re-reads the store inside
   * it and adopts a newer session another holder wrote instead of spending an
   * already-rotated token.
   */
  readonly withLock: <A, E, R>(critical: Effect.Effect<A, E, R>) => Effect.Effect<A, E | StoreError, R>
  /**
   * {@link withLock}, with the {@link Lease} of the hold given to `use`: the
   * holder calls `lease.ensure(requestTimeout + margin)` right before each
   * refresh POST and gives up if it fails. The lock is renewed while `use`
   * runs, and released when it ends.
   *
   * @since 0.3.0
   */
  readonly withLease: <A, E, R>(
    use: (lease: Lease) => Effect.Effect<A, E, R>
  ) => Effect.Effect<A, E | StoreError, R>
  /** The record, with its revision ({@link empty} when nothing was written). */
  readonly read: Effect.Effect<Stored, StoreError>
  /**
   * A fenced write: stores `session` (`None`: a sign-out) if the record is
   * still at revision `expected`, and returns the new record (revision
   * `expected + 1`); else fails with `StoreConflictError` and writes nothing.
   * Atomic: a reader sees the old record or the new one, never a part.
   */
  readonly write: (
    session: Option.Option<Session.Session>,
    expected: number
  ) => Effect.Effect<Stored, StoreError | StoreConflictError>
  /**
   * Records as other holders write them (and possibly this one's own writes:
   * compare revisions). A manager adopts a newer session from it without any
   * request, and a sign-out anywhere signs it out. Never fails: a store whose
   * feed breaks reconnects, or falls back to polling.
   */
  readonly changes: Stream.Stream<Stored>
  /**
   * Whether other processes, tabs or replicas can hold this store too. The
   * manager then spreads its proactive refreshes (a random offset in the
   * first half of the margin), so holders do not all wake at one instant.
   */
  readonly shared: boolean
}

/**
 * What {@link make} needs to build a store that only one process uses: load,
 * save and clear. `make` keeps the revision in memory and gives it an
 * in-process lock and change feed, so several managers of one process sharing
 * it coordinate; other processes do not see them.
 *
 * @since 0.2.0
 * @category models
 */
export interface Implementation {
  readonly load: Effect.Effect<Option.Option<Session.Session>, StoreError>
  readonly save: (session: Session.Session) => Effect.Effect<void, StoreError>
  readonly clear: Effect.Effect<void, StoreError>
  /** Omit it (and `withLease`) to get an in-process lock (a semaphore of one permit). */
  readonly withLock?: Service["withLock"] | undefined
  /**
   * The lock with its lease; `withLock` is derived from it when only this is
   * given. Without it, `make` gives a lease that cannot be lost.
   *
   * @since 0.3.0
   */
  readonly withLease?: Service["withLease"] | undefined
}

/**
 * What {@link make} needs to build a store several processes share: a
 * fenced `read` and `write` (see {@link Service}), and, where the backend can
 * give them, a lock and a change feed that reach the other holders.
 *
 * @since 0.2.0
 * @category models
 */
export interface FencedImplementation {
  readonly read: Service["read"]
  readonly write: Service["write"]
  /** Omit it (and `withLease`) to get an in-process lock: fencing still keeps writes safe, but refreshes may race. */
  readonly withLock?: Service["withLock"] | undefined
  /**
   * The lock with its lease, checked by owner; `withLock` is derived from it
   * when only this is given. Without it, `make` gives the lock a lease whose
   * `ensure` always succeeds.
   *
   * @since 0.3.0
   */
  readonly withLease?: Service["withLease"] | undefined
  /** Writes by other holders. This process's own writes are added by `make`. */
  readonly changes?: Stream.Stream<Stored> | undefined
  /** Default `true`. */
  readonly shared?: boolean | undefined
}

const isFenced = (implementation: Implementation | FencedImplementation): implementation is FencedImplementation =>
  "read" in implementation && "write" in implementation

/**
 * The stored session of any store, if any (its record's `session`).
 *
 * @since 0.3.0
 * @category combinators
 */
export const load = (store: Service): Effect.Effect<Option.Option<Session.Session>, StoreError> =>
  Effect.map(store.read, (stored) => stored.session)

/**
 * Writes `session` over whatever `store` holds (a fenced write, tried again on
 * a conflict with what is there then); gives the record written.
 *
 * @since 0.3.0
 * @category combinators
 */
export const save = (store: Service, session: Session.Session): Effect.Effect<Stored, StoreError> => store.save(session)

/**
 * Writes a sign-out over whatever `store` holds; gives the record written.
 * The record stays (a tombstone), so no holder of the old session can write it back.
 *
 * @since 0.3.0
 * @category combinators
 */
export const clear = (store: Service): Effect.Effect<Stored, StoreError> => store.clear

/**
 * A store from a plain `{ load, save, clear }` (and optionally `withLock`):
 * `make` over an {@link Implementation}, named for what it is. **Safe for one
 * holder only** (the managers of one process): its revision lives in memory,
 * so holders in other processes are not fenced. For a store several processes
 * share, give `make` a {@link FencedImplementation}.
 *
 * @since 0.3.0
 * @category constructors
 */
export const fromSimple = (implementation: Implementation): Service => make(implementation)

/**
 * The one way to build a store: fills in what the implementation leaves out,
 * as `KeyValueStore.make` does.
 *
 * - A store without its own lock gets an in-process one, so two managers of
 *   one process sharing it still refresh one at a time.
 * - `withLease` comes from the implementation's own; else it wraps its
 *   `withLock` (or the in-process lock) with a lease whose `ensure` always
 *   succeeds. `withLock` comes from the implementation's own; else from its
 *   `withLease`.
 * - Every write made through the store is published to an in-process change
 *   feed, merged with the implementation's own, so managers sharing the store
 *   in one process see each other's writes at once.
 * - A plain `{ load, save, clear }` implementation gets its revision kept in
 *   memory (fenced within the process); `save` and `clear` of a fenced one
 *   are a read and a write at the revision read, retried on conflict.
 *
 * @example
 * ```ts
 * import { Effect, Option } from "effect"
 * import { SessionStore, type Session } from "moon-refresh"
 *
 * // A store on your own database table (here a variable stands in for it).
 * let row: Session.Session | undefined
 * const store = SessionStore.make({
 *   load: Effect.sync(() => Option.fromNullishOr(row)),
 *   save: (session) => Effect.sync(() => { row = session }),
 *   clear: Effect.sync(() => { row = undefined })
 * })
 * ```
 *
 * @since 0.2.0
 * @category constructors
 */
export const make = (implementation: Implementation | FencedImplementation): Service => {
  const { withLease, withLock } = locks(implementation)
  // Made on the first subscription: a store nobody follows (most of a pool's)
  // carries no PubSub, and publishing to it costs nothing.
  let local: PubSub.PubSub<Stored> | undefined
  const publish = (stored: Stored) => local === undefined ? Effect.void : PubSub.publish(local, stored)
  const localChanges = Stream.unwrap(Effect.sync(() => Stream.fromPubSub(local ??= Effect.runSync(PubSub.unbounded()))))
  if (!isFenced(implementation)) {
    const memory = fenceInMemory(implementation)
    return {
      load: implementation.load,
      save: (session) => Effect.tap(memory.overwrite(Option.some(session)), publish),
      clear: Effect.tap(memory.overwrite(Option.none()), publish),
      withLock,
      withLease,
      read: memory.read,
      write: (session, expected) => Effect.tap(memory.write(session, expected), publish),
      changes: localChanges,
      shared: false
    }
  }
  const write = (session: Option.Option<Session.Session>, expected: number) =>
    Effect.tap(implementation.write(session, expected), publish)
  const overwrite = (session: Option.Option<Session.Session>, operation: "save" | "clear") =>
    Effect.flatMap(implementation.read, (stored) => write(session, stored.revision)).pipe(
      // Another holder wrote between the read and the write: read again.
      Effect.retry({ while: (error) => error._tag === "StoreConflictError", times: 5 }),
      Effect.catchTag(
        "StoreConflictError",
        (error) =>
          Effect.fail(new StoreError({ operation, message: `the store kept changing: ${error.message}`, cause: error }))
      )
    )
  return {
    load: Effect.map(implementation.read, (stored) => stored.session),
    save: (session) => overwrite(Option.some(session), "save"),
    clear: overwrite(Option.none(), "clear"),
    withLock,
    withLease,
    read: implementation.read,
    write,
    changes: implementation.changes === undefined ? localChanges : Stream.merge(localChanges, implementation.changes),
    shared: implementation.shared ?? true
  }
}

// An in-process lock cannot be lost: its lease's `ensure` always succeeds.
const unlosableLease: Lease = { ensure: () => Effect.void }

// The `withLock` that `make` derived from each `withLease`: a store spread into
// another implementation carries both, and only a `withLock` that is not the
// derived one is the implementation's own.
const derivedLocks = new WeakMap<Service["withLock"], Service["withLease"]>()

// The lock and its lease, from whichever of the two the implementation gives.
// Given both, where `withLock` is not the one derived from that `withLease`
// (`{ ...store, withLock: mine }`, a store decorated by spreading it), the
// implementation's own `withLock` is the lock: the lease is built on it, with
// an `ensure` that cannot fail, as when no lease is given.
const locks = (implementation: Implementation | FencedImplementation): Pick<Service, "withLock" | "withLease"> => {
  const own = implementation.withLease
  const lock = implementation.withLock
  if (own !== undefined && (lock === undefined || derivedLocks.get(lock) === own)) {
    const withLock: Service["withLock"] = lock ?? ((critical) => own(() => critical))
    derivedLocks.set(withLock, own)
    return { withLease: own, withLock }
  }
  const withLock = implementation.withLock ?? Semaphore.makeUnsafe(1).withPermits(1)
  return { withLock, withLease: (use) => withLock(Effect.suspend(() => use(unlosableLease))) }
}

// A plain store's revision, kept in memory: fenced within this process only.
// Its own save and clear write unconditionally, as the plain store does.
const fenceInMemory = (implementation: Implementation) => {
  let revision = 0
  const commit = (session: Option.Option<Session.Session>) =>
    Effect.map(
      Option.match(session, { onNone: () => implementation.clear, onSome: implementation.save }),
      (): Stored => ({ revision: ++revision, session })
    )
  return {
    read: Effect.map(implementation.load, (session): Stored => ({ revision, session })),
    write: (session: Option.Option<Session.Session>, expected: number) =>
      Effect.suspend((): Effect.Effect<Stored, StoreError | StoreConflictError> =>
        expected === revision ? commit(session) : Effect.fail(conflict(expected, revision))
      ),
    overwrite: commit
  }
}

/**
 * The error of a fenced write refused because the record is at `actual`.
 *
 * @since 0.2.0
 * @category constructors
 */
export const conflict = (expected: number, actual: number): StoreConflictError =>
  new StoreConflictError({
    expected,
    actual,
    message: `expected revision ${expected}, the store is at ${actual}`
  })

/**
 * @since 0.1.0
 * @category tags
 */
export class SessionStore extends Context.Service<SessionStore, Service>()("moon-refresh/SessionStore") {}

/**
 * A store in memory: nothing survives the process. For tests, and for
 * programs that get their session from elsewhere at each start.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeMemory = (initial?: Session.Session): Effect.Effect<Service> =>
  Effect.map(
    Ref.make<Stored>(initial === undefined ? empty : { revision: 1, session: Option.some(initial) }),
    (ref) =>
      Metrics.markStore(
        make({
          read: Ref.get(ref),
          write: (session, expected) =>
            Effect.flatten(Ref.modify(ref, (stored): readonly [Effect.Effect<Stored, StoreConflictError>, Stored] => {
              if (stored.revision !== expected) return [Effect.fail(conflict(expected, stored.revision)), stored]
              const next = { revision: expected + 1, session }
              return [Effect.succeed(next), next]
            })),
          shared: false
        }),
        "memory"
      )
  )

/**
 * @since 0.1.0
 * @category layers
 */
export const layerMemory = (initial?: Session.Session): Layer.Layer<SessionStore> =>
  Layer.effect(SessionStore, makeMemory(initial))

/**
 * Stores for many sessions, one per key (an application's user id): what a
 * `SessionPool` needs. Each key's store has its own record, lock and change
 * feed; nothing of one key touches another's. `forKey` gives the same
 * backing record for the same key every time.
 *
 * @since 0.2.0
 * @category models
 */
export interface Keyed {
  readonly forKey: (key: string) => Effect.Effect<Service, StoreError>
}

/**
 * @since 0.2.0
 * @category tags
 */
export class KeyedSessionStore extends Context.Service<KeyedSessionStore, Keyed>()("moon-refresh/KeyedSessionStore") {}

/**
 * One memory store per key, kept for the life of the process: a session a
 * pool dropped for being idle comes back from here without a request.
 *
 * @since 0.2.0
 * @category constructors
 */
export const makeMemoryKeyed: Effect.Effect<Keyed> = Effect.sync(() => {
  const stores = new Map<string, Service>()
  return {
    // Made in one synchronous step, so two fibers asking for a new key at once get the same store.
    forKey: (key) =>
      Effect.sync(() => {
        let store = stores.get(key)
        if (store === undefined) {
          store = Effect.runSync(makeMemory())
          stores.set(key, store)
        }
        return store
      })
  }
})

/**
 * @since 0.2.0
 * @category layers
 */
export const layerMemoryKeyed: Layer.Layer<KeyedSessionStore> = Layer.effect(KeyedSessionStore, makeMemoryKeyed)

/**
 * @since 0.1.0
 * @category models
 */
export interface KeyValueStoreOptions {
  /** The key the session is stored under. */
  readonly key: string
}

/**
 * A store on Effect's `KeyValueStore` (`effect/persistence`): the file system
 * in Node (`KeyValueStore.layerFileSystem`, or `PrivateKeyValueStore` from
 * `moon-refresh/node`), `localStorage` in a browser
 * (`KeyValueStore.layerStorage`), or anything else that implements it.
 *
 * The session is stored as JSON with its tokens in clear. Give it an
 * encrypting `KeyValueStore` (or a directory only the user can read) if that
 * matters where it runs.
 *
 * It coordinates the managers of one process only: a `KeyValueStore` has no
 * lock and no compare-and-set, so two processes sharing a directory (or two
 * tabs sharing `localStorage`) can still refresh the same token at once. For
 * those, use `NodeSessionStore` (`moon-refresh/node`), `BrowserSessionStore`
 * (`moon-refresh/browser`) or `RedisSessionStore` (`moon-refresh/redis`).
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeKeyValueStore = (
  options: KeyValueStoreOptions
): Effect.Effect<Service, never, KeyValueStore.KeyValueStore> =>
  Effect.map(Effect.service(KeyValueStore.KeyValueStore), (kv) => {
    // The storage's error is kept as the cause; an encoding error is not (it may quote the session).
    const fail =
      (operation: StoreError["operation"]) => (error: KeyValueStore.KeyValueStoreError | Schema.SchemaError) =>
        new StoreError({
          operation,
          message: capMessage(error.message),
          ...(error._tag === "KeyValueStoreError" ? { cause: error } : {})
        })
    return Metrics.markStore(
      make({
        load: kv.get(options.key).pipe(
          Effect.mapError(fail("load")),
          Effect.flatMap((text) =>
            text === undefined ? Effect.succeedNone : decodeSession(text).pipe(
              Effect.map(Option.some),
              Effect.catchTag("SchemaError", () =>
                // An unreadable value (an old format, a hand edit) is a signed-out
                // state, not a crash at start-up. The value itself is not logged.
                Effect.as(
                  Effect.logWarning(
                    `moon-refresh: stored session under "${options.key}" does not decode; treated as none`
                  ),
                  Option.none()
                ))
            )
          )
        ),
        save: (session) =>
          encodeSession(session).pipe(
            Effect.flatMap((text) => kv.set(options.key, text)),
            Effect.mapError(fail("save"))
          ),
        clear: kv.remove(options.key).pipe(Effect.mapError(fail("clear")))
      }),
      "key_value"
    )
  })

// The value a `KeyValueStore` holds: the session as its schema encodes it, in
// JSON (what `forSchema` wrote before Effect 4, so values stored then still load).
const SessionJson = Schema.fromJsonString(Session.Session)
const decodeSession = Schema.decodeEffect(SessionJson)
const encodeSession = Schema.encodeEffect(SessionJson)

/**
 * @since 0.1.0
 * @category layers
 */
export const layerKeyValueStore = (
  options: KeyValueStoreOptions
): Layer.Layer<SessionStore, never, KeyValueStore.KeyValueStore> =>
  Layer.effect(SessionStore, makeKeyValueStore(options))

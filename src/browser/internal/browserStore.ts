/**
 * The body of `BrowserSessionStore`: the record in IndexedDB, the lock on
 * Web Locks, the change feed on `BroadcastChannel`. Everything the browser
 * gives comes in through {@link Platform}, so Node tests can give fakes.
 *
 * Not public API: the package's exports keep `internal/` private.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { capMessage } from "../../internal/message.js"
import * as Metrics from "../../internal/metrics.js"
import * as Options_ from "../../internal/options.js"
import type * as Session from "../../Session.js"
import * as SessionStore from "../../SessionStore.js"
import type * as BrowserSessionStore from "../BrowserSessionStore.js"
import * as Records from "./records.js"
import * as WebLock from "./webLock.js"

/** A `BroadcastChannel`, as far as the store uses one. */
export interface Channel {
  onmessage: ((event: MessageEvent) => void) | null
  postMessage(message: unknown): void
  close(): void
}

/** What the store takes from the browser. */
export interface Platform {
  readonly indexedDB: IDBFactory
  readonly locks: WebLock.Locks
  readonly channel: (name: string) => Channel
  /** Calls `listener` when the page comes back (shown again, or restored from the back/forward cache). */
  readonly onResume: (listener: () => void) => () => void
}

const owner = "BrowserSessionStore"

/** The options, checked and with their defaults. */
export interface Settings {
  readonly key: string
  readonly database: string
  readonly maxHold: Duration.Duration
}

export const defaults = {
  database: "moon-refresh",
  maxHold: Duration.seconds(15)
} as const

// How long past `maxHold` a waiter lets a holder's own release arrive before taking over.
const grace = Duration.seconds(1)

const text = (option: string, input: unknown): Result.Result<string, Options_.Invalid> =>
  typeof input === "string" && input !== ""
    ? Result.succeed(input)
    : Result.fail({ owner, option, reason: "must be a non-empty string" })

export const settings = (options: BrowserSessionStore.Options): Result.Result<Settings, Options_.Invalid> =>
  Result.all({
    key: text("key", options.key),
    database: text("database", options.database ?? defaults.database),
    maxHold: Options_.duration(owner, "maxHold", options.maxHold ?? defaults.maxHold, "positive")
  })

/**
 * The browser's own pieces, or the first one missing. Read when the store is
 * made, never when the module loads, so the module imports anywhere.
 */
export const fromGlobals = (): Result.Result<Platform, Missing> => {
  const scope = globalThis as {
    readonly navigator?: { readonly locks?: WebLock.Locks | undefined } | undefined
    readonly indexedDB?: IDBFactory | undefined
    readonly BroadcastChannel?: (new(name: string) => Channel) | undefined
    readonly document?: Document | undefined
    readonly addEventListener?: typeof globalThis.addEventListener | undefined
    readonly removeEventListener?: typeof globalThis.removeEventListener | undefined
  }
  const locks = scope.navigator?.locks
  if (locks === undefined) {
    return Result.fail(unavailable(
      "navigator.locks",
      "the Web Locks API is missing; browsers give it only to secure contexts (https://, or http://localhost and http://127.0.0.1)"
    ))
  }
  const indexedDB = scope.indexedDB
  if (indexedDB === undefined) return Result.fail(unavailable("indexedDB", "IndexedDB is missing"))
  const Channel = scope.BroadcastChannel
  if (Channel === undefined) return Result.fail(unavailable("BroadcastChannel", "BroadcastChannel is missing"))
  return Result.succeed({
    locks,
    indexedDB,
    channel: (name) => new Channel(name),
    onResume: (listener) => {
      const onVisible = () => {
        if (scope.document?.visibilityState === "visible") listener()
      }
      scope.document?.addEventListener("visibilitychange", onVisible)
      scope.addEventListener?.("pageshow", listener)
      return () => {
        scope.document?.removeEventListener("visibilitychange", onVisible)
        scope.removeEventListener?.("pageshow", listener)
      }
    }
  })
}

/** Which piece of the browser is missing, and why; the public module makes it an error. */
export interface Missing {
  readonly missing: "navigator.locks" | "indexedDB" | "BroadcastChannel"
  readonly message: string
}

const unavailable = (missing: Missing["missing"], message: string): Missing => ({ missing, message })

// IndexedDB's errors (`DOMException`s: quota, a closing connection, an
// aborted transaction) name what failed, never the record: kept as the cause.
const describe = (error: unknown): string =>
  capMessage(error instanceof Error ? `${error.name}: ${error.message}` : String(error))

/** The store on `platform`, its database connection and channel closed with the scope. */
export const make = (platform: Platform, settings: Settings): Effect.Effect<SessionStore.Service, never, Scope.Scope> =>
  Effect.gen(function*() {
    const { key } = settings
    const name = `moon-refresh/${settings.database}/${key}`
    const records = yield* Effect.acquireRelease(
      Effect.sync(() => Records.open(platform.indexedDB, settings.database)),
      (records) => Effect.sync(records.close)
    )
    const outbox = yield* Effect.acquireRelease(
      Effect.sync(() => platform.channel(name)),
      (channel) => Effect.sync(() => channel.close())
    )
    const encode = Schema.encodeEffect(SessionStore.StoredSchema)
    const decode = Schema.decodeUnknownEffect(SessionStore.StoredSchema)

    const read: Effect.Effect<SessionStore.Stored, SessionStore.StoreError> = Effect.tryPromise({
      try: () => records.read(key),
      catch: (error) => new SessionStore.StoreError({ operation: "load", message: describe(error), cause: error })
    }).pipe(Effect.flatMap((raw) =>
      raw === undefined ? Effect.succeed(SessionStore.empty) : decode(raw).pipe(
        Effect.catchTag("SchemaError", () =>
          // An unreadable record (an old format, a hand edit) is a signed-out
          // state at its revision, so the next write replaces it. Not logged whole.
          Effect.as(
            Effect.logWarning(`moon-refresh: the stored session "${key}" does not decode; treated as none`),
            { revision: Records.revisionOf(raw), session: Option.none<Session.Session>() }
          ))
      )
    ))

    const write = (session: Option.Option<Session.Session>, expected: number) =>
      Effect.gen(function*() {
        const next: SessionStore.Stored = { revision: expected + 1, session }
        const encoded = yield* Effect.orDie(encode(next))
        const hold = yield* WebLock.currentHold
        // Checked inside the transaction, so a steal that lands while it waits still stops it.
        const allowed = () => !(hold !== undefined && hold.name === name && hold.state === "lost")
        const outcome = yield* Effect.tryPromise({
          try: () => records.compareAndSet(key, expected, encoded, allowed),
          catch: (error) =>
            new SessionStore.StoreError({
              operation: Option.isSome(session) ? "save" : "clear",
              message: describe(error),
              cause: error
            })
        })
        switch (outcome._tag) {
          case "Conflict":
            return yield* Effect.fail(SessionStore.conflict(expected, outcome.actual))
          case "Refused":
            return yield* Effect.fail(
              new SessionStore.StoreConflictError({
                expected,
                actual: expected,
                message: "another tab took over the lock while this one held it; nothing written"
              })
            )
          case "Written":
            // After the commit: a tab that reads on this message reads the new record.
            yield* Effect.sync(() => outbox.postMessage({ revision: next.revision }))
            return next
        }
      })

    // Each message (another tab's or another store's write in this tab) and
    // each return of the page is a reason to read again; one pending reason
    // is enough, since the read gets the latest record.
    const changes: Stream.Stream<SessionStore.Stored> = Stream.callback<void>((reasons) =>
      Effect.acquireRelease(
        Effect.sync(() => {
          const inbox = platform.channel(name)
          inbox.onmessage = () => void Queue.offerUnsafe(reasons, undefined)
          const stop = platform.onResume(() => void Queue.offerUnsafe(reasons, undefined))
          return () => {
            stop()
            inbox.close()
          }
        }),
        (dispose) => Effect.sync(dispose)
      ), { bufferSize: 1, strategy: "sliding" }).pipe(
        // A read that fails is logged and skipped: the feed never fails.
        Stream.mapEffect(() => read.pipe(Effect.tapError((error) => Effect.logDebug(error)), Effect.result)),
        Stream.filterMap((stored) => stored),
        Stream.changesWith((a, b) => a.revision === b.revision && Option.isSome(a.session) === Option.isSome(b.session))
      )

    return Metrics.markStore(
      SessionStore.make({
        read,
        write,
        withLease: WebLock.withLease(platform.locks, { name, maxHold: settings.maxHold, grace }),
        changes,
        shared: true
      }),
      "browser"
    )
  })

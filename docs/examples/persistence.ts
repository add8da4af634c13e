// docs/05-persistence.md: where a session is kept between runs.
import { Effect, Layer, Option, Schema } from "effect"
import { KeyValueStore } from "effect/persistence"
import { Session, SessionManager, SessionStore } from "moon-refresh"
import { NodeSessionStore, PrivateKeyValueStore } from "moon-refresh/node"

// [memory]
// Nothing survives the process: for tests, or a session handed in at start.
export const InMemory = SessionStore.layerMemory()
// [/memory]

// [file]
// One JSON file per key under ./.moon, tokens in clear: PrivateKeyValueStore
// makes the directory 0700 and each file 0600 whatever the umask (the
// KeyValueStore.layerFileSystem of effect/persistence would leave them 0755 and 0644).
export const OnDisk = SessionStore.layerKeyValueStore({ key: "moon-session" }).pipe(
  Layer.provide(PrivateKeyValueStore.layerFileSystem(".moon"))
)
// [/file]

// [browser]
// In a browser: localStorage, through the same KeyValueStore interface.
export const InLocalStorage = SessionStore.layerKeyValueStore({ key: "moon-session" }).pipe(
  Layer.provide(KeyValueStore.layerStorage(() => globalThis.localStorage))
)
// [/browser]

// [custom]
// Your own store for one process: three effects. `make` keeps the revision in
// memory and adds an in-process lock and change feed.
// `Schema.fromJsonString(Session.Session)` is the stored form: tokens in clear.
const StoredSession = Schema.fromJsonString(Session.Session)

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
        Effect.orDie(Schema.encodeEffect(StoredSession)(session)),
        (json) => call("save", () => backend.set(json))
      ),
    clear: call("clear", backend.del)
  })
}
// [/custom]

// [node-file]
// One file that every process of the program shares (moon-refresh/node):
// atomic fenced writes, a lock that survives a crash, a change feed, and a
// directory (0700) and file (0600) only the user can read.
export const SharedFile = NodeSessionStore.layer({ path: ".moon/session.json" })

// The same, with a shorter lease: a process killed while it holds the lock
// blocks the others' refreshes for about 8 seconds. Keep the lease longer than
// the refresh request's timeout plus a margin (here a RefreshClient timeout of
// 5 s): the holder checks its lease has that much left before each request.
export const SharedFileShortLease = NodeSessionStore.layer({
  path: ".moon/session.json",
  lease: "8 seconds",
  pollInterval: "1 second"
})
// [/node-file]

// [node-keyed]
// One file per user of a server (a SessionPool's store), in one directory that
// every process of the server shares: each key has its own file, lock and feed.
export const SharedFilePerUser = NodeSessionStore.layerKeyed({ directory: ".moon/sessions" })

// Where a user's file is, to look at it or remove it by hand.
export const fileOfUser = (userId: string) => `.moon/sessions/${NodeSessionStore.keyFileName(userId)}`
// [/node-keyed]

// [fenced]
// A store several processes share, on a backend with a compare-and-set (a SQL
// row with a revision column, an etcd key, a Redis WATCH/MULTI): the record is
// `SessionStore.StoredJson`, and a write names the revision it replaces.
export const makeFenced = (backend: {
  // The stored JSON, or null when nothing was ever written.
  readonly get: () => Promise<string | null>
  // Stores `json` if the stored revision is still `expected`; false if it moved on.
  readonly compareAndSet: (expected: number, json: string) => Promise<boolean>
}): SessionStore.Service => {
  const unavailable = (operation: "load" | "save") => () =>
    new SessionStore.StoreError({ operation, message: `backend unavailable during ${operation}` })
  const read = Effect.tryPromise({ try: backend.get, catch: unavailable("load") }).pipe(
    Effect.map((json) =>
      json === null
        ? SessionStore.empty
        // A record that does not decode reads as a sign-out at revision 0, never a crash.
        : Option.getOrElse(Schema.decodeUnknownOption(SessionStore.StoredJson)(json), () => SessionStore.empty)
    )
  )
  return SessionStore.make({
    read,
    write: (session, expected) => {
      const next: SessionStore.Stored = { revision: expected + 1, session }
      return Effect.tryPromise({
        try: () => backend.compareAndSet(expected, Schema.encodeSync(SessionStore.StoredJson)(next)),
        catch: unavailable("save")
      }).pipe(
        Effect.flatMap((stored) =>
          stored
            ? Effect.succeed(next)
            // Someone wrote in between: say at which revision the record is now.
            : Effect.flatMap(read, (current) => Effect.fail(SessionStore.conflict(expected, current.revision)))
        )
      )
    }
    // No `withLock` here: `make` gives an in-process one. Two processes may
    // then POST the same refresh token (a reuse, which the server punishes);
    // fencing only stops the second from overwriting the first's session. A
    // lock that reaches every process, and a `changes` feed, are what give one
    // refresh per expiry.
  })
}
// [/fenced]

// [signin]
// Start from a Moon login response (same body shapes as a refresh), then let
// the manager keep the session alive.
export const signInFromLogin = (loginResponseBody: unknown) =>
  Effect.gen(function*() {
    const session = yield* Schema.decodeUnknownEffect(Session.MoonResponse)(loginResponseBody)
    yield* SessionManager.signIn(session)
  })
// [/signin]

/**
 * The body of `RedisSessionStore`: the Lua scripts, one bounded operation on
 * the client, the lease lock and the change feed. The public module holds the
 * options, the layers and the docs.
 *
 * Not public API: the package's exports keep `internal/` private.
 */
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberHandle from "effect/FiberHandle"
import * as FiberSet from "effect/FiberSet"
import * as Option from "effect/Option"
import * as PubSub from "effect/PubSub"
import * as Queue from "effect/Queue"
import * as Random from "effect/Random"
import * as Result from "effect/Result"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Semaphore from "effect/Semaphore"
import * as Stream from "effect/Stream"
import type { Redis, RedisOptions } from "ioredis"
import { createHash } from "node:crypto"
import { hostname } from "node:os"
import { capMessage } from "../../internal/message.js"
import * as Metrics from "../../internal/metrics.js"
import * as StoreKey from "../../internal/storeKey.js"
import type * as Session from "../../Session.js"
import * as SessionStore from "../../SessionStore.js"

// ---------------------------------------------------------------------------
// Scripts: each runs atomically on the server.
// ---------------------------------------------------------------------------

// The revision of a stored value, as `decodeRecord` reads it: a value that is
// missing or does not parse is revision 0, so both sides agree on what a
// write at revision 0 replaces.
const revisionOf = `
local function revisionOf(value)
  if not value then return 0 end
  local ok, record = pcall(cjson.decode, value)
  if ok and type(record) == "table" and type(record.revision) == "number"
    and record.revision >= 0 and record.revision % 1 == 0 then
    return record.revision
  end
  return 0
end
`

interface Script {
  readonly lua: string
  readonly sha: string
}

const script = (lua: string): Script => ({ lua, sha: createHash("sha1").update(lua).digest("hex") })

/** KEYS: record. ARGV: expected revision, new record, channel. Returns `{written (0|1), revision before}`. */
export const writeScript = script(`${revisionOf}
local actual = revisionOf(redis.call("GET", KEYS[1]))
if actual ~= tonumber(ARGV[1]) then return {0, actual} end
redis.call("SET", KEYS[1], ARGV[2])
redis.call("PUBLISH", ARGV[3], ARGV[2])
return {1, actual}
`)

/**
 * KEYS: record. ARGV: record, its revision, channel. Puts the record back if
 * the stored one is older (or gone). Returns `{put back (0|1), stored after}`
 * (without the second when there is nothing stored).
 */
export const restoreScript = script(`${revisionOf}
local current = redis.call("GET", KEYS[1])
if revisionOf(current) < tonumber(ARGV[2]) then
  redis.call("SET", KEYS[1], ARGV[1])
  redis.call("PUBLISH", ARGV[3], ARGV[1])
  return {1, ARGV[1]}
end
return {0, current}
`)

/** KEYS: lock. ARGV: token, lease in ms. Returns 0 when taken, else the holder's lease left in ms (or -1). */
export const acquireScript = script(`
if redis.call("SET", KEYS[1], ARGV[1], "NX", "PX", ARGV[2]) then return 0 end
return redis.call("PTTL", KEYS[1])
`)

/** KEYS: lock. ARGV: token, released channel. Deletes the lock only if the token still holds it. */
export const releaseScript = script(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
  redis.call("DEL", KEYS[1])
  redis.call("PUBLISH", ARGV[2], "")
  return 1
end
return 0
`)

/** KEYS: lock. ARGV: token, lease in ms. Extends the lease only if the token still holds it. */
export const renewScript = script(`
if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("PEXPIRE", KEYS[1], ARGV[2]) end
return 0
`)

// EVALSHA, and EVAL once when the server does not know the script (first use,
// or a restarted server), as ioredis's own `defineCommand` does; done here so
// that a client the user passes in gets no commands added to it.
const runScript = (
  client: Redis,
  { lua, sha }: Script,
  keys: ReadonlyArray<string>,
  args: ReadonlyArray<string | number>
): Promise<unknown> =>
  client.evalsha(sha, keys.length, ...keys, ...args).catch((error: unknown) =>
    error instanceof Error && error.message.startsWith("NOSCRIPT")
      ? client.eval(lua, keys.length, ...keys, ...args)
      : Promise.reject(error)
  )

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

/** See `RedisSessionStore.clientOptions`, which documents each choice. */
export const clientOptions: RedisOptions = {
  enableOfflineQueue: false,
  maxRetriesPerRequest: 0,
  autoResendUnfulfilledCommands: false,
  socketTimeout: 5_000,
  connectTimeout: 5_000
}

// The subscriber is ours whatever the user's client says: it resubscribes and
// re-reads itself after a reconnect, in that order.
const subscriberOptions: Partial<RedisOptions> = {
  ...clientOptions,
  autoResubscribe: false,
  lazyConnect: false,
  // A subscriber waits for messages with no command pending; ioredis's socket
  // timeout has misfired on such connections (ioredis #1904).
  socketTimeout: undefined,
  connectionName: "moon-refresh:changes"
}

/** Quits politely when the server answers, and in any case stops reconnecting. */
export const close = (client: Redis): Effect.Effect<void> =>
  Effect.tryPromise(() => client.quit()).pipe(
    Effect.timeout("1 second"),
    Effect.ignore,
    Effect.andThen(Effect.sync(() => client.disconnect()))
  )

const errorMessage = (cause: unknown): string => {
  const message = cause instanceof Error ? cause.message : String(cause)
  // ioredis's words for "sent while disconnected" name an option, not the problem.
  return capMessage(
    message.startsWith("Stream isn't writeable") ? "not connected (the connection is down)" : message
  )
}

// An error of the connection (refused, reset, closed, not writable), kept as
// a StoreError's cause. Not an error ioredis tied to a command (a reply error,
// a command aborted): it carries the command's arguments, the stored record
// with its tokens among them.
const isConnectionError = (cause: unknown): boolean =>
  cause instanceof Error && !("command" in cause) && cause.name !== "ReplyError"

// ---------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------

const decodeStored = Schema.decodeResult(SessionStore.StoredJson)
const encodeStored = Schema.encodeEffect(SessionStore.StoredJson)
const RevisionOnly = Schema.fromJsonString(
  Schema.Struct({ revision: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)) })
)
const decodeRevision = Schema.decodeResult(RevisionOnly)

/**
 * A stored value as a record. One that does not decode (an old format, a
 * hand edit) is a sign-out at the revision it names (0 if none), as the
 * scripts read it, so a write can replace it; the value itself is not logged.
 */
export const decodeRecord = (key: string, value: string | null): Effect.Effect<SessionStore.Stored> => {
  if (value === null) return Effect.succeed(SessionStore.empty)
  const decoded = decodeStored(value)
  if (Result.isSuccess(decoded)) return Effect.succeed(decoded.success)
  const revision = Result.match(decodeRevision(value), { onFailure: () => 0, onSuccess: (record) => record.revision })
  return Effect.as(
    Effect.logWarning(`moon-refresh: the record under "${key}" does not decode; treated as signed out`),
    { revision, session: Option.none() }
  )
}

// ---------------------------------------------------------------------------
// The store
// ---------------------------------------------------------------------------

/** The options, checked, in milliseconds. */
export interface Settings {
  readonly key: string
  readonly lease: number
  readonly lockTimeout: number
  readonly timeout: number
}

type Operation = SessionStore.StoreError["operation"]

/** The keys and channels one record uses; they share the record key as prefix (and so its hash tag). */
export const names = (key: string) => ({
  record: key,
  lock: `${key}:lock`,
  changes: `${key}:changes`,
  released: `${key}:released`
})

// A lock waiter sleeps at most this long between two attempts when nothing
// wakes it: a release it missed (subscriber down) costs no more than this.
const maxPoll = 1_000

type Command = <A>(operation: Operation, send: () => Promise<A>) => Effect.Effect<A, SessionStore.StoreError>

// One command, bounded by the timeout, waiting first for the connection:
// with the offline queue off a command sent while disconnected fails at
// once, so nothing is left queued to run after the caller gave up.
const bounded = (connection: Redis, timeout: number): Command => (operation, send) =>
  Effect.andThen(
    connected(connection, operation),
    Effect.tryPromise({
      try: send,
      catch: (cause) =>
        new SessionStore.StoreError({
          operation,
          message: `Redis: ${errorMessage(cause)}`,
          ...(isConnectionError(cause) ? { cause } : {})
        })
    })
  ).pipe(
    Effect.timeoutOrElse({
      duration: timeout,
      orElse: () =>
        Effect.fail(
          new SessionStore.StoreError({
            operation,
            message: `Redis did not answer within ${
              Duration.format(Duration.millis(timeout))
            } (connection ${connection.status})`
          })
        )
    })
  )

// ---------------------------------------------------------------------------
// The subscriber: one connection for every channel a store (or a keyed
// store's many keys) follows
// ---------------------------------------------------------------------------

/** What follows a channel. */
export interface Listener {
  readonly onMessage: (message: string) => void
  /**
   * Runs once the channel is subscribed, and again after every reconnect
   * (pub/sub forgot what it sent meanwhile): the follower re-reads.
   */
  readonly onSubscribed: Effect.Effect<void>
}

export interface Subscriber {
  /**
   * Follows `channel` for as long as the scope: subscribed when its first
   * listener comes, unsubscribed when its last one leaves.
   */
  readonly follow: (channel: string, listener: Listener) => Effect.Effect<void, never, Scope.Scope>
  /** The channels followed now. */
  readonly channels: () => number
}

// Channels per SUBSCRIBE when resubscribing many after a reconnect.
const subscribeBatch = 1_000

/** A subscriber connection of its own (`client.duplicate()`), closed with the scope. */
export const makeSubscriber = (client: Redis, timeout: number): Effect.Effect<Subscriber, never, Scope.Scope> =>
  Effect.gen(function*() {
    const run = yield* FiberSet.makeRuntime<never>()
    const listeners = new Map<string, Set<Listener>>()
    const subscriber = yield* Effect.acquireRelease(
      Effect.sync(() => client.duplicate(subscriberOptions)),
      close
    )
    const command = bounded(subscriber, timeout)
    // Connection errors reach callers through the operations; here they are noise.
    subscriber.on("error", (error: Error) => run(Effect.logDebug(`moon-refresh: Redis subscriber: ${error.message}`)))
    subscriber.on("message", (channel: string, message: string) => {
      listeners.get(channel)?.forEach((listener) => listener.onMessage(message))
    })
    // After every (re)connect: subscribe to every channel followed, then let
    // each listener re-read. Retried until it succeeds or the next reconnect
    // replaces it.
    const resync = yield* FiberHandle.make<void, never>()
    const onReady = Effect.gen(function*() {
      const channels = [...listeners.keys()]
      for (let i = 0; i < channels.length; i += subscribeBatch) {
        const batch = channels.slice(i, i + subscribeBatch)
        yield* command("load", () => subscriber.subscribe(...batch)).pipe(Effect.retry(Schedule.spaced("500 millis")))
      }
      const all = [...listeners.values()].flatMap((set) => [...set])
      yield* Effect.forEach(all, (listener) => listener.onSubscribed, { concurrency: 16, discard: true })
    }).pipe(Effect.ignore)
    subscriber.on("ready", () => run(FiberHandle.run(resync, onReady)))
    yield* Effect.addFinalizer(() => Effect.sync(() => subscriber.removeAllListeners("ready")))

    // SUBSCRIBE and UNSUBSCRIBE are sent in the step that changes the map, so
    // the connection gets them in the order the channels were followed and
    // left. Sent only when ready: a connection that is not gets them all on `ready`.
    const follow = (channel: string, listener: Listener): Effect.Effect<void, never, Scope.Scope> =>
      Effect.flatMap(
        Effect.acquireRelease(
          Effect.sync(() => {
            const set = listeners.get(channel) ?? new Set()
            const first = set.size === 0
            set.add(listener)
            listeners.set(channel, set)
            if (subscriber.status !== "ready") return undefined
            return first ? subscriber.subscribe(channel) : Promise.resolve()
          }),
          () =>
            Effect.sync(() => {
              const set = listeners.get(channel)
              set?.delete(listener)
              if (set?.size !== 0) return
              listeners.delete(channel)
              if (subscriber.status === "ready") subscriber.unsubscribe(channel).catch(() => undefined)
            })
        ),
        (subscribing) =>
          subscribing === undefined ? Effect.void : Effect.forkScoped(
            command("load", () => subscribing).pipe(Effect.andThen(listener.onSubscribed), Effect.ignore)
          )
      )

    return { follow, channels: () => listeners.size }
  })

// ---------------------------------------------------------------------------
// The store of one record
// ---------------------------------------------------------------------------

/** How a store uses the subscriber. */
type Following =
  /** The single store: its channels are followed for its whole life, its feed fed whether read or not. */
  | "always"
  /** A keyed store's: a channel is followed only while the feed runs, or a lock waiter waits. */
  | "while-needed"

/** The record: reads and fenced writes, and the put-back of a record the server lost. */
const makeRecord = (
  client: Redis,
  settings: Settings,
  run: (effect: Effect.Effect<unknown>) => unknown
) => {
  const keys = names(settings.key)
  const command = bounded(client, settings.timeout)

  // The newest record this process has seen, read, written or heard of: what
  // it puts back if the server lost it.
  let known: SessionStore.Stored = SessionStore.empty
  const note = (stored: SessionStore.Stored) => {
    if (stored.revision > known.revision) known = stored
    return stored
  }

  const encode = (stored: SessionStore.Stored, operation: Operation) =>
    Effect.mapError(
      encodeStored(stored),
      (error) => new SessionStore.StoreError({ operation, message: error.message })
    )

  // A record older than one this process saw means the server lost data
  // (restarted without it, or from an older snapshot): put back the newest
  // known, unless another holder already put back a newer one.
  const restore = (operation: Operation) =>
    Effect.gen(function*() {
      const stored = known
      const json = yield* encode(stored, operation)
      const [restored, after] = (yield* command(
        operation,
        () => runScript(client, restoreScript, [keys.record], [json, stored.revision, keys.changes])
      )) as [number, string | undefined]
      if (restored === 1) {
        yield* Effect.logWarning(
          `moon-refresh: the record under "${settings.key}" was lost or older on the server; put back revision ${stored.revision}`
        )
      }
      return note(yield* decodeRecord(settings.key, after ?? null))
    })

  const read: Effect.Effect<SessionStore.Stored, SessionStore.StoreError> = Effect.gen(function*() {
    const value = yield* command("load", () => client.get(keys.record))
    const stored = note(yield* decodeRecord(settings.key, value))
    return stored.revision < known.revision ? yield* restore("load") : stored
  })

  const write = (
    session: Option.Option<Session.Session>,
    expected: number
  ): Effect.Effect<SessionStore.Stored, SessionStore.StoreError | SessionStore.StoreConflictError> =>
    Effect.gen(function*() {
      const operation = Option.isSome(session) ? "save" : "clear"
      const next: SessionStore.Stored = { revision: expected + 1, session }
      const json = yield* encode(next, operation)
      const attempt = Effect.map(
        command(operation, () => runScript(client, writeScript, [keys.record], [expected, json, keys.changes])),
        (reply) => reply as [number, number]
      )
      let [written, actual] = yield* attempt
      if (written === 0 && actual < known.revision) {
        // The server lost data: put the newest known record back, then the
        // write is fenced against it as if nothing had been lost.
        const restored = yield* restore(operation)
        if (restored.revision === expected) [written, actual] = yield* attempt
        else actual = restored.revision
      }
      if (written === 0) return yield* Effect.fail(SessionStore.conflict(expected, actual))
      return note(next)
    })

  // A published record, decoded in the step that received it so that
  // records reach the feed in the order they were published.
  const received = (message: string, deliver: (stored: SessionStore.Stored) => void) => {
    const decoded = decodeStored(message)
    if (Result.isSuccess(decoded)) return deliver(note(decoded.success))
    run(Effect.map(decodeRecord(settings.key, message), (stored) => deliver(note(stored))))
  }

  return { read, write, received }
}

/** One hold of the lease lock. */
interface Hold {
  readonly token: string
  /** When the last renewal (or the SET that took the lock) was sent: the lease runs at least a lease from it. */
  renewedAt: number
  /** Set when a renewal found the lock gone or another's, or when the hold ended. */
  lost: boolean
  readonly renewals: Semaphore.Semaphore
}

/** Milliseconds on the monotonic clock (`Clock.monotonicTimeNanos`: `process.hrtime` unless a TestClock is given). */
const monotonic = Effect.map(Clock.monotonicTimeNanos, (nanos) => Number(nanos) / 1e6)

/** The part of the lease a holder keeps in reserve for the clocks' drift: as the file lock. */
const marginOf = (lease: number): number => lease / 20

const lockError = (message: string) => new SessionStore.StoreError({ operation: "lock", message })

/**
 * The renewals and the lease of the holds of one lock: renewals every third
 * of the lease while held, each owner-checked, and `ensure` on top of them.
 */
const makeLeases = (client: Redis, command: Command, lock: string, leaseMillis: number) => {
  // Renews the lease every third of it while the critical section runs. A
  // holder that stalls past its lease loses the lock; its writes are fenced.
  const renewing = (hold: Hold) =>
    Effect.gen(function*() {
      const interval = Duration.millis(Math.max(1, Math.floor(leaseMillis / 3)))
      while (!hold.lost) {
        yield* Effect.sleep(interval)
        yield* Effect.result(renewNow(hold))
      }
    })

  // One owner-checked renewal. The server counts the new lease from when it
  // gets the command, after `sent`: the lease runs at least until `sent + lease`.
  const renewNow = (hold: Hold) =>
    hold.renewals.withPermits(1)(Effect.gen(function*() {
      if (hold.lost) return false
      const sent = yield* monotonic
      const renewed = yield* command("lock", () => runScript(client, renewScript, [lock], [hold.token, leaseMillis]))
      if (renewed === 0) {
        hold.lost = true
        yield* Effect.logWarning(
          `moon-refresh: the Redis lock "${lock}" expired while held; another holder may take over (writes stay fenced)`
        )
        return false
      }
      hold.renewedAt = Math.max(hold.renewedAt, sent)
      return true
    }))

  const usable = leaseMillis - marginOf(leaseMillis)

  const lease = (hold: Hold): SessionStore.Lease => ({
    ensure: (atLeast) =>
      Effect.gen(function*() {
        // A lease shorter than what is asked for was chosen so: it is asked for
        // nearly whole (a renewal that has just been made).
        const wanted = Math.min(Duration.toMillis(atLeast), usable * 0.9)
        if (!(yield* renewNow(hold))) {
          return yield* lockError(`the Redis lock "${lock}" is no longer this holder's`)
        }
        const left = hold.renewedAt + usable - (yield* monotonic)
        if (left < wanted) {
          return yield* lockError(`the Redis lock "${lock}" has ${Math.floor(left)} ms left, not ${wanted} ms`)
        }
      })
  })

  return { lease, renewing }
}

/** The lease lock: `SET NX PX`, renewed while held, released by its owner only. */
const makeLock = (client: Redis, settings: Settings, subscriber: Subscriber, following: Following) => {
  const keys = names(settings.key)
  const command = bounded(client, settings.timeout)

  // Waiters wake when a holder releases (its PUBLISH), or when its lease ends.
  let released = Deferred.makeUnsafe<void>()
  const wakeWaiters = () => {
    const woken = released
    released = Deferred.makeUnsafe<void>()
    Deferred.doneUnsafe(woken, Exit.void)
  }
  const releases: Listener = { onMessage: wakeWaiters, onSubscribed: Effect.sync(wakeWaiters) }

  const acquire = (token: string) =>
    Effect.gen(function*() {
      const deadline = (yield* Clock.currentTimeMillis) + settings.lockTimeout
      let listening = following === "always"
      while (true) {
        const woken = released
        const sent = yield* monotonic
        const left = Number(
          yield* command("lock", () => runScript(client, acquireScript, [keys.lock], [token, settings.lease]))
        )
        if (left === 0) return sent
        const now = yield* Clock.currentTimeMillis
        if (now >= deadline) {
          return yield* new SessionStore.StoreError({
            operation: "lock",
            message: `another holder kept the Redis lock "${keys.lock}" for ${
              Duration.format(Duration.millis(settings.lockTimeout))
            }`
          })
        }
        // A keyed store listens for releases only while it waits; once
        // subscribed, it tries again at once (a release may have come in between).
        if (!listening) {
          yield* subscriber.follow(keys.released, releases)
          listening = true
        }
        // A lease that ends wakes the next holder; the jitter keeps waiters
        // that polled together from polling together again.
        const jitter = yield* Random.nextIntBetween(0, 50, { halfOpen: true })
        const wait = Math.min(left > 0 ? left : maxPoll, maxPoll, deadline - now) + jitter
        yield* Effect.raceFirst(Deferred.await(woken), Effect.sleep(Duration.millis(wait)))
      }
    }).pipe(Effect.scoped)

  const release = (token: string) =>
    Effect.ignore(command("lock", () => runScript(client, releaseScript, [keys.lock], [token, keys.released])))

  const { lease, renewing } = makeLeases(client, command, keys.lock, settings.lease)

  const newToken = Effect.map(
    Effect.all([
      Random.nextIntBetween(0, 0x7fffffff, { halfOpen: true }),
      Random.nextIntBetween(0, 0x7fffffff, { halfOpen: true })
    ]),
    ([a, b]) => `${hostname()}:${process.pid}:${a.toString(36)}${b.toString(36)}`
  )

  const withLease = <A, E, R>(
    use: (lease: SessionStore.Lease) => Effect.Effect<A, E, R>
  ): Effect.Effect<A, E | SessionStore.StoreError, R> =>
    Effect.uninterruptibleMask((restoreInterruption) =>
      Effect.gen(function*() {
        const token = yield* newToken
        // A SET that reached the server after the caller gave up (or timed
        // out) is deleted, not left to hold the lock for a whole lease.
        const sent = yield* restoreInterruption(acquire(token)).pipe(
          Effect.onExit((exit) => Exit.isSuccess(exit) ? Effect.void : Effect.asVoid(Effect.forkDetach(release(token))))
        )
        const hold: Hold = { token, renewedAt: sent, lost: false, renewals: Semaphore.makeUnsafe(1) }
        return yield* Effect.scoped(
          Effect.andThen(
            Effect.forkScoped(Effect.interruptible(renewing(hold))),
            restoreInterruption(Effect.suspend(() => use(lease(hold))))
          )
        ).pipe(Effect.ensuring(Effect.andThen(Effect.sync(() => hold.lost = true), release(token))))
      })
    ).pipe(Effect.withSpan("moon-refresh/RedisSessionStore.withLock", undefined, { captureStackTrace: false }))

  return { withLease, releases }
}

const makeKeyStore = (
  client: Redis,
  settings: Settings,
  subscriber: Subscriber,
  run: (effect: Effect.Effect<unknown>) => unknown,
  following: Following
): Effect.Effect<SessionStore.Service, never, Scope.Scope> =>
  Effect.gen(function*() {
    const keys = names(settings.key)
    const { read, received, write } = makeRecord(client, settings, run)
    const { releases, withLease } = makeLock(client, settings, subscriber, following)

    // ---- the change feed ----

    // Each run of the feed starts with the record as it is once subscribed:
    // a holder that read the record, then subscribed, misses no write made
    // in between (a sign-in while it started, say).
    const startingWithCurrent = (rest: Stream.Stream<SessionStore.Stored>) =>
      Effect.map(
        Effect.option(read),
        (current) => Stream.concat(Stream.fromIterable(Option.toArray(current)), rest)
      )

    let changes: Stream.Stream<SessionStore.Stored>
    if (following === "always") {
      const feed = yield* PubSub.unbounded<SessionStore.Stored>()
      const publish = (stored: SessionStore.Stored) => void PubSub.publishUnsafe(feed, stored)
      yield* subscriber.follow(keys.changes, {
        onMessage: (message) => received(message, publish),
        // After every (re)connect: wake lock waiters (a release may have been
        // missed), re-read (putting back a record the server lost) and pass
        // on what is there.
        onSubscribed: read.pipe(Effect.retry(Schedule.spaced("500 millis")), Effect.map(publish), Effect.ignore)
      })
      yield* subscriber.follow(keys.released, releases)
      changes = Stream.unwrap(
        Effect.flatMap(
          PubSub.subscribe(feed),
          (subscription) => startingWithCurrent(Stream.fromSubscription(subscription))
        )
      )
    } else {
      changes = Stream.unwrap(Effect.gen(function*() {
        const queue = yield* Queue.unbounded<SessionStore.Stored>()
        let open = true
        yield* Effect.addFinalizer(() =>
          Effect.sync(() => {
            open = false
          })
        )
        const offer = (stored: SessionStore.Stored) => void Queue.offerUnsafe(queue, stored)
        yield* subscriber.follow(keys.changes, {
          onMessage: (message) => received(message, offer),
          onSubscribed: read.pipe(
            Effect.retry({ schedule: Schedule.spaced("500 millis"), while: () => open }),
            Effect.map(offer),
            Effect.ignore
          )
        })
        return yield* startingWithCurrent(Stream.fromQueue(queue))
      }))
    }

    return Metrics.markStore(SessionStore.make({ read, write, withLease, changes, shared: true }), "redis")
  })

/** The store on `client`: `SessionStore.make` over a fenced read and write, a lease lock and a change feed. */
export const makeStore = (
  client: Redis,
  settings: Settings
): Effect.Effect<SessionStore.Service, never, Scope.Scope> =>
  Effect.gen(function*() {
    const run = yield* FiberSet.makeRuntime<never>()
    const subscriber = yield* makeSubscriber(client, settings.timeout)
    return yield* makeKeyStore(client, settings, subscriber, run, "always")
  })

/** The options of a keyed store, checked: `lease`, `lockTimeout` and `timeout` as for one store. */
export interface KeyedSettings extends Omit<Settings, "key"> {
  readonly prefix: string
}

/**
 * The record key of a user key: `prefix{<key, percent-encoded>}`. The
 * encoding (`encodeURIComponent`) is reversible and leaves no `:`, `{` or
 * `}`, so no key's record can be another's lock or channel (`…}:lock`), and
 * the braces make the key a Redis Cluster hash tag: a key's record and lock
 * share a slot.
 */
export const recordKey = (prefix: string, key: string): string => `${prefix}{${encodeURIComponent(key)}}`

/** The keyed store and its subscriber, for the tests. */
export interface Keyed {
  readonly keyed: SessionStore.Keyed
  readonly subscriber: Subscriber
}

/**
 * One store per user key, on one client and one subscriber connection. A
 * key's store is built on each `forKey` (the same record every time) and
 * holds nothing on the server but while its feed runs or it waits for its
 * lock: then its channel is subscribed on the shared connection.
 */
export const makeKeyed = (client: Redis, settings: KeyedSettings): Effect.Effect<Keyed, never, Scope.Scope> =>
  Effect.gen(function*() {
    const run = yield* FiberSet.makeRuntime<never>()
    const subscriber = yield* makeSubscriber(client, settings.timeout)
    const forKey = (key: string) =>
      Effect.flatMap(StoreKey.check("RedisSessionStore", key), (valid) =>
        // "while-needed" adds nothing to the scope: each feed run and lock wait has a scope of its own.
        Effect.scoped(
          makeKeyStore(client, { ...settings, key: recordKey(settings.prefix, valid) }, subscriber, run, "while-needed")
        ))
    return { keyed: { forKey }, subscriber }
  })

// Waits for the client's `ready`, triggering the connection of a lazy client.
const connected = (client: Redis, operation: Operation): Effect.Effect<void, SessionStore.StoreError> =>
  Effect.callback<void, SessionStore.StoreError>((resume) => {
    if (client.status === "ready") return resume(Effect.void)
    if (client.status === "end") {
      return resume(Effect.fail(new SessionStore.StoreError({ operation, message: "the Redis client is closed" })))
    }
    const onReady = () => resume(Effect.void)
    client.once("ready", onReady)
    if (client.status === "wait") client.connect().catch(() => undefined)
    return Effect.sync(() => client.off("ready", onReady))
  })

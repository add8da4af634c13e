/**
 * The `SessionPool`: one cell of the session engine per key (`session/cell.ts`,
 * the same rules and single flight as a `SessionManager`), with what a pool
 * shares instead of fibers per key:
 *
 * - one timer for every key (`timerWheel.ts`);
 * - one event feed, each event tagged with its key;
 * - one `RefreshClient`, behind a cap on the POSTs in flight and a circuit
 *   that backs the whole pool off when refreshes keep failing;
 * - one sweep that drops sessions idle for `idleTimeToLive`, and a bound on
 *   how many are live (least recently used dropped first). A dropped session
 *   stays in its store and comes back from it on the next use. A session with
 *   anything in progress (a refresh, a write, a caller inside one of its
 *   operations) is never dropped.
 *
 * Not `RcMap`: `RcMap.get` opens a scope per access, about 26,000 reads a
 * second on this machine, where a pool must serve a million. A `Map` read and
 * the session's prebuilt effect do; reads never reorder the `Map` (the sweep
 * and the eviction find the oldest sessions by their last-use times).
 *
 * Not public API: the package's exports keep `internal/` private.
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import type * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Fiber from "effect/Fiber"
import * as FiberSet from "effect/FiberSet"
import * as Option from "effect/Option"
import * as PubSub from "effect/PubSub"
import * as Random from "effect/Random"
import * as Redacted from "effect/Redacted"
import type * as Scope from "effect/Scope"
import * as Semaphore from "effect/Semaphore"
import * as Stream from "effect/Stream"
import type * as RefreshClient from "../RefreshClient.js"
import * as RefreshError from "../RefreshError.js"
import type * as Session from "../Session.js"
import * as SessionStore from "../SessionStore.js"
import * as Metrics from "./metrics.js"
import * as Cell from "./session/cell.js"
import * as Core from "./session/core.js"
import type * as Events from "./session/events.js"
import type * as Rules from "./session/rules.js"
import * as Store from "./session/store.js"
import * as SessionOptions from "./sessionOptions.js"
import * as TimerWheel from "./timerWheel.js"

/** An event of one key's session. */
export interface KeyedEvent {
  readonly key: string
  readonly event: Events.SessionEvent
}

export interface PoolConfig {
  /** The pool's name in its metrics and spans. */
  readonly name: string
  readonly session: { readonly config: Omit<Rules.Config, "spread">; readonly bounds: Store.Bounds }
  readonly idleTimeToLive: number
  readonly capacity: number
  readonly maxConcurrentRefreshes: number
}

interface Entry {
  readonly key: string
  readonly cell: Cell.Cell
  /**
   * The session's hot-path cache, copied here (the cell tells of each new
   * one): a read of a fresh token touches the Map and this entry only, which
   * with 10,000 sessions scattered in memory is what keeps it fast.
   */
  freshUntil: number
  token: Effect.Effect<Redacted.Redacted<string>>
  succeed: Effect.Effect<Session.Session>
  lastUsed: number
  feed: Fiber.Fiber<void> | undefined
  /** Callers inside one of its operations: it is not dropped under them. */
  pins: number
}

/** Transient failures in a row, across keys, that open the pool's circuit. */
export const circuitThreshold = 5

const maxCircuitPause = 60_000

export interface Pool {
  readonly use: <A, E>(
    key: string,
    f: (cell: Cell.Cell) => Effect.Effect<A, E>
  ) => Effect.Effect<A, E | SessionStore.StoreError>
  /** Signs `key` out, loading it if needed even when its store fails or the pool is full (see `create`). */
  readonly signOut: (key: string) => Effect.Effect<void, SessionStore.StoreError>
  readonly accessToken: (key: string) => Effect.Effect<Redacted.Redacted<string>, Events.SessionError>
  readonly session: (key: string) => Effect.Effect<Session.Session, Events.SessionError>
  readonly events: PubSub.PubSub<KeyedEvent>
  readonly live: () => number
  readonly armed: () => number
  readonly inFlight: () => number
  readonly maxInFlight: () => number
}

/** What the entries of one pool share. */
interface Shared {
  readonly config: PoolConfig
  readonly cells: Cell.Shared
  readonly wheel: TimerWheel.TimerWheel
  readonly events: PubSub.PubSub<KeyedEvent>
  readonly entries: Map<string, Entry>
}

/** A key's entry: a cell on the pool's client, timer and event feed, its hot-path cache beside the key. */
const makeEntry = (shared: Shared, key: string, store: SessionStore.Service, initial: Core.State): Entry => {
  const holder: { entry?: Entry } = {}
  const cell = new Cell.Cell(
    shared.cells,
    store,
    initial,
    (cell) => shared.wheel.timer(key, cell.tick),
    (event) => void PubSub.publishUnsafe(shared.events, { key, event }),
    (hot) => {
      const entry = holder.entry
      if (entry === undefined) return
      entry.freshUntil = hot.freshUntil
      entry.token = hot.succeedToken
      entry.succeed = hot.succeed
    }
  )
  const entry: Entry = {
    key,
    cell,
    freshUntil: cell.hot.freshUntil,
    token: cell.hot.succeedToken,
    succeed: cell.hot.succeed,
    lastUsed: shared.cells.clock.currentTimeMillisUnsafe(),
    feed: undefined,
    pins: 0
  }
  holder.entry = entry
  return entry
}

// A key whose record could not be read: nothing held, at a revision below any the store gives.
const unknownRecord: SessionStore.Stored = { revision: -1, session: Option.none() }

const droppable = (entry: Entry) => entry.pins === 0 && Core.isIdle(entry.cell.state)

/** The sessions that could be dropped now (nothing in progress): a pass over all, when a metric is read. */
const countIdle = (entries: Map<string, Entry>): number => {
  let idle = 0
  for (const entry of entries.values()) if (droppable(entry)) idle++
  return idle
}

/** Out of memory (the store keeps it): its timer cleared, its feed stopped. */
const dropEntry = (entries: Map<string, Entry>, entry: Entry): void => {
  entries.delete(entry.key)
  entry.cell.close()
  entry.feed?.interruptUnsafe()
  entry.feed = undefined
}

const pinned = <A, E>(entry: Entry, effect: Effect.Effect<A, E>): Effect.Effect<A, E> =>
  Effect.suspend(() => {
    entry.pins++
    return Effect.ensuring(
      effect,
      Effect.sync(() => {
        entry.pins--
      })
    )
  })

// A pass over every session, a few times per idleTimeToLive: about 20 ns a session.
const sweeping = (entries: Map<string, Entry>, config: PoolConfig, clock: Clock.Clock) => {
  const sweep = Effect.sync(() => {
    const now = clock.currentTimeMillisUnsafe()
    for (const found of entries.values()) {
      if (now - found.lastUsed >= config.idleTimeToLive && droppable(found)) dropEntry(entries, found)
    }
  })
  return Effect.forkScoped(
    Effect.forever(Effect.andThen(Effect.sleep(Math.max(1_000, config.idleTimeToLive / 4)), sweep))
  )
}

/** The pool's gauges, read when the registry is (the pool records nothing as it works), for the life of its scope. */
const gauges = (
  name: string,
  entries: Map<string, Entry>,
  client: ReturnType<typeof throttled>,
  context: Context.Context<never>
): Effect.Effect<void, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() =>
      Metrics.registerPool(name, {
        live: () => entries.size,
        idle: () => countIdle(entries),
        inFlight: client.inFlight,
        queued: client.queued,
        circuit: client.circuit
      }, context)
    ),
    (unregister) => Effect.sync(unregister)
  )

/** Closing waits (bounded) for what the store is owed by each session (see `Cell.closing`). */
const closeAll = (entries: Map<string, Entry>, cells: Cell.Shared): Effect.Effect<void> =>
  Effect.forEach(
    [...entries.values()],
    (entry) => entry.cell.closing(SessionOptions.closeBound(cells.config, cells.bounds)),
    { concurrency: "unbounded", discard: true }
  )

// A read notes its time at most once a second per key, and never reorders
// the Map: the sweep and the eviction find the oldest by their times.
const touch = (found: Entry, now: number): Entry => {
  if (now - found.lastUsed >= 1_000) found.lastUsed = now
  return found
}

export const make = (
  config: PoolConfig,
  base: RefreshClient.Service,
  keyed: SessionStore.Keyed
): Effect.Effect<Pool, never, Scope.Scope> =>
  Effect.gen(function*() {
    const scope = yield* Effect.scope
    const clock = yield* Clock.Clock
    const wheel = yield* TimerWheel.make
    const events = yield* Effect.acquireRelease(PubSub.unbounded<KeyedEvent>(), PubSub.shutdown)
    const entries = new Map<string, Entry>()
    const creating = new Map<string, Deferred.Deferred<Entry, SessionStore.StoreError>>()
    // Where the pool's metrics go, whichever fiber records them: the registry it was built with.
    const context = yield* Effect.context<never>()
    const client = throttled(base, config, clock, context)
    const cells: Cell.Shared = {
      config: { ...config.session.config, spread: true },
      bounds: config.session.bounds,
      client,
      clock,
      daemon: yield* Cell.makeDaemon,
      fork: yield* FiberSet.makeRuntime<never>(),
      sendLease: Cell.defaultSendLease,
      context,
      owner: { module: "SessionPool", attributes: { "moon.pool.name": config.name } }
    }
    const shared: Shared = { config, cells, wheel, events, entries }
    yield* Effect.addFinalizer(() => closeAll(entries, cells))
    yield* gauges(config.name, entries, client, context)

    // A sign-out needs nothing from the store: past capacity with every session
    // busy, or with the store failing, its key is loaded anyway (as nothing
    // held, at a revision not known: its tombstone is written over whatever is
    // stored, and retried so until it lands).
    const create = (key: string, signingOut: boolean): Effect.Effect<Entry, SessionStore.StoreError> =>
      Effect.gen(function*() {
        const store = yield* keyed.forKey(key)
        const made = room(entries, config, signingOut ? 0 : config.session.bounds.store)
        yield* signingOut ? Effect.ignore(made) : made
        const read = Store.read(store, config.session.bounds, context)
        const stored = yield* signingOut ? Effect.orElseSucceed(read, () => unknownRecord) : read
        const initial = Core.initial(stored, yield* Random.next, clock.currentTimeMillisUnsafe(), cells.config)
        const entry = makeEntry(shared, key, store, initial)
        entries.set(key, entry)
        // Only a store other holders share has anything to say through its feed.
        // Interruptible (`forkIn`'s default, whatever the caller's): `create` runs
        // uninterruptibly, and a feed that inherited that could not be stopped by a drop.
        if (store.shared) {
          entry.feed = yield* Effect.forkIn(
            Stream.runForEach(store.changes, (record) => entry.cell.changed(record)),
            scope
          )
        }
        yield* entry.cell.tick
        return entry
      })

    const entry = (key: string, signingOut = false): Effect.Effect<Entry, SessionStore.StoreError> =>
      Effect.suspend(() => {
        const found = entries.get(key)
        if (found !== undefined) return Effect.succeed(touch(found, clock.currentTimeMillisUnsafe()))
        const waiting = creating.get(key)
        if (waiting !== undefined) {
          return signingOut ? Effect.catch(Deferred.await(waiting), () => entry(key, true)) : Deferred.await(waiting)
        }
        const deferred = Deferred.makeUnsafe<Entry, SessionStore.StoreError>()
        creating.set(key, deferred)
        // Uninterruptible: a caller that gives up must not leave the others waiting on nothing.
        return Effect.uninterruptible(Effect.exit(create(key, signingOut))).pipe(
          Effect.tap((exit) => Effect.andThen(Effect.sync(() => creating.delete(key)), Deferred.done(deferred, exit))),
          Effect.flatten
        )
      })

    yield* sweeping(entries, config, clock)

    const use = <A, E>(key: string, f: (cell: Cell.Cell) => Effect.Effect<A, E>) =>
      Effect.flatMap(entry(key), (found) => pinned(found, f(found.cell)))

    const signOut = (key: string) => Effect.flatMap(entry(key, true), (found) => pinned(found, found.cell.signOut))

    // The hot path: a Map read, a clock read, the session's prebuilt effect.
    const accessToken = (key: string) =>
      Effect.suspend((): Effect.Effect<Redacted.Redacted<string>, Events.SessionError> => {
        const found = entries.get(key)
        if (found === undefined) return use(key, (cell) => Effect.map(readOf(cell), (s) => s.accessToken))
        const now = clock.currentTimeMillisUnsafe()
        if (now < touch(found, now).freshUntil) return found.token
        return pinned(found, Effect.map(found.cell.slowSession, (s) => s.accessToken))
      })

    const session = (key: string) =>
      Effect.suspend((): Effect.Effect<Session.Session, Events.SessionError> => {
        const found = entries.get(key)
        if (found === undefined) return use(key, readOf)
        const now = clock.currentTimeMillisUnsafe()
        if (now < touch(found, now).freshUntil) return found.succeed
        return pinned(found, found.cell.slowSession)
      })

    return {
      use,
      signOut,
      accessToken,
      session,
      events,
      live: () => entries.size,
      armed: wheel.armed,
      inFlight: client.inFlight,
      maxInFlight: client.maxInFlight
    }
  })

// A cell just loaded: read as any live session (usually fresh: no request).
const readOf = (cell: Cell.Cell): Effect.Effect<Session.Session, Events.SessionError> =>
  Effect.suspend(() =>
    cell.shared.clock.currentTimeMillisUnsafe() < cell.hot.freshUntil ? cell.hot.succeed : cell.slowSession
  )

/**
 * Makes room for one more session: past capacity, the least recently used
 * droppable sessions go, in one batch of a hundredth of the capacity more
 * than needed (a burst of new keys sorts the sessions once per batch). When
 * none can go (every session is busy), waits for one to be done, for at most
 * `bound`, then fails with a `StoreError` (`operation: "capacity"`): the
 * pool never spins and never drops a session in use.
 */
const room = (
  entries: Map<string, Entry>,
  config: PoolConfig,
  bound: number
): Effect.Effect<void, SessionStore.StoreError> =>
  Effect.gen(function*() {
    let waited = 0
    for (let pause = 10;; pause = Math.min(pause * 2, 1_000)) {
      if (entries.size < config.capacity) return
      const excess = entries.size - config.capacity + 1 + Math.floor(config.capacity / 100)
      const oldest = [...entries.values()].filter(droppable).sort((a, b) => a.lastUsed - b.lastUsed)
      for (const found of oldest.slice(0, excess)) dropEntry(entries, found)
      if (entries.size < config.capacity) return
      if (waited >= bound) {
        return yield* new SessionStore.StoreError({
          operation: "capacity",
          message: `the pool holds ${entries.size} sessions (its capacity), all busy; none could be dropped within ${
            Duration.format(Duration.millis(bound))
          }`
        })
      }
      yield* Effect.sleep(pause)
      waited += pause
    }
  })

/**
 * The pool's `RefreshClient`: at most `permits` POSTs in flight, and a
 * circuit. After {@link circuitThreshold} transient failures in a row (any
 * keys) the circuit trips: every refresh, queued ones included, is refused
 * without a POST for a pause that doubles with each trip in a row (1 s, 2 s,
 * … up to a minute) and resets on a success. A refused refresh fails with an
 * error of its own (`RateLimitedError`, its `retryAfter` the pause left),
 * never another key's.
 *
 * Its state is read by the pool's gauges (in flight, queued, the circuit);
 * a trip is counted in the metrics of `context`.
 */
const throttled = (
  base: RefreshClient.Service,
  config: Pick<PoolConfig, "maxConcurrentRefreshes" | "name">,
  clock: Clock.Clock,
  context: Context.Context<never>
) => {
  const limit = fifoLimiter(config.maxConcurrentRefreshes)
  let inFlight = 0
  let maxInFlight = 0
  let queued = 0
  let failures = 0
  let trips = 0
  let until = 0
  const open = (now: number): RefreshError.RateLimitedError =>
    new RefreshError.RateLimitedError({
      status: 503,
      retryAfter: Option.some(Duration.millis(until - now)),
      message: `moon-refresh: not sent: the pool paused refreshes for ${
        Duration.format(Duration.millis(until - now))
      } after ${circuitThreshold} failures in a row`
    })
  const record = (exit: Exit.Exit<Session.Session, RefreshError.RefreshError>) => {
    if (Exit.isSuccess(exit)) {
      failures = 0
      trips = 0
      return
    }
    const error = Option.getOrUndefined(Cause.findErrorOption(exit.cause))
    if (error === undefined || !RefreshError.isRetryable(error)) return
    if (++failures < circuitThreshold) return
    failures = 0
    trips++
    until = clock.currentTimeMillisUnsafe() + Math.min(1_000 * 2 ** (trips - 1), maxCircuitPause)
    Metrics.poolTripped(config.name, context)
  }
  const send = (token: Redacted.Redacted<string>) =>
    Effect.suspend(() => {
      // Checked at the send, after the wait for a permit: a refresh queued before the trip is refused too.
      const now = clock.currentTimeMillisUnsafe()
      if (now < until) return Effect.fail(open(now))
      inFlight++
      maxInFlight = Math.max(maxInFlight, inFlight)
      return base.refresh(token).pipe(
        Effect.onExit((exit) =>
          Effect.sync(() => {
            inFlight--
            record(exit)
          })
        )
      )
    })
  // Queued from the call until its permit is granted, or until it gives up waiting.
  const refresh = (token: Redacted.Redacted<string>) =>
    Effect.suspend(() => {
      queued++
      let waiting = true
      const granted = () => {
        if (waiting) {
          waiting = false
          queued--
        }
      }
      return limit(Effect.suspend(() => {
        granted()
        return send(token)
      })).pipe(Effect.ensuring(Effect.sync(granted)))
    })
  return {
    refresh,
    inFlight: () => inFlight,
    maxInFlight: () => maxInFlight,
    queued: () => queued,
    // Half-open: the pause is over, and no refresh has succeeded since the last trip.
    circuit: () => clock.currentTimeMillisUnsafe() < until ? 2 : trips > 0 ? 1 : 0
  }
}

/**
 * At most `permits` effects at once, the others waiting in arrival order.
 * Effect 4's `Semaphore`: a release wakes only the waiters the freed permits
 * fit, first come first served, so with thousands waiting (a pool's restart)
 * it hands each permit to the next waiter alone rather than waking them all
 * to race for it (quadratic; under Effect 3 this was a queue of its own for
 * that reason). A waiter that gives up leaves the queue, and a permit granted
 * to it meanwhile passes on.
 */
export const fifoLimiter = (permits: number) => Semaphore.makeUnsafe(permits).withPermits(1)

export const redact = (token: Redacted.Redacted<string> | string) =>
  Redacted.isRedacted(token) ? token : Redacted.make(token)

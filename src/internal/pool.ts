/**
 * The `SessionPool`: one session per key, each with the rules and single
 * flight of a `SessionManager` (the same `sessionRuntime` code) but none of a
 * manager's fibers. What a pool shares instead:
 *
 * - one timer for every key's proactive refresh (`timerWheel.ts`);
 * - one event feed, each event tagged with its key;
 * - one `RefreshClient`, behind a cap on the POSTs in flight and a circuit
 *   that backs the whole pool off when refreshes keep failing;
 * - one sweep that drops sessions idle for `idleTimeToLive`, and a bound on
 *   how many are live (least recently used dropped first). A dropped session
 *   stays in its store and comes back from it on the next use.
 *
 * Not `RcMap`: `RcMap.get` opens a scope per access, about 26,000 reads a
 * second on this machine, where a pool must serve a million. A `Map` read and
 * the session's prebuilt effect do; reads never reorder the `Map` (the sweep
 * and the eviction find the oldest sessions by their last-use times).
 *
 * Not public API: the package's exports keep `internal/` private.
 */
import type { Clock, Scope } from "effect"
import { Cause, Deferred, Effect, Exit, Fiber, FiberId, MutableRef, Option, PubSub, Random, Redacted } from "effect"
import type * as RefreshClient from "../RefreshClient.js"
import * as RefreshError from "../RefreshError.js"
import type * as Session from "../Session.js"
import type * as SessionManager from "../SessionManager.js"
import type * as SessionStore from "../SessionStore.js"
import * as Runtime from "./sessionRuntime.js"
import * as State from "./sessionState.js"
import * as TimerWheel from "./timerWheel.js"

/** An event of one key's session. */
export interface KeyedEvent {
  readonly key: string
  readonly event: SessionManager.SessionEvent
}

export interface PoolConfig {
  readonly session: { readonly config: State.Config; readonly bounds: Runtime.Bounds }
  readonly idleTimeToLive: number
  readonly capacity: number
  readonly maxConcurrentRefreshes: number
}

interface Entry {
  readonly key: string
  readonly rt: Runtime.Runtime
  /**
   * The session's hot-path cache, copied here (the runtime tells of each new
   * one): a read of a fresh token touches the Map and this entry only, which
   * with 10,000 sessions scattered in memory is what keeps it fast.
   */
  freshUntil: number
  token: Effect.Effect<Redacted.Redacted<string>>
  succeed: Effect.Effect<Session.Session>
  lastUsed: number
  feed: Fiber.RuntimeFiber<void> | undefined
}

/** Consecutive transient failures, across keys, after which the whole pool backs off. */
export const circuitThreshold = 5

const maxCircuitPause = 60_000

export interface Pool {
  readonly entry: (key: string) => Effect.Effect<Entry, SessionStore.StoreError>
  readonly accessToken: (key: string) => Effect.Effect<Redacted.Redacted<string>, SessionManager.SessionError>
  readonly session: (key: string) => Effect.Effect<Session.Session, SessionManager.SessionError>
  readonly events: PubSub.PubSub<KeyedEvent>
  readonly live: () => number
  readonly armed: () => number
  readonly inFlight: () => number
  readonly maxInFlight: () => number
}

/** What the entries of one pool share. */
interface Shared {
  readonly config: PoolConfig
  readonly client: RefreshClient.Service
  readonly clock: Clock.Clock
  readonly scope: Scope.Scope
  readonly wheel: TimerWheel.TimerWheel
  readonly events: PubSub.PubSub<KeyedEvent>
  readonly entries: Map<string, Entry>
}

/**
 * A key's entry: a session runtime (the rules and single flight of a
 * `SessionManager`) on the pool's client, timer and event feed, with its
 * hot-path cache copied beside the key.
 */
const makeEntry = (shared: Shared, key: string, store: SessionStore.Service, initial: State.State): Entry => {
  const timer = shared.wheel.timer(key)
  const holder: { entry?: Entry } = {}
  const hot = Runtime.makeHot(initial)
  const rt: Runtime.Runtime = {
    config: shared.config.session.config,
    bounds: shared.config.session.bounds,
    spread: true,
    client: shared.client,
    store,
    clock: shared.clock,
    scope: shared.scope,
    state: MutableRef.make(initial),
    hot: MutableRef.make(hot),
    onHot: (next) => {
      const entry = holder.entry
      if (entry === undefined) return
      entry.freshUntil = next.freshUntil
      entry.token = next.succeedToken
      entry.succeed = next.succeed
    },
    inflight: MutableRef.make(undefined),
    publish: (event) => PubSub.publish(shared.events, { key, event }),
    mutex: undefined,
    writes: undefined,
    // A dropped session's refresh that completes later must not arm its timer again.
    timer: {
      arm: (at, run) =>
        holder.entry !== undefined && shared.entries.get(key) === holder.entry ? timer.arm(at, run) : Effect.void,
      clear: timer.clear
    },
    saving: MutableRef.make(undefined)
  }
  const entry: Entry = {
    key,
    rt,
    freshUntil: hot.freshUntil,
    token: hot.succeedToken,
    succeed: hot.succeed,
    lastUsed: shared.clock.unsafeCurrentTimeMillis(),
    feed: undefined
  }
  holder.entry = entry
  return entry
}

/** Out of memory (the store keeps it): its timer cleared, its background save and feed stopped. */
const dropEntry = (entries: Map<string, Entry>, entry: Entry) =>
  Effect.suspend(() => {
    entries.delete(entry.key)
    const feed = entry.feed
    entry.feed = undefined
    return Effect.all([
      entry.rt.timer.clear,
      Runtime.stopSaving(entry.rt),
      feed ? Fiber.interruptFork(feed) : Effect.void
    ], {
      discard: true
    })
  })

// A session with a refresh in flight or an unsaved rotation is never
// dropped: memory may hold the only copy of a live refresh token.
const droppable = (entry: Entry) =>
  MutableRef.get(entry.rt.inflight) === undefined && !MutableRef.get(entry.rt.state).unsaved

export const make = (
  config: PoolConfig,
  base: RefreshClient.Service,
  keyed: SessionStore.Keyed
): Effect.Effect<Pool, never, Scope.Scope> =>
  Effect.gen(function*() {
    const scope = yield* Effect.scope
    const clock = yield* Effect.clock
    const wheel = yield* TimerWheel.make
    const events = yield* Effect.acquireRelease(PubSub.unbounded<KeyedEvent>(), PubSub.shutdown)
    const entries = new Map<string, Entry>()
    const creating = new Map<string, Deferred.Deferred<Entry, SessionStore.StoreError>>()
    const client = throttled(base, config.maxConcurrentRefreshes, clock)
    const shared: Shared = { config, client, clock, scope, wheel, events, entries }

    const drop = (entry: Entry) => dropEntry(entries, entry)

    // Past capacity: the least recently used go, in one batch of a hundredth
    // of the capacity more than needed, so a burst of new keys sorts the
    // sessions once per batch rather than once per key.
    const evict = Effect.suspend(() => {
      if (entries.size <= config.capacity) return Effect.void
      const excess = entries.size - config.capacity + Math.floor(config.capacity / 100)
      const oldest = [...entries.values()].filter(droppable).sort((a, b) => a.lastUsed - b.lastUsed)
      return Effect.all(oldest.slice(0, excess).map(drop), { discard: true })
    })

    const create = (key: string): Effect.Effect<Entry, SessionStore.StoreError> =>
      Effect.gen(function*() {
        const store = yield* keyed.forKey(key)
        const stored = yield* Runtime.read({ store, bounds: config.session.bounds })
        const initial = State.initial(Option.getOrUndefined(stored.session), config.session.config, {
          at: undefined,
          jitter: yield* Random.next,
          revision: stored.revision
        })
        const entry = makeEntry(shared, key, store, initial)
        entries.set(key, entry)
        // Only a store other holders share has anything to say through its feed.
        // Interruptible: `create` runs uninterruptibly, and a fiber forked there
        // would inherit that, so a drop could not stop the feed (its watcher or
        // subscription would stay) and closing the pool would wait on it forever.
        if (store.shared) {
          entry.feed = yield* Effect.forkIn(Effect.interruptible(Runtime.followChanges(entry.rt)), scope)
        }
        yield* Runtime.reschedule(entry.rt)
        yield* evict
        return entry
      })
    const entry = (key: string): Effect.Effect<Entry, SessionStore.StoreError> =>
      Effect.suspend(() => {
        const found = entries.get(key)
        if (found !== undefined) return Effect.succeed(touch(found, clock.unsafeCurrentTimeMillis()))
        const waiting = creating.get(key)
        if (waiting !== undefined) return Deferred.await(waiting)
        const deferred = Deferred.unsafeMake<Entry, SessionStore.StoreError>(FiberId.none)
        creating.set(key, deferred)
        // Uninterruptible: a caller that gives up must not leave the others waiting on nothing.
        return Effect.uninterruptible(Effect.exit(create(key))).pipe(
          Effect.tap((exit) => Effect.zipRight(Effect.sync(() => creating.delete(key)), Deferred.done(deferred, exit))),
          Effect.flatten
        )
      })

    // A read notes its time at most once a second per key, and never reorders
    // the Map: the sweep and the eviction find the oldest by their times.
    const touch = (found: Entry, now: number): Entry => {
      if (now - found.lastUsed >= 1_000) found.lastUsed = now
      return found
    }

    // A pass over every session, a few times per idleTimeToLive: about 20 ns a session.
    const sweep = Effect.suspend(() => {
      const now = clock.unsafeCurrentTimeMillis()
      const drops: Array<Effect.Effect<void>> = []
      for (const found of entries.values()) {
        if (now - found.lastUsed >= config.idleTimeToLive && droppable(found)) drops.push(drop(found))
      }
      return Effect.all(drops, { discard: true })
    })
    yield* Effect.forkScoped(
      Effect.forever(Effect.zipRight(Effect.sleep(Math.max(1_000, config.idleTimeToLive / 4)), sweep))
    )

    // The hot path: a Map read, a clock read, the session's prebuilt effect.
    const accessToken = (key: string) =>
      Effect.suspend((): Effect.Effect<Redacted.Redacted<string>, SessionManager.SessionError> => {
        const found = entries.get(key)
        if (found !== undefined) {
          const now = clock.unsafeCurrentTimeMillis()
          if (now < touch(found, now).freshUntil) return found.token
          return Effect.map(Runtime.slowSession(found.rt), (s) => s.accessToken)
        }
        // Loaded now: read as any live session (usually fresh: no request).
        return Effect.flatMap(entry(key), () => accessToken(key))
      })

    const sessionOf = (key: string) =>
      Effect.suspend((): Effect.Effect<Session.Session, SessionManager.SessionError> => {
        const found = entries.get(key)
        if (found !== undefined) {
          const now = clock.unsafeCurrentTimeMillis()
          if (now < touch(found, now).freshUntil) return found.succeed
          return Runtime.slowSession(found.rt)
        }
        return Effect.flatMap(entry(key), () => sessionOf(key))
      })

    return {
      entry,
      accessToken,
      session: sessionOf,
      events,
      live: () => entries.size,
      armed: wheel.armed,
      inFlight: client.inFlight,
      maxInFlight: client.maxInFlight
    }
  })

/**
 * The pool's `RefreshClient`: at most `permits` POSTs in flight, and a
 * circuit: after {@link circuitThreshold} transient failures in a row (any
 * keys), refreshes fail at once with the last error for a pause that doubles
 * up to a minute, so an outage does not get a POST from every key.
 */
const throttled = (base: RefreshClient.Service, permits: number, clock: Clock.Clock) => {
  const limit = fifoLimiter(permits)
  let inFlight = 0
  let maxInFlight = 0
  let failures = 0
  let until = 0
  let lastError: RefreshError.RefreshError | undefined
  const counted = (token: Redacted.Redacted<string>) =>
    Effect.acquireUseRelease(
      Effect.sync(() => {
        inFlight++
        maxInFlight = Math.max(maxInFlight, inFlight)
      }),
      () => base.refresh(token),
      () =>
        Effect.sync(() => {
          inFlight--
        })
    )
  const refresh = (token: Redacted.Redacted<string>) =>
    Effect.suspend(() => {
      if (lastError !== undefined && clock.unsafeCurrentTimeMillis() < until) return Effect.fail(lastError)
      return limit(counted(token)).pipe(
        Effect.onExit((exit) =>
          Effect.sync(() => {
            if (Exit.isSuccess(exit)) {
              failures = 0
              lastError = undefined
              return
            }
            const error = Option.getOrUndefined(Option.flatMap(Exit.causeOption(exit), Cause.failureOption))
            if (error === undefined || !RefreshError.isRetryable(error)) return
            failures++
            lastError = error
            if (failures >= circuitThreshold) {
              until = clock.unsafeCurrentTimeMillis() +
                Math.min(1_000 * 2 ** (failures - circuitThreshold), maxCircuitPause)
            }
          })
        )
      )
    })
  return { refresh, inFlight: () => inFlight, maxInFlight: () => maxInFlight }
}

/**
 * At most `permits` effects at once, the others waiting in arrival order.
 * Not `Effect.makeSemaphore`: a release there wakes every waiter to race for
 * the freed permit, which with thousands waiting (a pool's restart) costs
 * quadratic time; here a release hands its permit to the next waiter alone.
 */
export const fifoLimiter = (permits: number) => {
  interface Ticket {
    granted: boolean
    cancelled: boolean
    wake: (() => void) | undefined
  }
  let free = permits
  let queue: Array<Ticket> = []
  let head = 0
  const release = (): void => {
    while (head < queue.length) {
      const next = queue[head++]!
      if (head > 1024 && head * 2 > queue.length) {
        queue = queue.slice(head)
        head = 0
      }
      if (next.cancelled) continue
      next.granted = true
      next.wake?.()
      return
    }
    free++
  }
  const wait = Effect.suspend(() => {
    if (free > 0) {
      free--
      return Effect.void
    }
    const ticket: Ticket = { granted: false, cancelled: false, wake: undefined }
    queue.push(ticket)
    return Effect.async<void>((resume) => {
      ticket.wake = () => resume(Effect.void)
      // Given up while waiting: out of the queue, or, if the permit came meanwhile, passed on.
      return Effect.sync(() => {
        ticket.cancelled = true
        if (ticket.granted) release()
      })
    })
  })
  return <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.uninterruptibleMask((restore) =>
      Effect.zipRight(restore(wait), Effect.ensuring(restore(effect), Effect.sync(release)))
    )
}

/** The sign-in, sign-out and refresh of one key, through its session's runtime. */
export const withEntry = <A, E>(
  pool: Pool,
  key: string,
  f: (rt: Runtime.Runtime) => Effect.Effect<A, E>
): Effect.Effect<A, E | SessionStore.StoreError> => Effect.flatMap(pool.entry(key), (found) => f(found.rt))

export const redact = (token: Redacted.Redacted<string> | string) =>
  Redacted.isRedacted(token) ? token : Redacted.make(token)

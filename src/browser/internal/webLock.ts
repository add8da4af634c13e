/**
 * A lock shared by the tabs of one origin, on the Web Locks API, whose hold
 * is bounded and which a waiter takes over (`steal`) from a holder that kept
 * it past the bound.
 *
 * - A holder runs its critical section for at most `maxHold`: past it the
 *   section is interrupted (a refresh in flight is aborted) and the lock
 *   released. A live holder therefore never keeps the lock longer.
 * - A waiter that sees no progress for `maxHold + grace` (the same tab
 *   holding it, no request ahead of it granted) concludes that the holder
 *   cannot release it: a frozen or hung tab, a lock orphaned by a torn-down
 *   page. It steals the lock. Waiters take over one at a time, each under a
 *   second lock, and each checks again there, so two waiters never steal
 *   from each other.
 * - A holder whose lock was stolen learns it (the browser rejects its
 *   request), its critical section is interrupted, and its hold is marked
 *   `lost`: the store refuses its writes.
 *
 * Progress is read from `navigator.locks.query()`, which the browser answers
 * from the same place that grants locks, so it never lags behind a grant
 * (unlike anything a tab could keep in storage).
 *
 * Not public API: the package's exports keep `internal/` private.
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { type Lease, StoreError } from "../../SessionStore.js"

/** The part of `navigator.locks` this module uses. */
export type Locks = Pick<LockManager, "request" | "query">

export interface Settings {
  /** The lock's name, shared by every tab that coordinates through it. */
  readonly name: string
  readonly maxHold: Duration.Duration
  /** How long past `maxHold` a waiter gives a holder to release before it takes over. */
  readonly grace: Duration.Duration
}

/**
 * A hold of the lock, as the fibers running under it see it. `lost` once
 * another tab stole the lock: nothing done under this hold may be written.
 */
export interface Hold {
  readonly name: string
  state: "held" | "lost" | "released"
}

/** The hold the current fiber runs under, if any (children inherit it). */
export const currentHold: Context.Reference<Hold | undefined> = Context.Reference<Hold | undefined>(
  "moon-refresh/BrowserSessionStore/currentHold",
  { defaultValue: () => undefined }
)

/** Whether the current fiber runs under a hold of `name` that another tab stole. */
export const isLost = (name: string): Effect.Effect<boolean> =>
  Effect.map(currentHold, (hold) => hold !== undefined && hold.name === name && hold.state === "lost")

// ---------------------------------------------------------------------------
// One request, as plain callbacks: the browser calls back on its own schedule,
// including after the fiber that asked has gone.
// ---------------------------------------------------------------------------

interface Ticket {
  state: "waiting" | "held" | "lost" | "done"
  /** Settles when granted; rejects only when the browser refused the request. */
  readonly granted: Promise<void>
  /** Stops waiting, or releases the lock. Idempotent. */
  readonly cancel: () => void
  onLost: () => void
}

// Grants of each lock to this page, so a waiter can tell that the lock moved
// on even when it moved between two requests of this same tab.
const grants = new Map<string, number>()

const request = (locks: Locks, name: string, steal: boolean): Ticket => {
  const controller = new AbortController()
  let release = () => {}
  let grant = () => {}
  let refuse = (_: unknown) => {}
  const ticket: Ticket = {
    state: "waiting",
    granted: new Promise<void>((resolve, reject) => {
      grant = resolve
      refuse = reject
    }),
    cancel: () => {
      const was = ticket.state
      ticket.state = "done"
      if (was === "waiting") controller.abort()
      release()
    },
    onLost: () => {}
  }
  // `signal` and `steal` cannot be combined; a steal is granted at once anyway.
  locks.request(name, steal ? { steal: true } : { signal: controller.signal }, () => {
    // Granted after we gave up waiting (an abort racing the grant): release at once.
    if (ticket.state !== "waiting") return undefined
    ticket.state = "held"
    grants.set(name, (grants.get(name) ?? 0) + 1)
    grant()
    return new Promise<void>((released) => {
      release = released
    })
  }).then(
    () => {},
    (error: unknown) => {
      if (ticket.state === "held") {
        // The lock was stolen from us: the browser rejects the holder's request.
        ticket.state = "lost"
        ticket.onLost()
      } else if (ticket.state === "waiting") {
        ticket.state = "done"
        refuse(error)
      }
    }
  )
  return ticket
}

const lockError = (message: string) => new StoreError({ operation: "lock", message })

const awaitGrant = (ticket: Ticket): Effect.Effect<void, StoreError> =>
  Effect.callback<void, StoreError>((resume) => {
    ticket.granted.then(
      () => resume(Effect.void),
      (error: unknown) => resume(Effect.fail(lockError(`the browser refused the lock: ${describe(error)}`)))
    )
  })

// Marks the hold lost at the moment the browser says so, before any fiber
// runs again: a write already under way checks the mark.
const awaitLost = (ticket: Ticket, hold: Hold): Effect.Effect<never, StoreError> =>
  Effect.callback<never, StoreError>((resume) => {
    const lost = () => {
      hold.state = "lost"
      resume(Effect.fail(lockError(`another tab took over the lock "${hold.name}"; nothing more is written`)))
    }
    if (ticket.state === "lost") return lost()
    ticket.onLost = lost
  })

const describe = (error: unknown): string => error instanceof Error ? `${error.name}: ${error.message}` : String(error)

// ---------------------------------------------------------------------------
// Progress, as the browser's lock manager reports it
// ---------------------------------------------------------------------------

/** Who holds `name`, who waits for it (in order), and how often this page got it. */
export interface Snapshot {
  readonly holders: ReadonlyArray<string>
  readonly pending: ReadonlyArray<string>
  readonly grants: number
}

const observe = (locks: Locks, name: string): Effect.Effect<Snapshot | undefined> =>
  Effect.promise(() => locks.query().then((state) => state, () => undefined)).pipe(
    Effect.map((state) =>
      state === undefined ? undefined : {
        holders: clientIds(state.held, name),
        pending: clientIds(state.pending, name),
        grants: grants.get(name) ?? 0
      }
    )
  )

const clientIds = (infos: ReadonlyArray<LockInfo> | undefined, name: string): ReadonlyArray<string> =>
  (infos ?? []).filter((info) => info.name === name).map((info) => info.clientId ?? "")

/**
 * Whether nothing moved between two snapshots: the same tab holds the lock,
 * no request that was waiting before has left the queue (granted or given
 * up; new ones may have joined behind), and this page got no grant.
 */
export const isStuck = (before: Snapshot, now: Snapshot): boolean =>
  before.holders.length > 0 &&
  sameList(before.holders, now.holders) &&
  before.pending.length <= now.pending.length &&
  sameList(before.pending, now.pending.slice(0, before.pending.length)) &&
  before.grants === now.grants

const sameList = (a: ReadonlyArray<string>, b: ReadonlyArray<string>): boolean =>
  a.length === b.length && a.every((item, i) => item === b[i])

// ---------------------------------------------------------------------------
// Waiting, taking over, holding
// ---------------------------------------------------------------------------

/** The request a `withLock` currently owns: replaced by the steal when it takes over. */
interface Cell {
  ticket: Ticket
  /** Set when `withLock` ended: a takeover still in progress must let go. */
  closed: boolean
}

/**
 * Under a second lock, so that only one waiter at a time takes over, and
 * only if the lock still has not moved since `before`: steals it. `false`
 * when it moved (or another waiter is taking over): wait again.
 */
const takeOver = (locks: Locks, name: string, before: Snapshot, cell: Cell): Effect.Effect<boolean> =>
  Effect.callback<boolean>((resume) => {
    locks.request(`${name}:takeover`, { ifAvailable: true }, async (lock) => {
      if (lock === null) return resume(Effect.succeed(false))
      const now = await Effect.runPromise(observe(locks, name))
      if (cell.closed || cell.ticket.state !== "waiting") return resume(Effect.succeed(cell.ticket.state === "held"))
      if (now === undefined || !isStuck(before, now)) return resume(Effect.succeed(false))
      cell.ticket.cancel()
      cell.ticket = request(locks, name, true)
      // Held until the steal is granted, so the next waiter to check sees the new holder.
      await cell.ticket.granted.catch(() => undefined)
      if (cell.closed) cell.ticket.cancel()
      resume(Effect.succeed(cell.ticket.state === "held"))
    }).catch(() => resume(Effect.succeed(false)))
  })

const acquire = (locks: Locks, settings: Settings, cell: Cell): Effect.Effect<void, StoreError> =>
  Effect.gen(function*() {
    const patience = Effect.sleep(Duration.sum(settings.maxHold, settings.grace))
    let before = yield* observe(locks, settings.name)
    while (true) {
      const granted = yield* Effect.raceFirst(Effect.as(awaitGrant(cell.ticket), true), Effect.as(patience, false))
      if (granted) return
      if (before !== undefined && (yield* takeOver(locks, settings.name, before, cell))) return
      before = yield* observe(locks, settings.name)
    }
  })

/**
 * Runs `use` holding the lock: waits for it (interruptibly: an interrupted
 * wait withdraws the request, and a grant that arrives after is released at
 * once), takes it over from a holder stuck past `maxHold`, runs `use` for at
 * most `maxHold` (then interrupts it and fails with a `StoreError`), and
 * releases the lock whatever the outcome. If another tab steals the lock
 * meanwhile, `use` is interrupted and its writes are refused (see
 * {@link isLost}).
 *
 * The lease given to `use`: the browser grants and steals the lock itself,
 * so there is nothing to renew. `ensure(atLeast)` succeeds while the hold is
 * still this tab's (not stolen) and at least `atLeast` of `maxHold` is left,
 * measured from the grant on the Clock (a frozen tab that resumes past it
 * fails it, whether or not the steal has reached it yet).
 */
export const withLease =
  (locks: Locks, settings: Settings) =>
  <A, E, R>(use: (lease: Lease) => Effect.Effect<A, E, R>): Effect.Effect<A, E | StoreError, R> =>
    Effect.uninterruptibleMask((restore) =>
      Effect.suspend(() => {
        const cell: Cell = { ticket: request(locks, settings.name, false), closed: false }
        const hold: Hold = { name: settings.name, state: "held" }
        const maxHold = Duration.toMillis(settings.maxHold)
        const held = Effect.flatMap(Clock.currentTimeMillis, (grantedAt) =>
          Effect.raceFirst(
            Effect.provideService(use(leaseOf(hold, grantedAt + maxHold, maxHold)), currentHold, hold),
            awaitLost(cell.ticket, hold)
          ).pipe(
            Effect.timeoutOrElse({
              duration: settings.maxHold,
              orElse: () => Effect.fail(lockError(`held the lock "${settings.name}" longer than its bound; gave it up`))
            })
          ))
        return restore(Effect.andThen(acquire(locks, settings, cell), held)).pipe(
          Effect.ensuring(Effect.sync(() => {
            cell.closed = true
            if (hold.state === "held") hold.state = "released"
            cell.ticket.cancel()
          }))
        )
      })
    )

// `ensure` of a hold that ends (interrupted, or stolen after a waiter's patience) at `until`.
const leaseOf = (hold: Hold, until: number, maxHold: number): Lease => ({
  ensure: (atLeast) =>
    Effect.flatMap(Clock.currentTimeMillis, (now) => {
      // A bound shorter than what is asked for was chosen so: half of it is asked for.
      const wanted = Math.min(Duration.toMillis(atLeast), maxHold / 2)
      if (hold.state !== "held") return Effect.fail(lockError(`the lock "${hold.name}" is no longer this tab's`))
      return until - now >= wanted
        ? Effect.void
        : Effect.fail(
          lockError(`the lock "${hold.name}" has ${Math.max(0, until - now)} ms of its bound left, not ${wanted} ms`)
        )
    })
})

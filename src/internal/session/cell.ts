/**
 * The interpreter of the engine: one cell holds one session. It feeds every
 * input to `core.decide`, keeps the state it returns, and runs its commands:
 * the lock, the POST and the writes in fibers of their own, whose outcomes
 * come back as inputs; events, callers' answers and the timer at once.
 *
 * Lock order. A cell holds no lock of its own: a decision is one synchronous
 * step on JavaScript's one thread, so two never interleave. The only lock is
 * the store's, taken by the flight (a refresh, or a sign-in from a refresh
 * token) and released when `decide` says so; writes made while it is held
 * go through the store, which lets a write of the lock's holder through.
 *
 * Commands run after their decision. Effect 4 runs a fiber at once on the
 * caller's stack: one it starts, and one it wakes (completing a `Deferred`,
 * publishing to a `PubSub`). Such a fiber may feed an input back (a write
 * that lands at once, a caller asking again) before the decision that started
 * or woke it has run its other commands. So a decision's state is set first,
 * and its commands are queued and run after it, in order; a decision taken
 * while they run (by a fiber one of them started or woke) queues its commands
 * behind them.
 *
 * Only a flight's start (`Lock`) waits for the scheduler, so that the callers
 * of one turn are all decided before it (they join it). The rest do not:
 * Effect 4's scheduler turns are macrotasks (Effect 3's were microtasks), and
 * a turn between a refresh's answer and its save would let other work (the
 * 401s of a burst of requests, say) see the old token and ask for another
 * refresh. On a store in memory the answer is now saved within its own turn.
 *
 * A `SessionManager` is one cell with a timer of its own and a PubSub; a
 * `SessionPool` is many cells sharing one `Shared`, a timer wheel and a feed.
 *
 * Not public API: the package's exports keep `internal/` private.
 */
import * as Cause from "effect/Cause"
import type * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import type * as Redacted from "effect/Redacted"
import * as Result from "effect/Result"
import type * as Scope from "effect/Scope"
import * as Tracer from "effect/Tracer"
import type * as RefreshClient from "../../RefreshClient.js"
import type * as RefreshError from "../../RefreshError.js"
import type * as Session from "../../Session.js"
import type * as SessionStore from "../../SessionStore.js"
import * as Metrics from "../metrics.js"
import * as Core from "./core.js"
import type * as Events from "./events.js"
import type * as Rules from "./rules.js"
import * as Store from "./store.js"

/** Effects built once per session, so a read of a fresh token allocates nothing. */
export interface Hot {
  /** The token is fresh while the clock is below this. */
  readonly freshUntil: number
  readonly succeed: Effect.Effect<Session.Session>
  readonly succeedToken: Effect.Effect<Redacted.Redacted<string>>
}

const hotOf = (state: Core.State): Hot => {
  const session = Core.sessionOf(state)
  return {
    freshUntil: Core.freshUntil(state),
    succeed: session ? Effect.succeed(session) : Effect.never,
    succeedToken: session ? Effect.succeed(session.accessToken) : Effect.never
  }
}

/** Fires the cell's `Tick` at a time, replacing the time armed before; `undefined` clears it. */
export interface Timer {
  readonly arm: (at: number | undefined) => void
}

/** What the cells of a manager (one) or a pool (all) share. */
export interface Shared {
  readonly config: Rules.Config
  readonly bounds: Store.Bounds
  readonly client: RefreshClient.Service
  /** The one clock, so the hot and slow paths never disagree. */
  readonly clock: Clock.Clock
  /**
   * Runs a command's fiber for the life of the manager or pool (interrupted
   * when it closes). It may start at once: the cell runs commands after their
   * decision (see "Commands run after their decision").
   */
  readonly fork: <A, E>(effect: Effect.Effect<A, E>) => Fiber.Fiber<A, E>
  /** Runs a fiber that outlives the owner (a write), bounded by its own timeout. */
  readonly daemon: <A, E>(effect: Effect.Effect<A, E>) => Fiber.Fiber<A, E>
  /** The lease a flight must still have right before it sends: the request's timeout and a margin. */
  readonly sendLease: number
  /**
   * The context the owner was built in: its metric registry is where the
   * cells' metrics go, whichever fiber records them.
   */
  readonly context: Context.Context<never>
  /** Names a flight's span (`moon-refresh/<module>.refresh`) and gives it these attributes. */
  readonly owner: Owner
}

/** Who runs the cells, as their spans say. */
export interface Owner {
  readonly module: "SessionManager" | "SessionPool"
  readonly attributes: Readonly<Record<string, string>>
}

/**
 * The lease a flight must still hold right before it sends: the refresh
 * client's default per-attempt timeout (10 s) and a margin of 2 s.
 */
export const defaultSendLease = 12_000

/** A decision, applied: its logs to write, and what its caller waits for. */
interface Dispatched {
  readonly decision: Core.Decision
  readonly logs: Effect.Effect<void>
  readonly waiter: Waiter | undefined
}

type Waiter = Deferred.Deferred<Session.Session | undefined, Events.SessionError>

/**
 * While a caller's input is decided: its cell, its operation and its span (a
 * flight it starts is a child of it). Not a field of each cell: a pool keeps
 * one cell per user, and a decision is one synchronous step on JavaScript's
 * one thread (a nested one, by a fiber a command woke, restores it).
 */
let asking: { readonly cell: Cell; readonly op: number; readonly span: Tracer.AnySpan | undefined } | undefined

/**
 * One session's cell. A class, not closures: a pool keeps one per user, and
 * methods on a prototype cost nothing per cell.
 */
export class Cell {
  state: Core.State
  hot: Hot
  private waiters: Map<number, Waiter> | undefined
  private holding:
    | Map<number, { readonly release: Deferred.Deferred<void>; lease?: Store.Lease; span?: Tracer.AnySpan | undefined }>
    | undefined
  private closed = false
  /** Counted among its store's holders (see `Store.hold`) until it is closed and done writing. */
  private holdsStore = true
  /** Closing, while the store is still owed a write: done once it is not (see {@link closing}). */
  private draining: Deferred.Deferred<void> | undefined = undefined
  private armedAt: number | undefined = undefined
  /**
   * The commands of the decisions being applied, in order (see "Commands run
   * after their decision"); `undefined` when none is.
   */
  private pending: Array<() => void> | undefined = undefined
  /** Events published so far, counting those still queued to be delivered. */
  published = 0

  constructor(
    readonly shared: Shared,
    readonly store: SessionStore.Service,
    initial: Core.State,
    private readonly timer: (cell: Cell) => Timer,
    /** Delivers an event; `n` numbers it (1, 2, …) in the order the decisions published them. */
    private readonly publish: (event: Events.SessionEvent, n: number) => void,
    private readonly onHot?: (hot: Hot) => void
  ) {
    this.state = initial
    this.hot = hotOf(initial)
    // Counted until `close`: whether the store has other holders in this process (see `Store.hasOtherHolders`).
    Store.hold(store)
  }

  private timerOf: Timer | undefined
  private get armer(): Timer {
    return this.timerOf ??= this.timer(this)
  }

  /**
   * Applies one input: the state moves, then its commands run (those that
   * wait, in fibers), after those of the decisions before it.
   */
  dispatch(input: Core.Input): Dispatched {
    const decision = Core.decide(this.state, input, this.shared.config)
    const before = this.state
    this.state = decision.state
    if (
      Core.freshUntil(before) !== Core.freshUntil(decision.state) ||
      Core.sessionOf(before) !== Core.sessionOf(decision.state)
    ) {
      this.hot = hotOf(decision.state)
      this.onHot?.(this.hot)
    }
    // Made before the commands run: one of them may end it at once.
    const waiter = decision.awaits === undefined ? undefined : this.waiterOf(decision.awaits)
    let logs: Array<Effect.Effect<void>> | undefined
    const outermost = this.pending === undefined
    const pending = this.pending ??= []
    for (const command of decision.commands) {
      if (command._tag === "Log") (logs ??= []).push(logOf(command))
      else this.queue(command, pending)
    }
    // A decision taken while these run (by a fiber one of them started or woke) queues its own behind them.
    if (outermost) {
      try {
        for (let i = 0; i < pending.length; i++) pending[i]!()
      } finally {
        this.pending = undefined
      }
      if (this.draining !== undefined && !Core.owesStore(this.state)) Deferred.doneUnsafe(this.draining, Exit.void)
    }
    return { decision, logs: logs === undefined ? Effect.void : Effect.all(logs, { discard: true }), waiter }
  }

  /** {@link dispatch} as an effect that also writes its logs. */
  step(input: (now: number) => Core.Input): Effect.Effect<Dispatched> {
    return Effect.suspend(() => {
      const dispatched = this.dispatch(input(this.shared.clock.currentTimeMillisUnsafe()))
      return Effect.as(dispatched.logs, dispatched)
    })
  }

  private waiterOf(op: number): Waiter {
    const waiters = this.waiters ??= new Map()
    let waiter = waiters.get(op)
    if (waiter === undefined) {
      waiter = Deferred.makeUnsafe()
      waiters.set(op, waiter)
    }
    return waiter
  }

  /**
   * Starts an operation and waits for its end (interruptibly: the operation
   * goes on without this caller). A flight it starts has the caller's span as
   * parent.
   */
  ask(input: (op: number, now: number) => Core.Input): Effect.Effect<Session.Session | undefined, Events.SessionError> {
    return Effect.flatMap(
      Effect.suspend(() => {
        const op = this.state.nextId
        this.state = { ...this.state, nextId: op + 1 }
        const fiber = Fiber.getCurrent()
        const outer = asking
        asking = { cell: this, op, span: fiber && Context.getOrUndefined(fiber.context, Tracer.ParentSpan) }
        let dispatched: Dispatched
        try {
          dispatched = this.dispatch(input(op, this.shared.clock.currentTimeMillisUnsafe()))
        } finally {
          asking = outer
        }
        return Effect.as(dispatched.logs, dispatched)
      }),
      ({ waiter }) =>
        waiter === undefined
          ? Effect.interrupt
          : Deferred.await(waiter)
    )
  }

  /** A read of a token that is not fresh: due for a refresh, expired, absent, or cooling down. */
  readonly slowSession: Effect.Effect<Session.Session, Events.SessionError> = Effect.suspend(() => {
    const before = Core.sessionOf(this.state)?.accessToken
    // A stampede: the callers after the first join its refresh without a decision each,
    // and share one wait (an effect is a description: one value serves every fiber).
    const joined = Core.joinedRead(this.state, this.shared.clock.currentTimeMillisUnsafe())
    const waiter = joined === undefined ? undefined : this.waiters?.get(joined)
    if (waiter === undefined) {
      return this.keepValid(this.ask((op, now) => ({ _tag: "Demand", op, now, kind: "read" })), before)
    }
    const joining = this.joining
    if (joining !== undefined && joining.waiter === waiter && joining.before === before) return joining.wait
    const wait = this.keepValid(Deferred.await(waiter), before)
    this.joining = { waiter, before, wait }
    return wait
  })

  /** The wait the callers joining one refresh share (see {@link slowSession}). */
  private joining:
    | {
      readonly waiter: Waiter
      readonly before: Redacted.Redacted<string> | undefined
      readonly wait: Effect.Effect<Session.Session, Events.SessionError>
    }
    | undefined = undefined

  /** A transient failure keeps the session: it is handed out while it is valid. */
  private keepValid(
    wait: Effect.Effect<Session.Session | undefined, Events.SessionError>,
    before: Redacted.Redacted<string> | undefined
  ): Effect.Effect<Session.Session, Events.SessionError> {
    return Effect.catch(wait, (error) => {
      const kept = Core.afterFailedWait(this.state, before, this.shared.clock.currentTimeMillisUnsafe())
      return kept !== undefined ? Effect.succeed(kept) : Effect.fail(error)
    }) as Effect.Effect<Session.Session, Events.SessionError>
  }

  readonly refresh: Effect.Effect<Session.Session, Events.SessionError> = Effect.suspend(() =>
    this.ask((op, now) => ({ _tag: "Demand", op, now, kind: "refresh" })) as Effect.Effect<
      Session.Session,
      Events.SessionError
    >
  )

  signIn(session: Session.Session): Effect.Effect<void, SessionStore.StoreError> {
    return Effect.asVoid(this.ask((op, now) => ({ _tag: "SignIn", op, now, session }))) as Effect.Effect<
      void,
      SessionStore.StoreError
    >
  }

  signInWithRefreshToken(
    token: Redacted.Redacted<string>
  ): Effect.Effect<Session.Session, RefreshError.RefreshError | SessionStore.StoreError> {
    return this.ask((op, now) => ({ _tag: "SignInWithToken", op, now, token })) as Effect.Effect<
      Session.Session,
      RefreshError.RefreshError | SessionStore.StoreError
    >
  }

  readonly signOut: Effect.Effect<void, SessionStore.StoreError> = Effect.suspend(() =>
    Effect.asVoid(this.ask((op, now) => ({ _tag: "SignOut", op, now }))) as Effect.Effect<void, SessionStore.StoreError>
  )

  /** A record from the store's change feed. */
  changed(stored: SessionStore.Stored): Effect.Effect<void> {
    return Effect.asVoid(this.step((now) => ({ _tag: "Changed", now, stored })))
  }

  /** The timer fired. */
  readonly tick: Effect.Effect<void> = Effect.suspend(() => {
    this.armedAt = undefined
    return Effect.asVoid(this.step((now) => ({ _tag: "Tick", now })))
  })

  /**
   * Stops the cell: its callers still waiting end interrupted, and it starts
   * nothing more (no lock, no request, no timer). Its fibers are the owner's
   * to stop; an answer that already came back is still saved (its token is
   * spent), since inputs are still taken and writes run as daemons.
   */
  close(): void {
    if (this.holdsStore) Store.letGo(this.store)
    this.holdsStore = false
    this.stop()
    this.armer.arm(undefined)
  }

  /**
   * Closes the cell as its owner's scope closes: its callers end interrupted
   * and it starts nothing more, but what the store is owed (a rotation whose
   * token is spent, a sign-out, a sign-in) is still written, retried as
   * usual, for at most `bound` ms: the timer stays armed for the retries,
   * and the store's lock is kept until the write has landed (its holder's
   * fiber is the owner's; letting it go before would let another holder read
   * the spent token and send it again). Past the bound, the owner's fibers
   * stop and the lock goes, as the engine's own `saveBound` lets it go.
   */
  closing(bound: number): Effect.Effect<void> {
    return Effect.suspend(() => {
      if (this.closed) return Effect.void
      this.stop()
      if (!Core.owesStore(this.state)) return Effect.sync(() => this.close())
      const drained = this.draining = Deferred.makeUnsafe<void>()
      return Deferred.await(drained).pipe(
        Effect.timeoutOption(bound),
        Effect.flatMap((done) =>
          Option.isSome(done) ? Effect.void : Effect.logError(
            "moon-refresh: closing with a save still failing; the store may keep a spent refresh token",
            { boundMillis: bound }
          )
        ),
        Effect.ensuring(Effect.sync(() => {
          this.draining = undefined
          this.close()
        }))
      )
    })
  }

  /** Ends the callers still waiting (interrupted) and starts nothing more. */
  private stop(): void {
    this.closed = true
    const waiters = this.waiters
    this.waiters = undefined
    if (waiters !== undefined) {
      for (const waiter of waiters.values()) Deferred.doneUnsafe(waiter, Exit.interrupt())
    }
  }

  // ---- commands ----

  /** Queues a command; what it needs of the decision's moment (an event's number, the flight's kind) is taken now. */
  private queue(command: Exclude<Core.Command, { readonly _tag: "Log" }>, pending: Array<() => void>): void {
    switch (command._tag) {
      case "Publish": {
        // Numbered now, in decision order: a subscriber's `Initial` (the state now) and the events after it never overlap.
        const n = ++this.published
        if (command.event._tag === "SignedOut") Metrics.signedOut(reasonOf(command.event.reason), this.shared.context)
        pending.push(() => this.publish(command.event, n))
        return
      }
      case "Lock": {
        const kind = this.state.flight?.kind === "signIn" ? "signInWithRefreshToken" : "refresh"
        // A flight a caller started is a child of its span; one the timer started has none of its own.
        const parent = asking?.cell === this && asking.op === command.op ? asking.span : undefined
        pending.push(() => {
          if (!this.closed) this.lock(command.op, kind, parent)
        })
        return
      }
      default:
        pending.push(() => this.run(command))
    }
  }

  private run(command: Exclude<Core.Command, { readonly _tag: "Log" | "Publish" | "Lock" }>): void {
    // Closing, the timer still fires while the store is owed a write (see `closing`).
    if (this.closed && (command._tag === "Post" || (command._tag === "Arm" && this.draining === undefined))) return
    switch (command._tag) {
      case "Resolve": {
        const waiter = this.waiters?.get(command.op)
        if (waiter === undefined) return
        this.waiters!.delete(command.op)
        // The shared wait of its joiners goes with it (a pool keeps many cells).
        if (this.joining?.waiter === waiter) this.joining = undefined
        Deferred.doneUnsafe(waiter, command.exit)
        return
      }
      case "Arm":
        if (command.at === this.armedAt) return
        this.armedAt = command.at
        return this.armer.arm(command.at)
      case "Release": {
        const held = this.holding?.get(command.op)
        this.holding?.delete(command.op)
        if (held !== undefined) Deferred.doneUnsafe(held.release, Exit.void)
        return
      }
      case "Post":
        return this.post(command.op, command.token)
      case "Write":
        // A daemon, bounded by the store's timeout: closing the owner does not
        // cut short the save of a token already spent.
        this.shared.daemon(
          Effect.flatMap(
            this.traced(Store.write(
              this.store,
              this.shared.bounds,
              command.record,
              command.expected,
              command.overwrite,
              this.shared.context
            )),
            (result) => this.step((now) => ({ _tag: "Wrote", id: command.id, now, result }))
          )
        )
        return
    }
  }

  /** A write made while a flight holds the lock (saving its answer, say) is a child of the flight's span. */
  private traced<A, E>(effect: Effect.Effect<A, E>): Effect.Effect<A, E> {
    const flight = this.state.flight
    const span = flight === undefined ? undefined : this.holding?.get(flight.op)?.span
    return span === undefined ? effect : Effect.withParentSpan(effect, span, { captureStackTrace: false })
  }

  /**
   * Takes the store's lock for `op` and reads the record under it; keeps the
   * lock until `Release`. The flight's span lives as long as the lock; its
   * parent is the span of the caller who started it, if one did.
   */
  private lock(op: number, kind: "refresh" | "signInWithRefreshToken", parent: Tracer.AnySpan | undefined): void {
    const release = Deferred.makeUnsafe<void>()
    const held: { readonly release: Deferred.Deferred<void>; lease?: Store.Lease; span?: Tracer.AnySpan | undefined } =
      { release }
    ;(this.holding ??= new Map()).set(op, held)
    let granted = false
    const critical = (lease: Store.Lease) =>
      Effect.gen({ self: this }, function*() {
        granted = true
        held.lease = lease
        held.span = Option.getOrUndefined(yield* Effect.option(Effect.currentSpan))
        const stored = yield* Effect.result(Store.read(this.store, this.shared.bounds, this.shared.context))
        yield* this.step((now) =>
          Result.isSuccess(stored)
            ? { _tag: "Locked", op, now, stored: stored.success }
            : { _tag: "LockFailed", op, now, error: stored.failure }
        )
        yield* Deferred.await(release)
      })
    // A flight starts on the scheduler's next turn: the callers asking in this
    // one are all decided first (they join it, or queue behind it), as they
    // were under Effect 3.
    this.shared.fork(Effect.andThen(
      Effect.yieldNow,
      Store.withLease(this.store, this.shared.bounds, this.shared.context, critical).pipe(
        Effect.catch((error) =>
          granted ? Effect.void : Effect.asVoid(this.step((now) => ({ _tag: "LockFailed", op, now, error })))
        ),
        Effect.withSpan(
          `moon-refresh/${this.shared.owner.module}.${kind}`,
          { attributes: this.shared.owner.attributes, parent },
          { captureStackTrace: false }
        )
      )
    ))
  }

  /** Checks that the lease is still ours for long enough, then sends. */
  private post(op: number, token: Redacted.Redacted<string>): void {
    const held = this.holding?.get(op)
    const send = Effect.andThen(
      held?.lease !== undefined ? held.lease.ensure(this.shared.sendLease) : Effect.void,
      this.shared.client.refresh(token)
    )
    const traced = held?.span !== undefined ? Effect.withParentSpan(send, held.span) : send
    // Interruptible until the server has answered (closing the owner aborts the
    // request); the answer, once in, is always taken: its token is spent.
    this.shared.fork(Effect.uninterruptibleMask((restore) =>
      Effect.flatMap(Effect.exit(restore(traced)), (exit) =>
        // An interruption of this fiber (the owner closing) is not an answer.
        Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause)
          ? Effect.void
          : this.step((now) => ({ _tag: "Answered", op, now, exit })))
    ))
  }
}

const reasonOf = (reason: Events.SignOutReason): Metrics.SignOutReason => {
  switch (reason._tag) {
    case "UserSignedOut":
      return "user"
    case "SignedOutElsewhere":
      return "elsewhere"
    case "TokenRejected":
      return Metrics.isReuse(reason.error) ? "reused" : "rejected"
  }
}

const logOf = (command: Extract<Core.Command, { readonly _tag: "Log" }>): Effect.Effect<void> => {
  const line = command.level === "Debug"
    ? Effect.logDebug(command.message)
    : command.level === "Warning"
    ? Effect.logWarning(command.message)
    : Effect.logError(command.message)
  return Effect.annotateLogs(line, command.annotations)
}

/**
 * A `Shared.daemon`: fibers that closing the owner does not interrupt; its
 * scope waits for them when it closes (each is bounded by the store's
 * timeout), so the save of a token already spent always finishes. Made before
 * the owner's `fork`, so that this wait comes after `fork`'s fibers stopped
 * (one of them may hand over an answer to save as it stops).
 */
export const makeDaemon: Effect.Effect<Shared["daemon"], never, Scope.Scope> = Effect.gen(function*() {
  const run = Effect.runForkWith(yield* Effect.context<never>())
  const running = new Set<Fiber.Fiber<unknown, unknown>>()
  yield* Effect.addFinalizer(() => Effect.suspend(() => Fiber.awaitAll([...running])))
  return (effect) => {
    const fiber = run(effect)
    running.add(fiber)
    fiber.addObserver(() => running.delete(fiber))
    return fiber
  }
})

/**
 * A timer of its own: one fiber at a time, started by the shared `fork`. A
 * time already come fires on a later turn of the scheduler, never inside
 * `arm` (a `TestClock` ends a sleep of zero at once): a decision that arms the
 * timer for a time already past is not taken again in the same turn.
 */
export const fiberTimer = (shared: Pick<Shared, "clock" | "fork">) => (cell: Cell): Timer => {
  let fiber: Fiber.Fiber<void> | undefined
  return {
    arm: (at) => {
      if (fiber !== undefined) fiber.interruptUnsafe()
      if (at === undefined) {
        fiber = undefined
        return
      }
      const delay = at - shared.clock.currentTimeMillisUnsafe()
      fiber = shared.fork(Effect.andThen(delay > 0 ? Effect.sleep(delay) : Effect.yieldNow, cell.tick))
    }
  }
}

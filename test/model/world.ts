/**
 * The world one schedule runs in: real `SessionManager`s (or one
 * `SessionPool`) on virtual time, a fake store and a fake `RefreshClient`
 * whose every operation is a pending action the schedule completes when it
 * chooses, and the record of everything that happened, for the invariants.
 *
 * Public API only: the managers, the pool and the stores are built with
 * `SessionManager.make`, `SessionPool.make`, `SessionStore.make` and
 * `SessionStore.makeKeyValueStore`.
 */
import type { Fiber } from "effect"
import { Effect, Exit, Option, Queue, Random, Redacted, Schema, Scope, Stream } from "effect"
import { KeyValueStore } from "effect/persistence"
import { RefreshClient, RefreshError, Session, SessionManager, SessionPool, SessionStore } from "moon-refresh"
import type { Config, OpKind, Step } from "./schedule.js"
import { holderName, opFor } from "./schedule.js"
import type { Family, Grant } from "./server.js"
import { Server } from "./server.js"
import { Livelock, VirtualTime } from "./virtual.js"

const second = 1_000
const minute = 60 * second

/** The fake client's own timeout: a POST nobody answers fails after this (as `RefreshClient`'s would). */
export const postTimeout = 10 * second
/** The store lock's lease: past it, another holder may take the lock over. */
export const lockLease = 30 * second
/** The drain runs at least this long with everything answered, so background retries land. */
export const drainQuiet = 75 * second
/** Every operation must end within this. */
export const opBound = 10 * minute
/** More actions than this in the drain is a livelock (an operation that keeps asking). */
export const drainBudget = 4_000

/** One call on a holder, from its start to its end. */
export interface OpRecord {
  readonly id: number
  readonly holder: Holder
  readonly kind: OpKind
  readonly startSeq: number
  readonly startAt: number
  /** The family a sign-in brings in (for `signInWithToken` and `signInEnv`, the family of its token). */
  readonly family: Family | undefined
  readonly inDrain: boolean
  endSeq: number | undefined
  endAt: number | undefined
  exit: Exit.Exit<unknown, unknown> | undefined
}

export interface PostRecord {
  readonly holder: string
  readonly token: string
  readonly seq: number
  readonly at: number
  readonly inDrain: boolean
  outcome: "pending" | "rotated" | "rejected" | "503" | "lost" | "timeout" | "aborted"
  grant: Grant | undefined
  /** When its answer reached the holder (a rotation). */
  answeredSeq?: number
  answeredAt?: number
}

export interface WriteRecord {
  readonly holder: string
  readonly seq: number
  readonly revision: number
  readonly session: Option.Option<Session.Session>
}

/** A write of a session the store failed (a fault, an outage, or the holder gave up waiting). */
export interface FailedWrite {
  readonly holder: string
  readonly seq: number
  readonly token: string
}

/** A grant of a cell's lock to a holder, until it let it go (or lost it to a takeover once its lease ran out). */
export interface LockRecord {
  readonly cell: Cell
  readonly owner: number
  readonly holder: string
  readonly grantSeq: number
  endSeq: number | undefined
  endAt: number | undefined
  /** Taken over by another holder once its lease ran out, rather than let go. */
  lost: boolean
}

export interface StoreOpRecord {
  readonly holder: string
  readonly issueSeq: number
  doneSeq: number | undefined
}

export interface EventRecord {
  readonly seq: number
  readonly event: SessionManager.SessionEvent
}

export interface Holder {
  readonly index: number
  readonly name: string
  readonly cell: Cell
  api: SessionManager.Service
  scope: Scope.Closeable | undefined
  closed: boolean
  readonly events: Array<EventRecord>
  /** Change-feed records on their way to this holder, oldest first. */
  readonly feed: Array<SessionStore.Stored>
  readonly feedQueue: Queue.Queue<SessionStore.Stored>
}

/** One stored record, with its lock and its history. */
export interface Cell {
  readonly key: string
  revision: number
  session: Option.Option<Session.Session>
  lock: { readonly owner: number; readonly until: number } | undefined
  readonly writes: Array<WriteRecord>
  readonly holders: Array<Holder>
}

interface Action {
  readonly id: number
  readonly kind: "read" | "write" | "lock" | "post" | "feed" | "kv"
  readonly label: string
  readonly ready: () => boolean
  /** Completes it: `outcome` as in `Step`'s `deliver`. */
  readonly complete: (outcome: number) => void
}

const storeError = (operation: SessionStore.StoreError["operation"]) =>
  new SessionStore.StoreError({ operation, message: "the store is unavailable" })

// The session as makeKeyValueStore writes it, read back for the checks.
const decodeSession = Schema.decodeUnknownOption(Schema.fromJsonString(Session.Session))
const encodeSession = Schema.encodeSync(Schema.fromJsonString(Session.Session))

export class World {
  readonly vt: VirtualTime
  readonly server: Server
  readonly cells: Array<Cell> = []
  readonly holders: Array<Holder> = []
  readonly ops: Array<OpRecord> = []
  readonly posts: Array<PostRecord> = []
  readonly storeOps: Array<StoreOpRecord> = []
  readonly failedWrites: Array<FailedWrite> = []
  readonly locks: Array<LockRecord> = []
  /** Spent tokens sent, in the order sent (the invariant decides which are allowed). */
  readonly spentSends: Array<{ readonly post: PostRecord; readonly grant: Grant }> = []
  /** Which key's request each error the fake client answered with belongs to. */
  readonly errorKeys = new WeakMap<object, string>()
  readonly trace: Array<string> | undefined
  readonly env: Grant
  /** The env token's first send, and each tombstone or other family stored since (by seq). */
  seq = 0
  outage = false
  /** The server answers every POST with a 503 (an outage of the auth server). */
  serverDown = false
  inDrain = false
  drainStart = 0
  livelock: string | undefined
  /** The livelock was a timer firing again and again at one instant (Effect 3's harness hung there). */
  stuckInTime = false
  private actions: Array<Action> = []
  private nextId = 0
  private pool: SessionPool.Service | undefined
  private poolScope: Scope.Closeable | undefined
  /** Fibers the harness started, interrupted when the run is over. */
  private readonly fibers: Array<Fiber.Fiber<unknown, unknown>> = []

  constructor(readonly config: Config, traced: boolean) {
    // One generator for the whole run, seeded: every fiber draws from it, in the order they run.
    this.vt = new VirtualTime(Effect.runSync(Random.withSeed(Random.Random, config.seed)))
    this.server = new Server(config.lifetime)
    this.trace = traced ? [] : undefined
    this.env = this.server.issue(config.mode === "pool" ? "key0" : "", 0)
    this.env.delivered = true
  }

  tick(): number {
    return ++this.seq
  }

  log(line: () => string): void {
    if (this.trace !== undefined) this.trace.push(`${(this.vt.now / 1000).toFixed(3).padStart(9)}s  ${line()}`)
  }

  // -------------------------------------------------------------------------
  // Pending actions
  // -------------------------------------------------------------------------

  private add(action: Omit<Action, "id">): Action {
    const added = { ...action, id: this.nextId++ }
    this.actions.push(added)
    return added
  }

  private remove(action: Action): void {
    const i = this.actions.indexOf(action)
    if (i >= 0) this.actions.splice(i, 1)
  }

  readyActions(): Array<Action> {
    return this.actions.filter((action) => action.ready())
  }

  deliver(pick: number, outcome: number): void {
    const ready = this.readyActions()
    if (ready.length === 0) return
    const action = ready[pick % ready.length]!
    this.remove(action)
    if (outcome !== 4) {
      action.complete(outcome)
      this.vt.settle()
      return
    }
    const was = this.outage
    this.outage = true
    this.log(() => "store outage starts (for this answer)")
    action.complete(0)
    this.vt.settle()
    this.outage = was
    this.log(() => "store outage ends")
  }

  // -------------------------------------------------------------------------
  // Driving a world by hand (the regression tests): by kind of action, not
  // by position, so a scenario does not depend on how many store operations
  // the engine makes.
  // -------------------------------------------------------------------------

  /**
   * Completes every store operation that can complete, and those they lead to
   * (not POSTs, not the feed); `except` leaves operations of that kind waiting.
   */
  answerStore(outcome: 0 | 1 = 0, except?: "write"): number {
    let count = 0
    for (;;) {
      const next = this.readyActions().find((a) =>
        a.kind !== "post" && a.kind !== "feed" && (except === undefined || a.kind !== except)
      )
      if (next === undefined) return count
      this.remove(next)
      next.complete(outcome)
      this.vt.settle()
      count++
    }
  }

  /** Whether a POST is out, waiting for its answer. */
  postOut(): boolean {
    return this.actions.some((a) => a.kind === "post")
  }

  /** Answers the oldest POST out: 0 as the server decides, 1 a 503, 2 lost after rotating, 3 rejected. */
  answerPost(outcome: 0 | 1 | 2 | 3 = 0): void {
    const post = this.actions.find((a) => a.kind === "post")
    if (post === undefined) throw new Error("no POST is out")
    this.remove(post)
    post.complete(outcome)
    this.vt.settle()
  }

  /** Delivers every change-feed record on its way. */
  deliverFeeds(): void {
    for (;;) {
      const next = this.readyActions().find((a) => a.kind === "feed")
      if (next === undefined) return
      this.remove(next)
      next.complete(0)
      this.vt.settle()
    }
  }

  /** Lets time run for `ms` with everything answered as asked the moment it can be (store, server, feed). */
  runFor(ms: number): void {
    const until = this.vt.now + ms
    for (;;) {
      if (this.readyActions().length > 0) {
        this.deliver(0, 0)
        continue
      }
      const next = this.nextEventTime()
      if (next === undefined || next > until) break
      this.vt.advanceTo(next)
    }
    this.vt.advanceTo(until)
  }

  /** Moves time by `ms`, firing the timers on the way. */
  advance(ms: number): void {
    this.vt.advanceTo(this.vt.now + ms)
  }

  /** What `holder` holds now. */
  held(holderIndex: number): Option.Option<Session.Session> {
    return this.snapshot().get(this.holders[holderIndex]!) ?? Option.none()
  }

  /** The time the world next changes by itself: a timer, or a lock lease running out under a waiter. */
  nextEventTime(): number | undefined {
    let next = this.vt.nextTimer()
    for (const cell of this.cells) {
      if (
        cell.lock !== undefined && this.actions.some((a) => a.kind === "lock" && a.label.endsWith(` on ${cell.key}`))
      ) {
        next = next === undefined ? cell.lock.until : Math.min(next, cell.lock.until)
      }
    }
    return next
  }

  // -------------------------------------------------------------------------
  // The fake store: one record per cell, fenced writes, a lease lock, a feed
  // -------------------------------------------------------------------------

  private storeOp<A, E, E2 = never>(
    holder: string,
    kind: "read" | "write" | "kv",
    label: string,
    fail: E,
    run: () => Effect.Effect<A, E2>,
    writing?: Option.Option<Session.Session>
  ): Effect.Effect<A, E | E2> {
    return this.vt.callback<A, E | E2>((resume) => {
      const record: StoreOpRecord = { holder, issueSeq: this.tick(), doneSeq: undefined }
      this.storeOps.push(record)
      const failed = () => {
        const token = writing === undefined ? undefined : Option.getOrUndefined(writing)?.refreshToken
        if (token !== undefined) this.failedWrites.push({ holder, seq: this.tick(), token: Redacted.value(token) })
      }
      if (this.outage) {
        record.doneSeq = this.tick()
        this.log(() => `${label} fails (outage)`)
        failed()
        resume(Effect.fail(fail))
        return
      }
      if (this.config.instant) {
        record.doneSeq = this.tick()
        this.log(() => `${label}`)
        resume(run())
        return
      }
      this.log(() => `${label} issued`)
      let abandoned = false
      this.add({
        kind,
        label,
        ready: () => true,
        complete: (outcome) => {
          const fails = this.outage || outcome === 1
          if (abandoned) {
            // A slow operation the holder gave up on still reaches the store (a
            // write sent to Redis lands though its client timed out).
            if (!fails) {
              this.log(() => `${label} lands late (its caller gave up)`)
              Effect.runSync(Effect.ignore(run()))
            }
            return
          }
          record.doneSeq = this.tick()
          if (fails) {
            this.log(() => `${label} fails`)
            failed()
            resume(Effect.fail(fail))
          } else {
            resume(run())
          }
        }
      })
      return Effect.sync(() => {
        if (record.doneSeq !== undefined) return
        abandoned = true
        record.doneSeq = this.tick()
        this.log(() => `${label} abandoned by its caller`)
        failed()
      })
    })
  }

  private commit(cell: Cell, writer: string, session: Option.Option<Session.Session>): SessionStore.Stored {
    cell.revision++
    cell.session = session
    const record: SessionStore.Stored = { revision: cell.revision, session }
    cell.writes.push({ holder: writer, seq: this.tick(), revision: cell.revision, session })
    this.log(() => `store ${cell.key || "record"} := rev ${cell.revision} ${describe(session)} (by ${writer})`)
    for (const other of cell.holders) {
      if (other.name === writer) continue
      other.feed.push(record)
      this.add({
        kind: "feed",
        label: `feed rev ${record.revision} to ${other.name}`,
        ready: () => other.feed[0] === record,
        complete: () => {
          other.feed.shift()
          Queue.offerUnsafe(other.feedQueue, record)
        }
      })
    }
    return record
  }

  private lock(cell: Cell, holder: string): Effect.Effect<number, SessionStore.StoreError> {
    return this.vt.callback<number, SessionStore.StoreError>((resume) => {
      const record: StoreOpRecord = { holder, issueSeq: this.tick(), doneSeq: undefined }
      this.storeOps.push(record)
      if (this.outage) {
        record.doneSeq = this.tick()
        resume(Effect.fail(storeError("lock")))
        return
      }
      const owner = this.nextId++
      const free = () => cell.lock === undefined || this.vt.now >= cell.lock.until
      let abandoned = false
      const action = this.add({
        kind: "lock",
        label: `lock for ${holder} on ${cell.key}`,
        ready: free,
        complete: (outcome) => {
          if (abandoned) {
            // Granted after its caller gave up: held by nobody until the lease runs out.
            if (!(this.outage || outcome === 1)) {
              cell.lock = { owner, until: this.vt.now + lockLease }
              this.log(() => `lock #${owner} granted to ${holder}, who gave up waiting: held until its lease ends`)
            }
            return
          }
          record.doneSeq = this.tick()
          if (this.outage || outcome === 1) {
            this.log(() => `lock for ${holder} fails`)
            resume(Effect.fail(storeError("lock")))
            return
          }
          if (cell.lock !== undefined) {
            this.log(() => `lock lease of #${cell.lock!.owner} ran out`)
            this.lockEnded(cell, cell.lock.owner, true)
          }
          cell.lock = { owner, until: this.vt.now + lockLease }
          this.locks.push({
            cell,
            owner,
            holder,
            grantSeq: this.tick(),
            endSeq: undefined,
            endAt: undefined,
            lost: false
          })
          this.log(() => `lock #${owner} granted to ${holder}`)
          resume(Effect.succeed(owner))
        }
      })
      // An instant store grants a free lock at once, and the next waiter when it is released.
      if (this.config.instant && free()) {
        this.remove(action)
        action.complete(0)
      }
      return Effect.sync(() => {
        if (record.doneSeq !== undefined) return
        abandoned = true
        record.doneSeq = this.tick()
      })
    })
  }

  private lockEnded(cell: Cell, owner: number, lost: boolean): void {
    const record = this.locks.find((l) => l.cell === cell && l.owner === owner && l.endSeq === undefined)
    if (record === undefined) return
    record.endSeq = this.tick()
    record.endAt = this.vt.now
    record.lost = lost
  }

  private unlock(cell: Cell, owner: number): Effect.Effect<void> {
    return Effect.sync(() => {
      // Only the owner's release frees it: after a takeover, the old holder's release does nothing.
      if (cell.lock?.owner === owner) {
        cell.lock = undefined
        this.lockEnded(cell, owner, false)
        this.log(() => `lock #${owner} released`)
        const next = this.config.instant
          ? this.actions.find((a) => a.kind === "lock" && a.label.endsWith(` on ${cell.key}`))
          : undefined
        if (next !== undefined) {
          this.remove(next)
          next.complete(0)
        }
      }
    })
  }

  /** A fenced store of `cell` as `holder` sees it (its own writes come back through `make`'s feed). */
  fencedStore(cell: Cell, holder: Holder | undefined, name: string): SessionStore.Service {
    return SessionStore.make({
      read: this.storeOp(
        name,
        "read",
        `read by ${name}`,
        storeError("load"),
        () => Effect.succeed<SessionStore.Stored>({ revision: cell.revision, session: cell.session })
      ),
      write: (session, expected) =>
        this.storeOp(
          name,
          "write",
          `write ${describe(session)} at rev ${expected} by ${name}`,
          storeError(Option.isSome(session) ? "save" : "clear"),
          () =>
            cell.revision === expected
              ? Effect.succeed(this.commit(cell, name, session))
              : Effect.fail(SessionStore.conflict(expected, cell.revision)),
          session
        ),
      withLock: (critical) =>
        Effect.acquireUseRelease(this.lock(cell, name), () => critical, (owner) => this.unlock(cell, owner)),
      changes: holder === undefined ? Stream.never : Stream.fromQueue(holder.feedQueue),
      shared: this.config.shared
    })
  }

  /** A plain `KeyValueStore` holding the record as JSON, for `SessionStore.makeKeyValueStore`. */
  keyValueStore(cell: Cell, name: string): KeyValueStore.KeyValueStore {
    let value: string | undefined = Option.match(cell.session, {
      onNone: () => undefined,
      onSome: encodeSession
    })
    const failed = (method: string) => new KeyValueStore.KeyValueStoreError({ method, message: "unavailable" })
    const op = <A>(method: string, label: string, run: () => A, writing?: Option.Option<Session.Session>) =>
      this.storeOp(name, "kv", `${label} by ${name}`, failed(method), () => Effect.sync(run), writing)
    const put = (next: string | undefined) => () => {
      value = next
      const session = next === undefined ? Option.none() : decodeSession(next)
      cell.revision++
      cell.session = session
      cell.writes.push({ holder: name, seq: this.tick(), revision: cell.revision, session })
      this.log(() => `store := ${describe(session)} (by ${name})`)
    }
    return KeyValueStore.make({
      get: () => op("get", "load", () => value),
      getUint8Array: () => Effect.succeed(undefined),
      set: (_key, next) =>
        Effect.suspend(() => {
          const session = decodeSession(String(next))
          return op("set", `save ${describe(session)}`, put(String(next)), session)
        }),
      remove: () => op("remove", "clear", put(undefined)),
      clear: op("clear", "clear all", put(undefined)),
      size: Effect.sync(() => (value === undefined ? 0 : 1)),
      keys: Effect.sync(() => (value === undefined ? [] : ["session"]))
    })
  }

  // -------------------------------------------------------------------------
  // The fake RefreshClient in front of the strict server
  // -------------------------------------------------------------------------

  client(sender: string | undefined): RefreshClient.Service {
    return {
      refresh: (token) =>
        this.vt.callback<Session.Session, RefreshError.RefreshError>((resume) => {
          const value = Redacted.value(token)
          const known = this.server.grantOf(value)
          const holder = sender ?? (known?.family.key || "?")
          const post: PostRecord = {
            holder,
            token: value,
            seq: this.tick(),
            at: this.vt.now,
            inDrain: this.inDrain,
            outcome: "pending",
            grant: undefined
          }
          this.posts.push(post)
          if (known !== undefined && known.successor !== undefined) this.spentSends.push({ post, grant: known })
          this.log(() => `POST ${value} by ${holder}${known?.successor !== undefined ? " (SPENT)" : ""}`)
          let done = false
          const fail = (error: RefreshError.RefreshError) => {
            this.errorKeys.set(error, holder)
            return Effect.fail(error)
          }
          const finish = (answer: Effect.Effect<Session.Session, RefreshError.RefreshError>) => {
            if (done) return
            done = true
            cancelTimeout()
            this.remove(action)
            resume(answer)
          }
          const cancelTimeout = this.vt.at(this.vt.now + postTimeout, () => {
            post.outcome = "timeout"
            this.log(() => `POST ${value} times out`)
            finish(fail(new RefreshError.TransportError({ reason: "Timeout", message: "timed out" })))
          })
          const action = this.add({
            kind: "post",
            label: `answer to POST ${value} by ${holder}`,
            ready: () => true,
            complete: (outcome) => finish(this.answer(post, outcome, fail))
          })
          return Effect.sync(() => {
            if (done) return
            done = true
            post.outcome = "aborted"
            this.log(() => `POST ${value} aborted`)
            cancelTimeout()
            this.remove(action)
          })
        })
    }
  }

  private answer(
    post: PostRecord,
    outcome: number,
    fail: (error: RefreshError.RefreshError) => Effect.Effect<never, RefreshError.RefreshError>
  ): Effect.Effect<Session.Session, RefreshError.RefreshError> {
    if (outcome === 1 || this.serverDown) {
      post.outcome = "503"
      this.log(() => `POST ${post.token} answered 503`)
      return fail(new RefreshError.ServerError({ status: 503, message: "service unavailable" }))
    }
    const processed = this.server.process(post.token, this.vt.now, outcome === 3)
    // Sent while another send of the same token was out, and processed after it: a reuse too.
    if (processed._tag === "Rejected" && processed.why === "reuse" && !this.spentSends.some((s) => s.post === post)) {
      this.spentSends.push({ post, grant: this.server.grantOf(post.token)! })
    }
    if (processed._tag === "Rejected") {
      post.outcome = "rejected"
      this.log(() => `POST ${post.token} rejected (${processed.why})`)
      return fail(new RefreshError.TokenRejectedError({ status: 400, message: `rejected: ${processed.why}` }))
    }
    post.grant = processed.grant
    if (outcome === 2) {
      post.outcome = "lost"
      this.log(() => `POST ${post.token} rotated to ${processed.grant.refreshToken}, answer lost`)
      return fail(new RefreshError.TransportError({ reason: "Network", message: "connection reset" }))
    }
    post.outcome = "rotated"
    post.answeredSeq = this.tick()
    post.answeredAt = this.vt.now
    processed.grant.delivered = true
    this.log(() => `POST ${post.token} answered ${processed.grant.refreshToken}`)
    return Effect.succeed(processed.grant.session)
  }

  // -------------------------------------------------------------------------
  // Building the holders
  // -------------------------------------------------------------------------

  private makeCell(key: string): Cell {
    const cell: Cell = { key, revision: 0, session: Option.none(), lock: undefined, writes: [], holders: [] }
    if (this.config.initial === "session") {
      const grant = this.server.issue(key, 0)
      grant.delivered = true
      cell.revision = 1
      cell.session = Option.some(grant.session)
      cell.writes.push({ holder: "setup", seq: this.tick(), revision: 1, session: cell.session })
    }
    this.cells.push(cell)
    return cell
  }

  private makeHolder(index: number, cell: Cell): Holder {
    const holder: Holder = {
      index,
      name: holderName(this.config, index),
      cell,
      api: undefined as never,
      scope: undefined,
      closed: false,
      events: [],
      feed: [],
      // Made on the harness's scheduler: a queue wakes its takers through the scheduler it was made on.
      feedQueue: this.vt.runNow(Queue.unbounded<SessionStore.Stored>(), () => false)
    }
    cell.holders.push(holder)
    this.holders.push(holder)
    return holder
  }

  /** Builds the holders (answering their start-up reads at once) and starts recording their events. */
  setup(): void {
    const autoDeliver = () => {
      const ready = this.readyActions()
      if (ready.length === 0) return false
      this.remove(ready[0]!)
      ready[0]!.complete(0)
      return true
    }
    if (this.config.mode === "pool") {
      const holders = Array.from(
        { length: this.config.holders },
        (_, i) => this.makeHolder(i, this.makeCell(`key${i}`))
      )
      const stores = new Map(holders.map((h) => [h.name, this.fencedStore(h.cell, undefined, h.name)]))
      const keyed: SessionStore.Keyed = {
        forKey: (key) => Effect.sync(() => stores.get(key) ?? this.fencedStore(this.makeCell(key), undefined, key))
      }
      const scope = Scope.makeUnsafe()
      this.poolScope = scope
      const pool = this.vt.runNow(
        SessionPool.make({
          capacity: this.config.capacity,
          idleTimeToLive: this.config.idleTimeToLive,
          maxConcurrentRefreshes: this.config.maxConcurrentRefreshes
        }).pipe(
          Effect.provideService(RefreshClient.RefreshClient, this.client(undefined)),
          Effect.provideService(SessionStore.KeyedSessionStore, keyed),
          Scope.provide(scope)
        ),
        autoDeliver
      )
      this.pool = pool
      for (const holder of holders) holder.api = pool.manager(holder.name)
      this.spawn(
        Stream.runForEach(pool.events, ({ event, key }) =>
          Effect.sync(() => {
            const holder = holders.find((h) => h.name === key)
            holder?.events.push({ seq: this.tick(), event })
            this.log(() => `${key} event ${describeEvent(event)}`)
          }))
      )
      return
    }
    const cell = this.makeCell("")
    for (let i = 0; i < this.config.holders; i++) {
      const holder = this.makeHolder(i, cell)
      const store = this.config.store === "plain"
        ? this.vt.runNow(
          SessionStore.makeKeyValueStore({ key: "session" }).pipe(
            Effect.provideService(KeyValueStore.KeyValueStore, this.keyValueStore(cell, holder.name))
          ),
          autoDeliver
        )
        : this.fencedStore(cell, holder, holder.name)
      const scope = Scope.makeUnsafe()
      holder.scope = scope
      holder.api = this.vt.runNow(
        SessionManager.make().pipe(
          Effect.provideService(RefreshClient.RefreshClient, this.client(holder.name)),
          Effect.provideService(SessionStore.SessionStore, store),
          Scope.provide(scope)
        ),
        autoDeliver
      )
      this.spawn(
        Stream.runForEach(holder.api.events, (event) =>
          Effect.sync(() => {
            holder.events.push({ seq: this.tick(), event })
            this.log(() => `${holder.name} event ${describeEvent(event)}`)
          }))
      )
    }
  }

  // -------------------------------------------------------------------------
  // Operations
  // -------------------------------------------------------------------------

  private opEffect(holder: Holder, kind: OpKind): { effect: Effect.Effect<unknown, unknown>; family?: Family } {
    const api = holder.api
    switch (kind) {
      case "accessToken":
        return { effect: api.accessToken }
      case "session":
        return { effect: api.session }
      case "refresh":
        return { effect: api.refresh }
      case "signIn": {
        const grant = this.server.issue(holder.cell.key, this.vt.now)
        grant.delivered = true
        return { effect: api.signIn(grant.session), family: grant.family }
      }
      case "signInWithToken": {
        const grant = this.server.issue(holder.cell.key, this.vt.now)
        grant.delivered = true
        return { effect: api.signInWithRefreshToken(grant.refreshToken), family: grant.family }
      }
      case "startEnv":
        return {
          effect: Effect.flatMap(
            api.current,
            (current) => Option.isNone(current) ? api.signInWithRefreshToken(this.env.refreshToken) : Effect.void
          ),
          family: this.env.family
        }
      case "signOut":
        return { effect: api.signOut }
      case "close": {
        holder.closed = true
        const scope = holder.scope
        return { effect: scope === undefined ? Effect.void : Scope.close(scope, Exit.void) }
      }
    }
  }

  call(holderIndex: number, kind: OpKind): OpRecord | undefined {
    const holder = this.holders[holderIndex % this.holders.length]!
    // A closed manager takes no more calls (a caller has no manager to call); the pool has no close.
    if (holder.closed || (kind === "close" && holder.scope === undefined)) return undefined
    const { effect, family } = this.opEffect(holder, kind)
    const record: OpRecord = {
      id: this.ops.length,
      holder,
      kind,
      startSeq: this.tick(),
      startAt: this.vt.now,
      family,
      inDrain: this.inDrain,
      endSeq: undefined,
      endAt: undefined,
      exit: undefined
    }
    this.ops.push(record)
    this.log(() => `${holder.name}.${kind} starts (op ${record.id})`)
    this.spawn(
      Effect.onExit(effect, (exit) =>
        Effect.sync(() => {
          record.exit = exit
          record.endSeq = this.tick()
          record.endAt = this.vt.now
          this.log(() => `${holder.name}.${kind} ends (op ${record.id}): ${describeExit(exit)}`)
        }))
    )
    return record
  }

  private spawn(effect: Effect.Effect<unknown, unknown>): void {
    this.fibers.push(this.vt.fork(effect))
  }

  // -------------------------------------------------------------------------
  // Running a schedule
  // -------------------------------------------------------------------------

  step(step: Step): void {
    switch (step.t) {
      case "call":
        this.call(step.holder, opFor(this.config, step.op))
        return
      case "callAll":
        for (let i = 0; i < this.holders.length; i++) this.call(i, opFor(this.config, step.op))
        return
      case "deliver":
        return this.deliver(step.pick, step.outcome)
      case "flush":
        for (let i = 0; i < step.count; i++) this.deliver(0, 0)
        return
      case "advance": {
        const target = step.ms === 0 ? this.nextEventTime() : this.vt.now + step.ms
        if (target !== undefined) this.vt.advanceTo(target)
        return
      }
      case "outage":
        this.outage = step.on
        this.log(() => step.on ? "store outage starts" : "store outage ends")
        return
      case "server":
        this.serverDown = step.down
        this.log(() => step.down ? "the server goes down (503s)" : "the server is back")
        return
    }
  }

  /**
   * Everything answered as asked, the feed delivered, time moved from timer to
   * timer, until every operation has ended and `drainQuiet` has passed.
   */
  drain(): void {
    this.inDrain = true
    this.drainStart = this.vt.now
    this.outage = false
    this.serverDown = false
    this.log(() => "drain: the store answers, the server answers, the feed delivers")
    let delivered = 0
    for (;;) {
      const ready = this.readyActions()
      if (ready.length > 0) {
        if (++delivered > drainBudget) {
          this.livelock = `${drainBudget} actions in the drain (last: ${ready[0]!.label})`
          return
        }
        this.deliver(0, 0)
        continue
      }
      const open = this.ops.some((op) => op.endSeq === undefined)
      const idle = !open && this.actions.length === 0
      const next = this.nextEventTime()
      // At rest once the quiet time has passed with nothing open; a later timer is the next proactive refresh.
      if (next === undefined || (idle && next > this.drainStart + drainQuiet)) return
      // Past every bound: the open operations will be reported as never ending.
      if (next > this.drainStart + drainQuiet + opBound) return
      this.vt.advanceTo(next)
    }
  }

  /** What each live holder holds now (no time moves; a pool key not in memory is loaded). */
  snapshot(): Map<Holder, Option.Option<Session.Session>> {
    const held = new Map<Holder, Option.Option<Session.Session>>()
    for (const holder of this.holders) {
      if (holder.closed) continue
      const current = this.pool === undefined
        ? holder.api.current
        : this.pool.current(holder.name).pipe(Effect.orElseSucceed(() => Option.none<Session.Session>()))
      // Only the reads that load a pool's key are answered: a key loaded with an
      // expired session starts a refresh, which must not move the world under the check.
      // A pool key that cannot be loaded so (the pool is full of keys whose refresh
      // is under way: it waits for room, which takes time) is left out of the check.
      const value = this.vt.tryRunNow(current, () => {
        const read = this.readyActions().find((a) => a.kind === "read" || a.kind === "kv")
        if (read === undefined) return false
        this.remove(read)
        read.complete(0)
        return true
      })
      if (value !== undefined) held.set(holder, value)
    }
    return held
  }

  /**
   * Ends every fiber of the run: the scopes closed, the harness's fibers
   * interrupted, whatever is still pending failed. Effect keeps every root
   * and daemon fiber in a global set until it ends, so a fiber left waiting
   * would keep the whole world in memory.
   */
  dispose(): void {
    this.outage = true
    this.trace?.push("-- end of run")
    try {
      for (const scope of [this.poolScope, ...this.holders.map((h) => h.scope)]) {
        if (scope !== undefined) this.vt.fork(Scope.close(scope, Exit.void))
      }
      for (const fiber of this.fibers) fiber.interruptUnsafe(fiber.id)
      this.vt.settle()
      for (let i = 0; i < 1_000; i++) {
        if (this.readyActions().length > 0) this.deliver(0, 1)
        else if (!this.vt.fireNext()) break
      }
    } catch (error) {
      if (!(error instanceof Livelock)) throw error
    }
  }

  run(steps: ReadonlyArray<Step>): void {
    try {
      this.setup()
      for (const step of steps) this.step(step)
      this.drain()
    } catch (error) {
      if (!(error instanceof Livelock)) throw error
      this.livelock = error.message
      this.stuckInTime = error.kind === "timers"
    }
  }
}

export const describe = (session: Option.Option<Session.Session>): string =>
  Option.match(session, { onNone: () => "signed out", onSome: (s) => Redacted.value(s.refreshToken) })

export const describeEvent = (event: SessionManager.SessionEvent): string => {
  switch (event._tag) {
    case "Initial":
      return `Initial(${describe(event.session)})`
    case "SignedIn":
    case "Refreshed":
      return `${event._tag}(${Redacted.value(event.session.refreshToken)})`
    case "RefreshFailed":
      return `RefreshFailed(${event.error._tag})`
    case "SaveFailed":
      return "SaveFailed"
    case "SignedOut":
      return `SignedOut(${event.reason._tag})`
  }
}

export const describeExit = (exit: Exit.Exit<unknown, unknown>): string =>
  exit._tag === "Success"
    ? exit.value === undefined
      ? "ok"
      : `ok ${
        typeof exit.value === "object" && exit.value !== null && "refreshToken" in exit.value
          ? Redacted.value((exit.value as Session.Session).refreshToken)
          : Redacted.isRedacted(exit.value)
          ? Redacted.value(exit.value as Redacted.Redacted<string>)
          : ""
      }`
    : String(exit.cause).split("\n")[0]!

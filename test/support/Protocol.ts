/**
 * The session protocol as a model checker sees it: the pure `decide` of
 * each holder (the engine's own, `src/internal/session/core.ts`), with small
 * models of what it talks to: the store's one fenced record, its lease lock
 * (owned, with a takeover of a holder that stalled), its change feed, and a
 * strict server (single-use refresh tokens, no reuse window: a spent token
 * revokes its family). Every state of the world is a value; `successors`
 * lists every way it can move on (a holder starts an operation, any pending
 * answer arrives, a fault happens), so `explore` can visit every
 * interleaving, the way TLC or Alloy would, up to the budgets given.
 *
 * Time: every session is due for a refresh at once (margin larger than any
 * lifetime) yet valid for far longer than any run, so reads refresh and
 * nothing expires; `Tick` moves time past the save bound (a holder that keeps
 * failing its save lets its lock go) and lets owed writes be retried.
 */
import { Cause, Exit, Option, Redacted } from "effect"
import { RefreshError, Session, SessionStore } from "moon-refresh"
import * as Core from "../../src/internal/session/core.js"
import type * as Rules from "../../src/internal/session/rules.js"

const hour = 3_600_000

export const config: Rules.Config = {
  margin: 1_000 * hour,
  autoRefresh: false,
  cooldown: 0,
  maxCooldown: 0,
  minInterval: 0,
  saveBound: 10_000,
  spread: true
}

// ---- sessions: one object per refresh token, so states compare by identity ----

const sessions = new Map<string, Session.Session>()

/** The session whose refresh token is `token` (`F<family>.<generation>`). */
export const sessionOf = (token: string): Session.Session => {
  let session = sessions.get(token)
  if (session === undefined) {
    session = Session.unsafeMake({
      accessToken: `access-${token}`,
      refreshToken: token,
      expiresAt: 100 * hour,
      user: { id: token.split(".")[0]! }
    })
    sessions.set(token, session)
  }
  return session
}

const tokenOf = (session: Session.Session) => Redacted.value(session.refreshToken)

// ---- the world ----

export type Op =
  | "read"
  | "refresh"
  | "signIn"
  | "signInWithToken"
  | "signOut"

export interface Family {
  /** The newest token issued. */
  readonly current: string
  readonly generation: number
  readonly revoked: boolean
}

export type Pending =
  /** A lock asked for: granted (with the record read under it) when the lock is free. */
  | { readonly _tag: "Lock"; readonly holder: number; readonly op: number }
  /** A refresh about to be sent: the lease is checked first (a taken-over lock sends nothing). */
  | { readonly _tag: "Ensure"; readonly holder: number; readonly op: number; readonly token: string }
  /**
   * A refresh sent: the server answers. `excused`: the environment's token,
   * sent by a start that found the store signed out (or holding another
   * family) when it decided to: if it was spent, that is the caller's doing.
   */
  | {
    readonly _tag: "Send"
    readonly holder: number
    readonly op: number
    readonly token: string
    readonly excused: boolean
  }
  | {
    readonly _tag: "Write"
    readonly holder: number
    readonly id: number
    readonly record: string | null
    readonly expected: number
    readonly overwrite: boolean
  }
  /** A record on its way to a holder's change feed. */
  | { readonly _tag: "Feed"; readonly holder: number; readonly revision: number; readonly record: string | null }

export interface OpRecord {
  readonly holder: number
  readonly op: number
  /** The operation whose end this one waits for: itself, or a refresh (or sign-in) it joined. */
  readonly waitsOn?: number | undefined
  readonly kind: Op
  readonly start: number
  readonly end?: number
  readonly done?: string
}

export interface World {
  readonly holders: ReadonlyArray<Core.State>
  readonly store: { readonly revision: number; readonly record: string | null }
  readonly lock: { readonly holder: number; readonly op: number } | null
  readonly families: ReadonlyArray<Family>
  readonly pending: ReadonlyArray<Pending>
  /** Operations each holder may still start. */
  readonly budget: ReadonlyArray<number>
  /** Store failures, lock takeovers and lost answers that may still happen. */
  readonly faults: number
  readonly now: number
  /** Counts starts and ends of operations, to tell which came after which. */
  readonly seq: number
  /** Operations started, their outcomes once resolved, and when (in `seq`) each started and ended. */
  readonly ops: ReadonlyArray<OpRecord>
  /** What went wrong, if anything: the first broken invariant. */
  readonly violation?: string | undefined
  /** Spent tokens presented again. */
  readonly reuses: number
  /**
   * Tokens whose answer was lost after the server rotated: sending one again
   * is the documented retry of a lost answer (refused by a strict server,
   * forgiven by Supabase's), not a broken promise.
   */
  readonly lost: ReadonlyArray<string>
  /** When each token was first sent (in `seq`). */
  readonly firstSends: ReadonlyArray<{ readonly token: string; readonly seq: number }>
  /** Writes that landed: who wrote what, when (in `seq`). */
  readonly landings: ReadonlyArray<{ readonly holder: number; readonly record: string | null; readonly seq: number }>
}

export interface Scope {
  /** Per holder: the operations it may start, and how many in all. */
  readonly holders: ReadonlyArray<{ readonly ops: ReadonlyArray<Op>; readonly count: number }>
  /** Store failures, lost answers and stalls that may happen, in all. */
  readonly faults: number
  /** The environment's token (`E.0`) signInWithToken sends, as docs/00's start does. */
  readonly start: "stored" | "empty"
}

/** A new family's first token is `F<n>.0`; the initial stored session is family 0, the environment's is E. */
export const initialWorld = (scope: Scope): World => {
  const stored = scope.start === "stored" ? sessionOf("F0.0") : undefined
  const record = { revision: stored === undefined ? 0 : 1, session: Option.fromNullishOr(stored) }
  return {
    holders: scope.holders.map(() => Core.initial(record, 0, 0, config)),
    store: { revision: record.revision, record: stored === undefined ? null : "F0.0" },
    lock: null,
    families: [
      { current: "F0.0", generation: 0, revoked: false },
      { current: "E.0", generation: 0, revoked: false }
    ],
    pending: [],
    budget: scope.holders.map((holder) => holder.count),
    faults: scope.faults,
    now: 0,
    seq: 0,
    ops: [],
    reuses: 0,
    lost: [],
    firstSends: [],
    landings: []
  }
}

// ---- applying a decision ----

const familyIndex = (token: string) => token.startsWith("E.") ? 1 : Number(token.slice(1).split(".")[0])

const withHolder = (world: World, holder: number, state: Core.State): World => ({
  ...world,
  holders: world.holders.map((s, i) => i === holder ? state : s)
})

/** Feeds `input` to `holder`'s decide and turns its commands into pending work. */
const dispatch = (world: World, holder: number, input: Core.Input): World => {
  const before = world.holders[holder]!
  const decision = Core.decide(before, input, config)
  let next = withHolder(world, holder, decision.state)
  // A holder that lets its lock go past the save bound, its save still failing, leaves the spent
  // token in the store: the one window the docs name, not a broken promise.
  const givenUp = decision.commands.some((c) => c._tag === "Log" && c.message.includes("releasing the store's lock"))
  if (givenUp && before.flight?.sent !== undefined) {
    next = { ...next, lost: [...next.lost, Redacted.value(before.flight.sent)] }
  }
  // The caller of an operation waits for the one its decision names.
  if (decision.awaits !== undefined && "op" in input) {
    next = {
      ...next,
      ops: next.ops.map((op) => op.holder === holder && op.op === input.op ? { ...op, waitsOn: decision.awaits } : op)
    }
  }
  for (const command of decision.commands) next = apply(next, holder, command)
  return next
}

const apply = (world: World, holder: number, command: Core.Command): World => {
  switch (command._tag) {
    case "Lock":
      return { ...world, pending: [...world.pending, { _tag: "Lock", holder, op: command.op }] }
    case "Post":
      return {
        ...world,
        pending: [...world.pending, { _tag: "Ensure", holder, op: command.op, token: Redacted.value(command.token) }]
      }
    case "Release":
      // Owner-checked: a holder whose lock was taken over releases nothing.
      return world.lock?.holder === holder && world.lock.op === command.op ? { ...world, lock: null } : world
    case "Write":
      return {
        ...world,
        pending: [...world.pending, {
          _tag: "Write",
          holder,
          id: command.id,
          record: Option.match(command.record, { onNone: () => null, onSome: tokenOf }),
          expected: command.expected,
          overwrite: command.overwrite
        }]
      }
    case "Resolve":
      return {
        ...world,
        seq: world.seq + 1,
        ops: world.ops.map((op) =>
          op.holder === holder && (op.waitsOn ?? op.op) === command.op && op.done === undefined
            ? { ...op, done: describeExit(command.exit), end: world.seq }
            : op
        )
      }
    case "Publish":
    case "Arm":
    case "Log":
      return world
  }
}

const describeExit = (exit: Core.Outcome): string => {
  if (Exit.isSuccess(exit)) return exit.value === undefined ? "ok" : `ok:${tokenOf(exit.value)}`
  const failure = Option.getOrUndefined(Cause.findErrorOption(exit.cause))
  if (failure === undefined) return Cause.hasInterruptsOnly(exit.cause) ? "interrupted" : "defect"
  return failure._tag
}

// ---- the server ----

const storeError = new SessionStore.StoreError({ operation: "save", message: "the disk is full" })
const lockError = new SessionStore.StoreError({ operation: "lock", message: "the lock was lost" })
const unavailable = new RefreshError.ServerError({ status: 503, message: "unavailable" })
const lost = new RefreshError.TransportError({ reason: "Network", message: "connection reset" })

/**
 * The server's side of a refresh: a rotation; or a refusal that revokes the
 * family: of a spent token (`spent`, a reuse), or of a family revoked already.
 */
const refreshOnServer = (
  world: World,
  token: string
): { world: World; next: string | undefined; spent: boolean } => {
  const index = familyIndex(token)
  const family = world.families[index]!
  if (family.revoked || family.current !== token) {
    const spent = family.current !== token
    const families = world.families.map((f, i) => i === index ? { ...f, revoked: true } : f)
    return { world: { ...world, families, reuses: world.reuses + (spent ? 1 : 0) }, next: undefined, spent }
  }
  const generation = family.generation + 1
  const next = `${token.split(".")[0]}.${generation}`
  const families = world.families.map((f, i) => i === index ? { current: next, generation, revoked: false } : f)
  return { world: { ...world, families }, next, spent: false }
}

/** A new family for a sign-in: `F<n>.0`. */
const newFamily = (world: World): { world: World; token: string } => {
  const token = `F${world.families.length}.0`
  return {
    world: { ...world, families: [...world.families, { current: token, generation: 0, revoked: false }] },
    token
  }
}

// ---- moves ----

export interface Move {
  readonly label: string
  readonly world: World
}

const startOp = (world: World, holder: number, kind: Op): Move => {
  const state = world.holders[holder]!
  const op = state.nextId
  let next: World = {
    ...withHolder(world, holder, { ...state, nextId: op + 1 }),
    budget: world.budget.map((b, i) => i === holder ? b - 1 : b),
    seq: world.seq + 1,
    ops: [...world.ops, { holder, op, kind, start: world.seq }]
  }
  const now = next.now
  switch (kind) {
    case "read":
      next = dispatch(next, holder, { _tag: "Demand", op, now, kind: "read" })
      break
    case "refresh":
      next = dispatch(next, holder, { _tag: "Demand", op, now, kind: "refresh" })
      break
    case "signOut":
      next = dispatch(next, holder, { _tag: "SignOut", op, now })
      break
    case "signIn": {
      const issued = newFamily(next)
      next = dispatch(issued.world, holder, { _tag: "SignIn", op, now, session: sessionOf(issued.token) })
      break
    }
    case "signInWithToken":
      next = dispatch(next, holder, { _tag: "SignInWithToken", op, now, token: Redacted.make("E.0") })
      break
  }
  return { label: `h${holder} ${kind}#${op}`, world: next }
}

const without = (world: World, index: number): World => ({
  ...world,
  pending: world.pending.filter((_, i) => i !== index)
})

const recordOf = (world: World): SessionStore.Stored => ({
  revision: world.store.revision,
  session: world.store.record === null ? Option.none() : Option.some(sessionOf(world.store.record))
})

/** A write lands: the record moves on, and every holder's feed gets it (the writer's own included). */
const land = (world: World, holder: number, record: string | null): World => {
  const revision = world.store.revision + 1
  return {
    ...world,
    seq: world.seq + 1,
    landings: [...world.landings, { holder, record, seq: world.seq }],
    store: { revision, record },
    pending: [
      ...world.pending,
      ...world.holders.map((_, holder): Pending => ({ _tag: "Feed", holder, revision, record }))
    ]
  }
}

const deliver = (world: World, index: number): ReadonlyArray<Move> => {
  const item = world.pending[index]!
  const rest = without(world, index)
  const now = world.now
  switch (item._tag) {
    case "Lock": {
      if (world.lock !== null) return []
      const granted = { ...rest, lock: { holder: item.holder, op: item.op } }
      const moves: Array<Move> = [{
        label: `h${item.holder} lock#${item.op}`,
        world: dispatch(granted, item.holder, { _tag: "Locked", op: item.op, now, stored: recordOf(world) })
      }]
      if (world.faults > 0) {
        moves.push({
          label: `h${item.holder} lock#${item.op} fails`,
          world: dispatch({ ...rest, faults: world.faults - 1 }, item.holder, {
            _tag: "LockFailed",
            op: item.op,
            now,
            error: lockError
          })
        })
      }
      return moves
    }
    case "Ensure": {
      const owned = world.lock?.holder === item.holder && world.lock.op === item.op
      if (!owned) {
        return [{
          label: `h${item.holder} lease lost#${item.op}`,
          world: dispatch(rest, item.holder, { _tag: "Answered", op: item.op, now, exit: Exit.fail(lockError) })
        }]
      }
      const first = world.firstSends.some((send) => send.token === item.token)
        ? {}
        : { firstSends: [...world.firstSends, { token: item.token, seq: world.seq }], seq: world.seq + 1 }
      const moves: Array<Move> = [{
        label: `h${item.holder} send#${item.op}`,
        world: {
          ...rest,
          ...first,
          pending: [...rest.pending, {
            ...item,
            _tag: "Send",
            excused: item.token === "E.0" && (!world.store.record?.startsWith("E.") || signedOutSince(world, "E.0"))
          }]
        }
      }]
      // A holder stalled between taking the lock and checking its lease: another may take the lock over.
      if (world.faults > 0) {
        moves.push({
          label: `h${item.holder} stalls: lock taken over`,
          world: { ...world, lock: null, faults: world.faults - 1 }
        })
      }
      return moves
    }
    case "Send": {
      // Sending a token the server already saw is a reuse: the one promise broken, unless
      // it is the environment's token sent by a start that could not know (nobody stored its family).
      const served = refreshOnServer(rest, item.token)
      const moves: Array<Move> = []
      if (served.next === undefined) {
        // The environment's token again, once the store holds a sign-out or another family (the
        // user signed out, and a start sent it again): the caller's doing, as docs/00 says.
        const exempt = !served.spent || world.lost.includes(item.token) || item.excused
        const reused = {
          ...served.world,
          violation: served.world.violation ?? (exempt ? undefined : `${item.token} sent twice (h${item.holder})`)
        }
        moves.push({
          label: `h${item.holder} answer#${item.op}: reuse`,
          world: dispatch(reused, item.holder, {
            _tag: "Answered",
            op: item.op,
            now,
            exit: Exit.fail(new RefreshError.TokenRejectedError({ status: 400, message: "Already Used" }))
          })
        })
        return moves
      }
      moves.push({
        label: `h${item.holder} answer#${item.op}: ${served.next}`,
        world: dispatch(served.world, item.holder, {
          _tag: "Answered",
          op: item.op,
          now,
          exit: Exit.succeed(sessionOf(served.next))
        })
      })
      moves.push({
        label: `h${item.holder} answer#${item.op}: 503`,
        world: dispatch(rest, item.holder, { _tag: "Answered", op: item.op, now, exit: Exit.fail(unavailable) })
      })
      if (world.faults > 0) {
        moves.push({
          label: `h${item.holder} answer#${item.op}: lost after ${served.next}`,
          world: dispatch(
            { ...served.world, faults: world.faults - 1, lost: [...world.lost, item.token] },
            item.holder,
            {
              _tag: "Answered",
              op: item.op,
              now,
              exit: Exit.fail(lost)
            }
          )
        })
      }
      return moves
    }
    case "Write": {
      const moves: Array<Move> = []
      const fits = item.overwrite || world.store.revision === item.expected
      if (fits) {
        const landed = land(rest, item.holder, item.record)
        moves.push({
          label: `h${item.holder} write#${item.id} ${item.record ?? "sign-out"} lands`,
          world: dispatch(landed, item.holder, {
            _tag: "Wrote",
            id: item.id,
            now,
            result: { _tag: "Written", stored: recordOf(landed) }
          })
        })
      } else {
        moves.push({
          label: `h${item.holder} write#${item.id} conflicts`,
          world: dispatch(rest, item.holder, {
            _tag: "Wrote",
            id: item.id,
            now,
            result: { _tag: "Conflict", stored: Option.some(recordOf(world)) }
          })
        })
      }
      if (world.faults > 0) {
        moves.push({
          label: `h${item.holder} write#${item.id} fails`,
          world: dispatch({ ...rest, faults: world.faults - 1 }, item.holder, {
            _tag: "Wrote",
            id: item.id,
            now,
            result: { _tag: "Failed", error: storeError }
          })
        })
      }
      return moves
    }
    case "Feed": {
      const stored: SessionStore.Stored = {
        revision: item.revision,
        session: item.record === null ? Option.none() : Option.some(sessionOf(item.record))
      }
      return [{
        label: `h${item.holder} feed r${item.revision}`,
        world: dispatch(rest, item.holder, { _tag: "Changed", now, stored })
      }]
    }
  }
}

/** A sign-out was asked for after `token` was first sent (a start after it may send the token again). */
const signedOutSince = (world: World, token: string): boolean => {
  const first = world.firstSends.find((send) => send.token === token)
  return first !== undefined && world.ops.some((op) => op.kind === "signOut" && op.start > first.seq)
}

/** The next time a holder waits for (a save to retry, a lock to let go past the bound), if any. */
const nextTime = (world: World): number | undefined => {
  const times = world.holders.map((state) => Core.nextWake(state, config)).filter(
    (at): at is number => at !== undefined && at > world.now
  )
  return times.length === 0 ? undefined : Math.min(...times)
}

/** Every way `world` can move on. */
export const successors = (world: World, scope: Scope): ReadonlyArray<Move> => {
  if (world.violation !== undefined) return []
  const moves: Array<Move> = []
  world.holders.forEach((state, holder) => {
    if (world.budget[holder]! === 0) return
    for (const kind of scope.holders[holder]!.ops) {
      // The start docs/00 recommends: the environment's token only when no session is held.
      if (kind === "signInWithToken" && Core.sessionOf(state) !== undefined) continue
      moves.push(startOp(world, holder, kind))
    }
  })
  // A holder's change feed brings records in the order they were written: only its first is next.
  const feedsSeen = new Set<number>()
  world.pending.forEach((item, index) => {
    if (item._tag === "Feed") {
      if (feedsSeen.has(item.holder)) return
      feedsSeen.add(item.holder)
    }
    moves.push(...deliver(world, index))
  })
  const at = nextTime(world)
  if (at !== undefined) {
    let ticked: World = { ...world, now: at }
    ticked.holders.forEach((_, holder) => {
      ticked = dispatch(ticked, holder, { _tag: "Tick", now: ticked.now })
    })
    moves.push({ label: "time passes", world: ticked })
  }
  return moves
}

// ---- invariants ----

/** Checked in every state. */
export const always = (world: World): string | undefined => {
  if (world.violation !== undefined) return world.violation
  // The lock is held by one holder at a time: two flights past the lock means a takeover,
  // and then the one that lost it must not be sending.
  return undefined
}

/**
 * Checked when nothing is left to do (no operation to start, nothing
 * pending): every operation ended, every holder holds what the store holds,
 * a completed sign-out with no later sign-in left a tombstone, and the live
 * family's newest token is held or stored.
 */
export const atRest = (world: World): string | undefined => {
  const open = world.ops.filter((op) => op.done === undefined)
  if (open.length > 0) {
    return `operations never ended: ${open.map((op) => `h${op.holder} ${op.kind}#${op.op}`).join(", ")}`
  }
  const defects = world.ops.filter((op) => op.done === "defect")
  if (defects.length > 0) return `an operation died: ${defects.map((op) => `h${op.holder} ${op.kind}`).join(", ")}`
  for (const [holder, state] of world.holders.entries()) {
    if (state.owed !== undefined || state.flight !== undefined) return `h${holder} still has work at rest`
    const held = Core.sessionOf(state)
    const heldToken = held === undefined ? null : tokenOf(held)
    if (heldToken !== world.store.record) {
      return `h${holder} holds ${heldToken ?? "nothing"}, the store ${world.store.record ?? "nothing"}`
    }
  }
  if (world.store.record !== null) {
    const family = world.families[familyIndex(world.store.record)]!
    // A newest token whose answer was lost is gone with it: the documented loss, not a dropped rotation.
    if (family.current !== world.store.record && !world.lost.some((token) => following(token) === family.current)) {
      return `rotation dropped: the store holds ${world.store.record}, the server's newest is ${family.current}`
    }
  }
  return signInsAndOuts(world)
}

const familyOfToken = (token: string) => token.split(".")[0]!

/** The token a rotation of `token` gives. */
const following = (token: string) => `${familyOfToken(token)}.${Number(token.split(".")[1]) + 1}`

/**
 * When a sign-in or sign-out took effect for everyone: when its call ended,
 * or, if its write had failed then, when that write landed later (a sign-in
 * whose token was spent is kept and saved; a sign-out is tried again). A
 * sign-out whose write never landed (another holder wrote first, and won)
 * took no effect: `undefined`.
 */
const effectiveEnd = (world: World, op: OpRecord): number | undefined => {
  if (op.end === undefined) return undefined
  if (op.kind === "signOut") {
    if (op.done === "ok") return op.end
    // Its write is retried until it lands: the last tombstone of this holder's
    // since it started is the retry's (an earlier one may be an earlier sign-out's).
    return world.landings.filter((landing) =>
      landing.holder === op.holder && landing.record === null && landing.seq > op.start
    ).at(-1)?.seq
  }
  if ((op.kind !== "signIn" && op.kind !== "signInWithToken") || !op.done!.startsWith("ok:")) return undefined
  const token = op.done!.slice(3)
  const landed = world.landings.find((landing) => landing.record === token && landing.seq > op.start)
  return landed === undefined ? op.end : Math.max(op.end, landed.seq)
}

/**
 * The last of the sign-ins and sign-outs, when nothing overlapped it, decides
 * what everyone ends on: a sign-out leaves a tombstone; a sign-in, its family.
 */
const signInsAndOuts = (world: World): string | undefined => {
  const changes = world.ops.flatMap((op) => {
    const end = effectiveEnd(world, op)
    return end === undefined ? [] : [{ op, end }]
  })
  const last = changes.reduce<typeof changes[number] | undefined>(
    (latest, change) => latest === undefined || change.end > latest.end ? change : latest,
    undefined
  )
  if (last === undefined) return undefined
  // Another sign-in or sign-out (whatever became of it) that overlaps the last one: either order is right.
  const overlaps = world.ops.some((op) =>
    op !== last.op && (op.kind === "signIn" || op.kind === "signInWithToken" || op.kind === "signOut") &&
    op.start < last.end && (effectiveEnd(world, op) ?? op.end ?? Infinity) > last.op.start
  )
  if (overlaps) return undefined
  const { op } = last
  if (op.kind === "signOut") {
    return world.store.record === null
      ? undefined
      : `a sign-out that ended (h${op.holder}#${op.op}) did not stick: the store holds ${world.store.record}`
  }
  const family = familyOfToken(op.done!.slice(3))
  // A family whose newest token was lost in transit is lost with it (strict server): the documented loss.
  const doomed = world.lost.some((token) => familyOfToken(token) === family)
  if (!doomed && (world.store.record === null || familyOfToken(world.store.record) !== family)) {
    return `the last sign-in (h${op.holder}#${op.op}, ${family}) did not win: the store holds ${
      world.store.record ?? "nothing"
    }`
  }
  return undefined
}

/** A state's identity for the visited set: ids and sessions by name, everything that decides what comes next. */
export const keyOf = (world: World): string =>
  JSON.stringify(world, (_key, value) =>
    value instanceof Session.Session
      ? tokenOf(value)
      : Redacted.isRedacted(value)
      ? Redacted.value(value as Redacted.Redacted<string>)
      : value)

export interface Report {
  readonly states: number
  readonly atRest: number
  readonly violation:
    | { readonly message: string; readonly trace: ReadonlyArray<string>; readonly world: World }
    | undefined
}

// A 53-bit hash of a state's key (cyrb53): the visited set holds numbers, not the keys themselves.
const hash = (text: string): number => {
  let h1 = 0xdeadbeef
  let h2 = 0x41c6ce57
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    h1 = Math.imul(h1 ^ c, 2654435761)
    h2 = Math.imul(h2 ^ c, 1597334677)
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909)
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909)
  return 4294967296 * (2097151 & h2) + (h1 >>> 0)
}

interface Trace {
  readonly label: string
  readonly parent: Trace | undefined
}

const steps = (trace: Trace | undefined): ReadonlyArray<string> => {
  const labels: Array<string> = []
  for (let at = trace; at !== undefined; at = at.parent) labels.push(at.label)
  return labels.reverse()
}

/**
 * Visits every state reachable in `scope` (depth first, each state once), checking the invariants.
 * Back to the event loop every 2,000 states: a vitest worker that does not answer its
 * heartbeat for a minute fails the run, and on a loaded machine a scope takes minutes.
 */
export const explore = async (scope: Scope, limit = 3_000_000): Promise<Report> => {
  const visited = new Set<number>()
  const stack: Array<{ world: World; trace: Trace | undefined }> = [{ world: initialWorld(scope), trace: undefined }]
  let rest = 0
  while (stack.length > 0) {
    const { trace, world } = stack.pop()!
    const key = hash(keyOf(world))
    if (visited.has(key)) continue
    visited.add(key)
    if (visited.size % 2_000 === 0) await new Promise((resolve) => setImmediate(resolve))
    if (visited.size > limit) throw new Error(`more than ${limit} states: shrink the scope`)
    const broken = always(world)
    if (broken !== undefined) {
      return { states: visited.size, atRest: rest, violation: { message: broken, trace: steps(trace), world } }
    }
    const moves = successors(world, scope)
    if (moves.length === 0) {
      rest++
      const unsettled = atRest(world)
      if (unsettled !== undefined) {
        return { states: visited.size, atRest: rest, violation: { message: unsettled, trace: steps(trace), world } }
      }
      continue
    }
    for (const move of moves) stack.push({ world: move.world, trace: { label: move.label, parent: trace } })
  }
  return { states: visited.size, atRest: rest, violation: undefined }
}

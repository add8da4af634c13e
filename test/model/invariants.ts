/**
 * What must hold after every schedule, checked on the record a `World` kept.
 * Each check names the promise it guards; a violation says what broke, with
 * the tokens involved (test tokens, never real ones).
 */
import { Cause, Exit, Option, Redacted } from "effect"
import type { Session } from "moon-refresh"
import type { Family, Grant } from "./server.js"
import type { Cell, Holder, OpRecord, PostRecord, World } from "./world.js"
import { describe, opBound } from "./world.js"

export type Kind =
  | "spent-token-sent"
  | "sign-out-undone"
  | "holders-disagree"
  | "last-sign-in-lost"
  | "rotation-dropped"
  | "op-never-ends"
  | "op-too-slow"
  | "op-defect"
  | "op-interrupted"
  | "refresh-installed-after-sign-out"
  | "sign-in-took-own-refresh"
  | "stale-store-error"
  | "early-refresh"
  | "foreign-error"
  | "pool-lost-session"
  | "livelock"

export interface Violation {
  readonly kind: Kind
  readonly message: string
  /** What the survey tells cases of one kind apart by (the circumstance, not the tokens). */
  readonly detail?: string | undefined
}

const signIns = new Set(["signIn", "signInWithToken", "startEnv"])

const tokenOf = (session: Option.Option<Session.Session>): string | undefined =>
  Option.getOrUndefined(Option.map(session, (s) => Redacted.value(s.refreshToken)))

const succeeded = (op: OpRecord) => op.exit !== undefined && Exit.isSuccess(op.exit)

const failureOf = (op: OpRecord): unknown =>
  op.exit !== undefined && Exit.isFailure(op.exit)
    ? Option.getOrUndefined(Cause.findErrorOption(op.exit.cause))
    : undefined

const overlaps = (a: OpRecord, b: OpRecord) =>
  a !== b && a.startSeq < (b.endSeq ?? Infinity) && b.startSeq < (a.endSeq ?? Infinity)

/** The family a successful sign-in brought in: the session it returned, or the one it signed in with. */
const familyIn = (world: World, op: OpRecord): Family | undefined => {
  // A sign-in that did not return but landed (`landedAnyway`): the family it signed in with.
  if (op.kind === "signIn" || !succeeded(op)) return op.family
  const value = op.exit !== undefined && Exit.isSuccess(op.exit) ? op.exit.value : undefined
  if (value === undefined) return undefined
  return world.server.grantOf(Redacted.value((value as Session.Session).refreshToken))?.family
}

/** Sign-ins that took effect and sign-outs (a failed one is retried in the background) on a cell. */
// A sign-in whose save timed out but reached the store anyway (a slow store),
// or whose caller was interrupted by closing its manager once its token was
// sent (the save runs on after the close), took effect: the holders follow
// the store, which holds its session.
const landedAnyway = (world: World, cell: Cell, op: OpRecord): boolean =>
  signIns.has(op.kind) && op.exit !== undefined && !succeeded(op) && op.family !== undefined &&
  cell.writes.some((w) =>
    w.holder === op.holder.name && w.seq > op.startSeq &&
    world.server.grantOf(tokenOf(w.session) ?? "")?.family === op.family
  )

// A signOut whose caller was interrupted by closing its manager took effect
// all the same once its tombstone landed (the write runs on after the close):
// the refresh it discarded stays discarded.
const tombstoneLanded = (cell: Cell, op: OpRecord): boolean =>
  op.kind === "signOut" &&
  cell.writes.some((w) => w.holder === op.holder.name && w.seq > op.startSeq && Option.isNone(w.session))

const sessionChanges = (world: World, cell: Cell) =>
  world.ops.filter((op) =>
    op.holder.cell === cell && (
      (signIns.has(op.kind) && succeeded(op) && familyIn(world, op) !== undefined) ||
      landedAnyway(world, cell, op) ||
      (op.kind === "signOut" &&
        (succeeded(op) || (op.exit !== undefined && !op.holder.closed) || tombstoneLanded(cell, op)))
    )
  )

/** Whether `holder`'s session, as its events tell, was the one with `token` just before `seq`. */
const heldBefore = (holder: Holder, token: string, seq: number): boolean => {
  let held = false
  for (const { event, seq: at } of holder.events) {
    if (at >= seq) break
    if (event._tag === "SignedIn" || event._tag === "Refreshed") {
      held = Redacted.value(event.session.refreshToken) === token
    } else if (event._tag === "SignedOut") held = false
  }
  return held
}

// Whether the rotation that spent a token is still on its way to the store: the
// holder that received it could not save it (the store failed every write of it),
// still holds it, and no other holder could have known. A holder that then
// reads the store sees the spent token; no design avoids that once the store
// stays down past the lock's lease, so it is not counted. A rotation a holder
// dropped (a sign-out discarded it) is counted.
const unsavable = (world: World, successor: Grant, seq: number): boolean => {
  const token = successor.refreshToken
  const landed = world.cells.some((cell) => cell.writes.some((w) => w.seq < seq && tokenOf(w.session) === token))
  if (landed || !world.failedWrites.some((w) => w.token === token && w.seq < seq)) return false
  return world.holders.some((holder) => heldBefore(holder, token, seq))
}

/** The managers' `saveBound`: half their default `lockTimeout` (60 s), at most 30 s. */
const saveBound = 30_000

// Once a holder sent the store's token, it keeps the store's lock until the
// store holds something newer (core.ts, "The lock and a spent token"), so no
// other holder reads the spent token or writes over what the answer brings.
// It lets the lock go earlier by design in two cases: on a store it was told
// no other process holds (`shared: false`: its lock goes once the callers have
// their answer, as nothing else could read the store), and past `saveBound`
// after the answer while its save keeps failing (or once the lease ran out and
// another holder took the lock over). Several holders of an unshared store, each
// through a store of its own, are processes the store was told do not exist;
// what the lock promises them ends when the lock goes. This gives the time
// (seq) the holder that sent `post` lost the lock so, before `storedSeq` (the
// store holding something newer), if it did; undefined otherwise.
const lockLetGo = (world: World, post: PostRecord, storedSeq: number | undefined): number | undefined => {
  const lock = world.locks.find((l) =>
    l.holder === post.holder && l.grantSeq < post.seq && (l.endSeq === undefined || l.endSeq > post.seq)
  )
  if (lock?.endSeq === undefined || lock.endSeq > (storedSeq ?? Infinity)) return undefined
  const unshared = world.config.mode === "managers" && !world.config.shared
  const pastBound = post.answeredAt !== undefined && lock.endAt! - post.answeredAt >= saveBound
  return unshared || pastBound || lock.lost ? lock.endSeq : undefined
}

// A spent token read from the store by another holder after the holder that
// spent it lost the lock before the store held its successor (above).
const readAfterLockWent = (world: World, grant: Grant, post: PostRecord): boolean => {
  const spent = world.posts.find((p) => p.grant !== undefined && p.grant === grant.successor)
  if (spent === undefined || spent.holder === post.holder) return false
  const cell = world.cells.find((c) => c.holders.some((h) => h.name === spent.holder))
  const storedPast = cell?.writes.find((w) => w.seq > spent.seq)?.seq
  const letGo = lockLetGo(world, spent, storedPast)
  return letGo !== undefined && post.seq > letGo
}

// No spent token is sent. Allowed: a token whose rotation the client never saw
// (the answer was lost, so the retry resends it), one whose rotation could not
// be saved yet (above), and the environment token
// once a sign-out was called or stored, or another family's session stored,
// since its first send: a caller who signed out and starts again from a spent
// environment token gets the rejection it asked for. A sign-out called after
// the sign-in that first sent it was asked for, but before that sign-in had its
// turn (the lock) and sent it, counts too: that sign-in still sends the token
// and returns its session, unkept (as any sign-in overtaken by a later sign-out
// does, docs/05), so the token was spent by the user's own sign-in, asked for
// before the sign-out, as when the send came first.
const spentTokens = (world: World, out: Array<Violation>) => {
  const envFirst = world.posts.find((post) => post.token === world.env.refreshToken)
  // The call that sent it first (a start from the environment; joined calls share its send).
  const envSpender = envFirst === undefined ?
    undefined :
    world.ops.find((op) =>
      op.holder.name === envFirst.holder && op.family === world.env.family &&
      op.startSeq < envFirst.seq && (op.endSeq === undefined || op.endSeq > envFirst.seq)
    )
  const envAsked = envSpender?.startSeq ?? envFirst?.seq
  for (const { grant, post } of world.spentSends) {
    if (grant.successor !== undefined && !grant.successor.delivered) continue
    if (grant.successor !== undefined && unsavable(world, grant.successor, post.seq)) continue
    if (readAfterLockWent(world, grant, post)) continue
    if (grant === world.env && envFirst !== undefined && envAsked !== undefined) {
      const signedOut = world.ops.some((op) =>
        op.kind === "signOut" && op.startSeq > envAsked && op.startSeq < post.seq
      )
      const superseded = signedOut ||
        world.cells.some((cell) =>
          cell.writes.some((w) =>
            w.seq > envFirst.seq && w.seq < post.seq &&
            (Option.isNone(w.session) || world.server.grantOf(tokenOf(w.session)!)?.family !== world.env.family)
          )
        )
      if (superseded) continue
    }
    const receiver = world.posts.find((p) => p.grant !== undefined && p.grant === grant.successor)?.holder
    out.push({
      kind: "spent-token-sent",
      detail: grant === world.env
        ? "the environment token"
        : receiver === post.holder
        ? "by the holder that received its successor"
        : "its successor received by another holder",
      message: `${post.holder} sent ${post.token}, which the server had already rotated to ${
        grant.successor?.refreshToken ?? "another token"
      } (a reuse: family ${grant.family.id} revoked)`
    })
  }
}

// Every operation ends, within the bound, with its value or a typed error.
const operationsEnd = (world: World, out: Array<Violation>) => {
  for (const op of world.ops) {
    const name = `${op.holder.name}.${op.kind} (op ${op.id}, started at ${op.startAt / 1000} s)`
    if (op.exit === undefined) {
      out.push({
        kind: "op-never-ends",
        message: `${name} never ended${world.livelock === undefined ? "" : `: ${world.livelock}`}`
      })
      continue
    }
    if (op.endAt! - op.startAt > opBound) {
      out.push({ kind: "op-too-slow", message: `${name} took ${(op.endAt! - op.startAt) / 1000} s` })
    }
    if (Exit.isFailure(op.exit)) {
      if (Cause.hasDies(op.exit.cause)) {
        out.push({ kind: "op-defect", message: `${name} died: ${Cause.pretty(op.exit.cause).split("\n")[0]}` })
      } else if (Cause.hasInterruptsOnly(op.exit.cause) && !op.holder.closed) {
        out.push({ kind: "op-interrupted", message: `${name} was interrupted, though nobody interrupted it` })
      }
    }
  }
}

// A sign-out sticks until a later sign-in: every holder signed out, a tombstone stored.
const signOutsStick = (
  world: World,
  cell: Cell,
  held: Map<Holder, Option.Option<Session.Session>>,
  out: Array<Violation>
) => {
  const changes = sessionChanges(world, cell)
  for (const signOut of changes.filter((op) => op.kind === "signOut")) {
    if (changes.some((op) => op.kind !== "signOut" && (op.endSeq ?? Infinity) > signOut.startSeq)) continue
    const outcome = succeeded(signOut) ? "returned" : "failed (so its tombstone is retried)"
    const detail = succeeded(signOut) ? "after a sign-out that returned" : "after a sign-out that failed"
    if (Option.isSome(cell.session)) {
      out.push({
        kind: "sign-out-undone",
        detail,
        message: `${signOut.holder.name}.signOut (op ${signOut.id}) ${outcome}, no sign-in came later, ` +
          `yet the store holds ${describe(cell.session)}`
      })
    }
    for (const [holder, session] of held) {
      if (holder.cell === cell && Option.isSome(session)) {
        out.push({
          kind: "sign-out-undone",
          detail,
          message: `${signOut.holder.name}.signOut (op ${signOut.id}) ${outcome}, no sign-in came later, ` +
            `yet ${holder.name} holds ${describe(session)}`
        })
      }
    }
    return
  }
}

// docs/05, "When the store fails": a sign-out whose write failed is retried in
// the background over whatever is stored, so that a holder that did not hear of
// it (the store was down) and refreshed meanwhile is signed out too. No holder
// can tell such a refresh from a sign-in on another holder, hence the price it
// states: "a sign-in on *another* holder that lands before the retry is signed
// out as well". `signIn` is so signed out when such a sign-out, called on
// another holder before it started, failed, and its tombstone landed after.
const signedOutByRetry = (world: World, cell: Cell, signIn: OpRecord): boolean =>
  world.ops.some((op) =>
    op.holder.cell === cell && op.kind === "signOut" && op.holder !== signIn.holder &&
    op.exit !== undefined && Exit.isFailure(op.exit) && (op.endSeq ?? Infinity) < signIn.startSeq &&
    cell.writes.some((w) => w.holder === op.holder.name && Option.isNone(w.session) && w.seq > signIn.startSeq)
  )

// A sign-in from a refresh token (`op`) whose holder lost the lock (above) before
// its session was stored: another holder, which could not know of it, may then
// write (refresh the family it replaced), and the holder takes what that holder
// wrote (docs/05, "When the store fails": retried "until it succeeds, the session
// changes, or another holder wrote (then it takes what that holder wrote)").
const signInLockWent = (world: World, cell: Cell, op: OpRecord): boolean => {
  if (op.kind !== "signInWithToken" && op.kind !== "startEnv") return false
  const family = familyIn(world, op)
  const sent = family?.grants[0]?.refreshToken
  const post = world.posts.find((p) => p.holder === op.holder.name && p.token === sent && p.seq > op.startSeq)
  if (family === undefined || post === undefined) return false
  const tokens = new Set(family.grants.map((g) => g.refreshToken))
  const stored = cell.writes.find((w) => w.seq > post.seq && tokens.has(tokenOf(w.session) ?? ""))?.seq
  const letGo = lockLetGo(world, post, stored)
  return letGo !== undefined &&
    cell.writes.some((w) => w.holder !== op.holder.name && w.seq > letGo && w.seq < (stored ?? Infinity))
}

// Every holder holds what the store holds; the last sign-in (with nothing overlapping it) wins.
const agreement = (
  world: World,
  cell: Cell,
  held: Map<Holder, Option.Option<Session.Session>>,
  out: Array<Violation>
) => {
  const failedSignOut = world.ops.some((op) =>
    op.holder.cell === cell && op.kind === "signOut" && op.exit !== undefined && Exit.isFailure(op.exit)
  )
  for (const [holder, session] of held) {
    if (holder.cell === cell && tokenOf(session) !== tokenOf(cell.session)) {
      out.push({
        kind: "holders-disagree",
        detail: failedSignOut ? "after a sign-out that failed" : undefined,
        message: `at rest, ${holder.name} holds ${describe(session)} but the store holds ${describe(cell.session)}`
      })
    }
  }
  const changes = sessionChanges(world, cell)
  const ended = world.ops.filter((op) =>
    op.holder.cell === cell && (signIns.has(op.kind) || op.kind === "signOut") && op.endSeq !== undefined
  )
  const last = ended.reduce<OpRecord | undefined>(
    (a, b) => (a === undefined || b.endSeq! > a.endSeq! ? b : a),
    undefined
  )
  if (last === undefined || !changes.includes(last) || last.kind === "signOut") return
  if (
    world.ops.some((op) => op.holder.cell === cell && op.kind !== "close" && signIns.has(op.kind) && overlaps(op, last))
  ) {
    return
  }
  if (world.ops.some((op) => op.holder.cell === cell && op.kind === "signOut" && overlaps(op, last))) return
  if (signedOutByRetry(world, cell, last) || signInLockWent(world, cell, last)) return
  const family = familyIn(world, last)!
  if (family.revoked !== undefined) return
  const newest = world.server.newest(family)
  if (!newest.delivered) return
  if (tokenOf(cell.session) !== newest.refreshToken) {
    out.push({
      kind: "last-sign-in-lost",
      detail: `the last operation a ${last.kind}`,
      message: `the last operation was ${last.holder.name}.${last.kind} (op ${last.id}) of family ${family.id}, ` +
        `whose newest token is ${newest.refreshToken}, but the store holds ${describe(cell.session)}`
    })
  }
}

// No rotation dropped: the store never rests on a spent token whose successor a
// holder received, and the live family's newest session is held or stored.
const rotations = (
  world: World,
  cell: Cell,
  held: Map<Holder, Option.Option<Session.Session>>,
  out: Array<Violation>
) => {
  const stored = tokenOf(cell.session)
  const grant = stored === undefined ? undefined : world.server.grantOf(stored)
  if (grant?.successor !== undefined && grant.successor.delivered) {
    out.push({
      kind: "rotation-dropped",
      message: `at rest, the store holds ${stored}, spent: its successor ${grant.successor.refreshToken} ` +
        `was handed to a holder and dropped`
    })
    return
  }
  const changes = sessionChanges(world, cell)
  const last = changes.reduce<OpRecord | undefined>(
    (a, b) => (a === undefined || b.startSeq > a.startSeq ? b : a),
    undefined
  )
  let family: Family | undefined
  if (last === undefined) {
    family = cell.writes[0]?.holder === "setup"
      ? world.server.grantOf(tokenOf(cell.writes[0]!.session)!)?.family
      : undefined
  } else if (
    last.kind !== "signOut" && !changes.some((op) => overlaps(op, last)) && !signedOutByRetry(world, cell, last) &&
    !signInLockWent(world, cell, last)
  ) {
    family = familyIn(world, last)
  }
  if (family === undefined || family.revoked !== undefined) return
  const newest: Grant = world.server.newest(family)
  if (!newest.delivered || newest.index === 0) return
  const kept = stored === newest.refreshToken ||
    [...held].some(([holder, session]) => holder.cell === cell && tokenOf(session) === newest.refreshToken)
  if (!kept) {
    out.push({
      kind: "rotation-dropped",
      message: `family ${family.id}'s newest session ${newest.refreshToken} (issued at ${newest.issuedAt / 1000} s) ` +
        `is neither held nor stored (the store holds ${describe(cell.session)})`
    })
  }
}

// A refresh in flight when signOut starts is discarded: never installed, never saved.
// (One answered before: its write may be out already, which no holder can call
// back; the tombstone is written after it, and signOutsStick checks the end.)
const signOutDiscards = (world: World, out: Array<Violation>) => {
  for (const signOut of world.ops.filter((op) => op.kind === "signOut")) {
    const holder = signOut.holder
    const earlier = world.posts.filter((p) =>
      p.holder === holder.name && p.seq < signOut.startSeq && p.grant &&
      (p.answeredSeq === undefined || p.answeredSeq > signOut.startSeq)
    )
    for (const post of earlier) {
      const token = post.grant!.refreshToken
      const write = holder.cell.writes.find((w) =>
        w.holder === holder.name && w.seq > signOut.startSeq && tokenOf(w.session) === token
      )
      const signedOutAt = holder.events.find((e) =>
        e.seq > signOut.startSeq && e.event._tag === "SignedOut" && e.event.reason._tag === "UserSignedOut"
      )?.seq
      const event = signedOutAt === undefined ?
        undefined :
        holder.events.find((e) =>
          e.seq > signedOutAt && (e.event._tag === "Refreshed" || e.event._tag === "SignedIn") &&
          Redacted.value(e.event.session.refreshToken) === token
        )
      if (write !== undefined || event !== undefined) {
        out.push({
          kind: "refresh-installed-after-sign-out",
          message: `${holder.name}'s refresh (POST of ${post.token}) was in flight when ${holder.name}.signOut ` +
            `(op ${signOut.id}) started, yet its answer ${token} was ${
              event !== undefined
                ? "installed (a Refreshed event after SignedOut(UserSignedOut))"
                : "written to the store"
            }`
        })
      }
    }
  }
}

// signInWithRefreshToken(T) returns T's session, or one another holder wrote.
const signInsTakeOthers = (world: World, out: Array<Violation>) => {
  for (const op of world.ops) {
    if (!(op.kind === "signInWithToken" || op.kind === "startEnv") || !succeeded(op)) continue
    const family = familyIn(world, op)
    if (family === undefined || family === op.family) continue
    const token = Redacted.value((op.exit as Exit.Success<Session.Session, unknown>).value.refreshToken)
    const byOther = op.holder.cell.writes.some((w) => w.holder !== op.holder.name && tokenOf(w.session) === token)
    if (!byOther) {
      out.push({
        kind: "sign-in-took-own-refresh",
        message: `${op.holder.name}.${op.kind} (op ${op.id}) of family ${op.family?.id} returned ${token} ` +
          `(family ${family.id}), which no other holder wrote: its own token was never sent`
      })
    }
  }
}

// A store failure is not a refresh failure: a StoreError comes from a store
// operation of that call's time, never from a cooldown the store built up.
const storeErrorsAreFresh = (world: World, out: Array<Violation>) => {
  for (const op of world.ops) {
    const error = failureOf(op) as { readonly _tag?: string; readonly operation?: string } | undefined
    if (error?._tag !== "StoreError" || op.endSeq === undefined) continue
    // A pool full of sessions all in use: its bounded wait for room, not the store.
    if (error.operation === "capacity") continue
    const touched = world.storeOps.some((s) =>
      s.holder === op.holder.name && s.issueSeq <= op.endSeq! && (s.doneSeq ?? Infinity) >= op.startSeq
    )
    if (!touched) {
      out.push({
        kind: "stale-store-error",
        message: `${op.holder.name}.${op.kind} (op ${op.id}) failed with a StoreError without asking the store anything`
      })
    }
  }
}

// In the quiet drain, a session from a refresh is not refreshed again in the
// first quarter of its life (holders sharing a store refresh once per expiry).
// Managers only: a pool drops idle keys, and one loaded again from its store
// cannot know when its session was issued.
const earlyRefreshes = (world: World, out: Array<Violation>) => {
  if (world.config.mode === "pool") return
  const busy = new Set(
    world.ops.filter((op) =>
      op.startAt <= world.drainStart && (op.endSeq === undefined || op.endAt! >= world.drainStart)
    )
      .map((op) => op.holder.name)
  )
  for (const post of world.posts) {
    if (!post.inDrain || busy.has(post.holder)) continue
    const grant = world.server.grantOf(post.token)
    if (grant === undefined || !grant.byRefresh || grant.issuedAt < world.drainStart) continue
    const quarter = grant.issuedAt + (grant.expiresAt - grant.issuedAt) / 4
    if (post.at < quarter) {
      out.push({
        kind: "early-refresh",
        message: `with nothing else going on, ${post.holder} refreshed ${post.token} ${
          (post.at - grant.issuedAt) / 1000
        } s after it was issued (it lives ${(grant.expiresAt - grant.issuedAt) / 1000} s)`
      })
    }
  }
}

// One key's refresh never fails with another key's error.
const ownErrors = (world: World, out: Array<Violation>) => {
  for (const op of world.ops) {
    const error = failureOf(op)
    if (typeof error !== "object" || error === null) continue
    // Effect 4 hands the error on as it is (no proxy for a span): look it up as the client failed with it.
    const owner = world.errorKeys.get(error)
    if (owner !== undefined && owner !== op.holder.name) {
      out.push({
        kind: "foreign-error",
        message: `${op.holder.name}.${op.kind} (op ${op.id}) failed with the error of ${owner}'s request`
      })
    }
  }
}

// A pool key whose store holds its session reads it: no "no session" while the
// store holds one and nothing (a sign-out, a rejected token) took it away.
const poolKeepsSessions = (world: World, out: Array<Violation>) => {
  if (world.config.mode !== "pool") return
  for (const op of world.ops) {
    if (!["accessToken", "session", "refresh"].includes(op.kind) || op.endSeq === undefined) continue
    const error = failureOf(op) as { readonly _tag?: string } | undefined
    if (error?._tag !== "NoSessionError") continue
    const cell = op.holder.cell
    const before = cell.writes.filter((w) => w.seq < op.startSeq).at(-1)
    if (before === undefined || Option.isNone(before.session)) continue
    const taken = world.ops.some((o) => o.holder === op.holder && o.kind === "signOut" && o.startSeq < op.endSeq!) ||
      world.posts.some((p) => p.holder === op.holder.name && p.outcome === "rejected" && p.seq < op.endSeq!) ||
      cell.writes.some((w) => w.seq > before.seq && w.seq < op.endSeq! && Option.isNone(w.session))
    if (!taken) {
      out.push({
        kind: "pool-lost-session",
        message: `${op.holder.name}.${op.kind} (op ${op.id}) failed with "no session" while the store held ${
          describe(before.session)
        }`
      })
    }
  }
}

/** Every violation of the run, in the order the checks run. */
export const check = (world: World): Array<Violation> => {
  const out: Array<Violation> = []
  operationsEnd(world, out)
  spentTokens(world, out)
  signOutDiscards(world, out)
  signInsTakeOthers(world, out)
  storeErrorsAreFresh(world, out)
  ownErrors(world, out)
  poolKeepsSessions(world, out)
  // A run that never comes to rest is a livelock, whether its operations ended
  // or not: a timer that fires again and again at one instant keeps time from
  // moving (in real time, a CPU spinning until something else ends it; Effect
  // 3's harness hung there), and so do fiber tasks that never wait (a timer
  // armed for a time already past fires on the scheduler's next turn) or a
  // drain that never runs dry.
  if (world.livelock !== undefined) {
    out.push({
      kind: "livelock",
      detail: world.stuckInTime ? "timers" : "tasks",
      message: `the run never came to rest: ${world.livelock}`
    })
    return out
  }
  const held = world.snapshot()
  for (const cell of world.cells) {
    if (cell.holders.length === 0) continue
    signOutsStick(world, cell, held, out)
    rotations(world, cell, held, out)
    agreement(world, cell, held, out)
  }
  earlyRefreshes(world, out)
  return out
}

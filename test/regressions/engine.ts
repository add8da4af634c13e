/**
 * What the engine regressions (test/regressions/engine-*.test.ts, one per
 * behaviour of issue 20) share: a world of the model checker (real managers
 * or a pool on virtual time, a fake store whose every operation waits for the
 * test, a strict server), driven by hand. Scenarios say "answer the store",
 * "answer the POST", never "the third operation", so they hold whatever store
 * operations the engine makes.
 */
import type { Option } from "effect"
import { Cause, Exit, Redacted } from "effect"
import type { Session } from "moon-refresh"
import type { Config } from "../model/schedule.js"
import type { OpRecord } from "../model/world.js"
import { describe as describeSession, describeEvent, World } from "../model/world.js"

export const second = 1_000
export const minute = 60 * second

/** One manager on a fenced store whose operations wait for the test, holding a 10-minute session. */
export const defaults: Config = {
  mode: "managers",
  holders: 1,
  store: "fenced",
  instant: false,
  shared: true,
  lifetime: 10 * minute,
  initial: "session",
  seed: 1,
  capacity: 100_000,
  idleTimeToLive: 10 * minute,
  maxConcurrentRefreshes: 16
}

/** A world of `config` (over the defaults), its holders built. */
export const world = (config: Partial<Config> = {}): World => {
  const built = new World({ ...defaults, ...config }, true)
  built.setup()
  return built
}

/** What happened, line by line (the last 60 lines): the message of a failed expectation. */
export const trace = (w: World): string => `\n${(w.trace ?? []).slice(-60).join("\n")}\n`

/** The refresh token of a session, or "signed out". */
export const tokenOf = (session: Option.Option<Session.Session>): string => describeSession(session)

/** The refresh token of the session an operation returned. */
export const returned = (op: OpRecord | undefined): string => {
  const exit = op?.exit
  if (exit === undefined) return "still running"
  if (Exit.isFailure(exit)) return `failed: ${Cause.pretty(exit.cause).split("\n")[0]}`
  const value = exit.value as Session.Session | undefined
  return value === undefined ? "ok" : Redacted.value(value.refreshToken)
}

/** A holder's events, as `Refreshed(r.F1.1)`, `SignedOut(UserSignedOut)`. */
export const events = (w: World, holder: number): Array<string> =>
  w.holders[holder]!.events.map((e) => describeEvent(e.event))

/** What the store holds. */
export const stored = (w: World, cell = 0): string => tokenOf(w.cells[cell]!.session)

/** Every refresh token the store ever held, in order. */
export const storeHistory = (w: World, cell = 0): Array<string> => w.cells[cell]!.writes.map((x) => tokenOf(x.session))

/** How an operation ended: "value", "typed", "defect", "interrupted", or "running". */
export const endOf = (op: OpRecord | undefined): string => {
  const exit = op?.exit
  if (exit === undefined) return "running"
  if (Exit.isSuccess(exit)) return "value"
  if (Cause.hasDies(exit.cause)) return "defect"
  if (Cause.hasInterruptsOnly(exit.cause)) return "interrupted"
  return "typed"
}

/** The tokens sent that the server had already rotated (each a reuse). */
export const spentSent = (w: World): Array<string> => w.spentSends.map((s) => `${s.post.holder}: ${s.post.token}`)

/** Lets everything answer as asked (store, server, feed) and time run, as the checker's drain does. */
export const settleAll = (w: World): void => w.drain()

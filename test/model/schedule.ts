/**
 * What a schedule is: the world it runs in (how many holders, which store,
 * how long tokens live) and the steps the harness takes, one after another,
 * each after every fiber has come to rest. Effect's `Arbitrary` (through
 * `test/support/Arb.ts`) generates and shrinks them; `format` prints one line
 * per step.
 */
import * as Arb from "../support/Arb.js"

/** What a caller does on one holder (a manager, or one key of the pool). */
export type OpKind =
  | "accessToken"
  | "session"
  | "refresh"
  /** `signIn` with a session of a new family from the server. */
  | "signIn"
  /** `signInWithRefreshToken` with the first token of a new family. */
  | "signInWithToken"
  /** docs/00's start: `if current is None: signInWithRefreshToken(env token)`. */
  | "startEnv"
  | "signOut"
  /** Closes the manager's scope (managers only). */
  | "close"

export type Step =
  | { readonly t: "call"; readonly holder: number; readonly op: OpKind }
  /** The same call on every holder at once (processes that start together). */
  | { readonly t: "callAll"; readonly op: OpKind }
  /**
   * Completes the `pick`th (modulo) of the actions that can complete now: a
   * store operation, a lock grant, a POST's answer, a change-feed delivery.
   * `outcome` 0: as asked; store ops 1: fail; POSTs 1: a 503 (not
   * processed), 2: lost after the server rotated, 3: the server rejects;
   * 4: as asked, with the store down while its consequences run (a store
   * outage that starts as the answer arrives and ends right after).
   */
  | { readonly t: "deliver"; readonly pick: number; readonly outcome: number }
  /** Completes the first `count` actions that can complete, each as asked. */
  | { readonly t: "flush"; readonly count: number }
  /** Moves time by `ms` (0: to the next timer), firing timers on the way. */
  | { readonly t: "advance"; readonly ms: number }
  /** A store outage starts (every store operation fails at once) or ends. */
  | { readonly t: "outage"; readonly on: boolean }
  /** The auth server goes down (every answer a 503) or comes back. */
  | { readonly t: "server"; readonly down: boolean }

export interface Config {
  readonly mode: "managers" | "pool"
  /** Managers sharing one record, or the pool's keys (each its own record). */
  readonly holders: number
  /** `plain`: one manager over `SessionStore.makeKeyValueStore` (load/save/clear). */
  readonly store: "fenced" | "plain"
  /** The store answers at once (no pending store operations; faults only from outages). */
  readonly instant: boolean
  /** The fenced store's `shared` flag (for the pool: the keyed store's). */
  readonly shared: boolean
  /** How long an access token lives, in ms. */
  readonly lifetime: number
  /** Whether the record starts with a session (of its own family) or empty. */
  readonly initial: "session" | "empty"
  /** The seed of the engine's `Random` (the refresh jitter). */
  readonly seed: number
  readonly capacity: number
  readonly idleTimeToLive: number
  readonly maxConcurrentRefreshes: number
}

export interface Schedule {
  readonly config: Config
  readonly steps: ReadonlyArray<Step>
}

/**
 * How many steps a schedule has at most. Effect 3's checker asked fast-check
 * for up to 30, but fast-check, at its default size, made 0 to 10 (about
 * equally often): the schedules the suite has always run. Longer ones reach
 * behaviours of the engine that the invariants reject (test/model/README.md).
 */
export const maxScheduleSteps = 10

/**
 * The `size` to check and sample schedules at. Effect's `Arbitrary` grows a
 * check's size from 0 over its runs and caps an array's length at it: at this
 * size every run but the first few may have `maxScheduleSteps`.
 */
export const scheduleSize = 1_000

const second = 1_000
const minute = 60 * second

const opArb: Arb.Arb<OpKind> = Arb.oneof(
  { arbitrary: Arb.constantFrom("accessToken", "session", "refresh"), weight: 5 },
  { arbitrary: Arb.constantFrom("signIn", "signInWithToken"), weight: 3 },
  { arbitrary: Arb.constant<OpKind>("startEnv"), weight: 3 },
  { arbitrary: Arb.constant<OpKind>("signOut"), weight: 2 },
  { arbitrary: Arb.constant<OpKind>("close"), weight: 1 }
)

/**
 * What an operation is on a holder of `config`: the pool has no scope per key
 * to close, and its keys are users with tokens of their own (the environment
 * token is one process's start).
 */
export const opFor = (config: Config, op: OpKind): OpKind =>
  config.mode === "pool" && op === "close" ? "refresh" : config.mode === "pool" && op === "startEnv"
    ? "signInWithToken"
    : op

// Steps do not depend on the config (the holder is taken modulo the count), so
// the config and the steps shrink each on its own.
const stepArb: Arb.Arb<Step> = Arb.oneof(
  {
    arbitrary: Arb.record({
      t: Arb.constant("call" as const),
      holder: Arb.nat({ max: 2 }),
      op: opArb
    }),
    weight: 6
  },
  {
    arbitrary: Arb.record({
      t: Arb.constant("deliver" as const),
      pick: Arb.nat({ max: 7 }),
      outcome: Arb.oneof(
        { arbitrary: Arb.constant(0), weight: 10 },
        { arbitrary: Arb.constant(1), weight: 4 },
        { arbitrary: Arb.constant(2), weight: 2 },
        { arbitrary: Arb.constant(3), weight: 1 }
      )
    }),
    weight: 10
  },
  { arbitrary: Arb.record({ t: Arb.constant("flush" as const), count: Arb.integer({ min: 1, max: 6 }) }), weight: 3 },
  {
    arbitrary: Arb.record({
      t: Arb.constant("advance" as const),
      ms: Arb.oneof(
        { arbitrary: Arb.constantFrom(0, 200, second, 5 * second, 11 * second, 31 * second), weight: 8 },
        { arbitrary: Arb.constantFrom(2 * minute, 9 * minute), weight: 1 }
      )
    }),
    weight: 4
  },
  { arbitrary: Arb.record({ t: Arb.constant("outage" as const), on: Arb.boolean() }), weight: 2 },
  { arbitrary: Arb.record({ t: Arb.constant("server" as const), down: Arb.boolean() }), weight: 1 }
)

const configArb: Arb.Arb<Config> = Arb.oneof(
  {
    arbitrary: Arb.record({
      mode: Arb.constant("managers" as const),
      holders: Arb.constantFrom(2, 2, 2, 3),
      store: Arb.constant("fenced" as const),
      instant: Arb.boolean(),
      shared: Arb.boolean(),
      lifetime: Arb.constantFrom(10 * minute, 10 * minute, 45 * second),
      initial: Arb.constantFrom("session" as const, "empty" as const),
      seed: Arb.nat(),
      capacity: Arb.constant(0),
      idleTimeToLive: Arb.constant(0),
      maxConcurrentRefreshes: Arb.constant(0)
    }),
    weight: 6
  },
  {
    arbitrary: Arb.record({
      mode: Arb.constant("managers" as const),
      holders: Arb.constant(1),
      store: Arb.constantFrom("fenced" as const, "plain" as const),
      // A plain store whose saves are never pending cannot interleave them: it stays slow.
      instant: Arb.constant(false),
      shared: Arb.constant(false),
      lifetime: Arb.constantFrom(10 * minute, 45 * second),
      initial: Arb.constantFrom("session" as const, "empty" as const),
      seed: Arb.nat(),
      capacity: Arb.constant(0),
      idleTimeToLive: Arb.constant(0),
      maxConcurrentRefreshes: Arb.constant(0)
    }),
    weight: 2
  },
  {
    arbitrary: Arb.record({
      mode: Arb.constant("pool" as const),
      holders: Arb.constantFrom(3, 6, 6),
      store: Arb.constant("fenced" as const),
      instant: Arb.boolean(),
      shared: Arb.boolean(),
      lifetime: Arb.constantFrom(10 * minute, 45 * second),
      initial: Arb.constantFrom("session" as const, "empty" as const),
      seed: Arb.nat(),
      capacity: Arb.constantFrom(1, 2, 100),
      idleTimeToLive: Arb.constantFrom(20 * second, 10 * minute),
      maxConcurrentRefreshes: Arb.constantFrom(1, 2, 16)
    }),
    weight: 3
  }
)

/** Schedules of up to `maxSteps` steps (check and sample them at `scheduleSize`). */
export const scheduleArb = (maxSteps = maxScheduleSteps): Arb.Arb<Schedule> =>
  Arb.record({ config: configArb, steps: Arb.array(stepArb, { maxLength: maxSteps }) })

const outcomeNames = ["as asked", "fail / 503", "lost after rotating", "rejected", "as asked, store down meanwhile"]

const duration = (ms: number) =>
  ms === 0 ? "to the next timer" : ms >= minute ? `${ms / minute} min` : ms >= second ? `${ms / second} s` : `${ms} ms`

export const holderName = (config: Config, index: number): string =>
  config.mode === "pool" ? `key${index}` : String.fromCharCode(65 + index)

export const formatStep = (config: Config, step: Step): string => {
  switch (step.t) {
    case "call":
      return `${holderName(config, step.holder % config.holders)}.${opFor(config, step.op)}`
    case "callAll":
      return `every holder: ${opFor(config, step.op)}`
    case "deliver":
      return `deliver #${step.pick} ${outcomeNames[step.outcome] ?? step.outcome}`
    case "flush":
      return `flush ${step.count}`
    case "advance":
      return `advance ${duration(step.ms)}`
    case "outage":
      return step.on ? "store outage starts" : "store outage ends"
    case "server":
      return step.down ? "server goes down (503s)" : "server comes back"
  }
}

export const formatConfig = (config: Config): string =>
  config.mode === "pool"
    ? `pool of ${config.holders} keys (capacity ${config.capacity}, idle ${duration(config.idleTimeToLive)}, ` +
      `${config.maxConcurrentRefreshes} POSTs at once), ${config.instant ? "instant " : ""}` +
      `${config.shared ? "shared" : "unshared"} keyed store, ` +
      `tokens live ${duration(config.lifetime)}, records start ${config.initial}, random seed ${config.seed}`
    : `${config.holders} manager(s) on one ${config.instant ? "instant " : ""}${config.store} ` +
      `${config.shared ? "shared" : "unshared"} store, ` +
      `tokens live ${duration(config.lifetime)}, record starts ${config.initial}, random seed ${config.seed}`

/** One line per step. */
export const format = (schedule: Schedule): string =>
  [
    formatConfig(schedule.config),
    ...schedule.steps.map((step, i) => `  ${i + 1}. ${formatStep(schedule.config, step)}`)
  ]
    .join("\n")

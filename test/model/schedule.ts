/**
 * What a schedule is: the world it runs in (how many holders, which store,
 * how long tokens live) and the steps the harness takes, one after another,
 * each after every fiber has come to rest. fast-check generates and shrinks
 * them; `format` prints one line per step.
 */
import { FastCheck as fc } from "effect"

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

const second = 1_000
const minute = 60 * second

const opArb: fc.Arbitrary<OpKind> = fc.oneof(
  { arbitrary: fc.constantFrom<OpKind>("accessToken", "session", "refresh"), weight: 5 },
  { arbitrary: fc.constantFrom<OpKind>("signIn", "signInWithToken"), weight: 3 },
  { arbitrary: fc.constant<OpKind>("startEnv"), weight: 3 },
  { arbitrary: fc.constant<OpKind>("signOut"), weight: 2 },
  { arbitrary: fc.constant<OpKind>("close"), weight: 1 }
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
// fast-check shrinks the config and the steps each on its own.
const stepArb: fc.Arbitrary<Step> = fc.oneof(
  {
    arbitrary: fc.record({
      t: fc.constant("call" as const),
      holder: fc.nat({ max: 2 }),
      op: opArb
    }),
    weight: 6
  },
  {
    arbitrary: fc.record({
      t: fc.constant("deliver" as const),
      pick: fc.nat({ max: 7 }),
      outcome: fc.oneof(
        { arbitrary: fc.constant(0), weight: 10 },
        { arbitrary: fc.constant(1), weight: 4 },
        { arbitrary: fc.constant(2), weight: 2 },
        { arbitrary: fc.constant(3), weight: 1 }
      )
    }),
    weight: 10
  },
  { arbitrary: fc.record({ t: fc.constant("flush" as const), count: fc.integer({ min: 1, max: 6 }) }), weight: 3 },
  {
    arbitrary: fc.record({
      t: fc.constant("advance" as const),
      ms: fc.oneof(
        { arbitrary: fc.constantFrom(0, 200, second, 5 * second, 11 * second, 31 * second), weight: 8 },
        { arbitrary: fc.constantFrom(2 * minute, 9 * minute), weight: 1 }
      )
    }),
    weight: 4
  },
  { arbitrary: fc.record({ t: fc.constant("outage" as const), on: fc.boolean() }), weight: 2 },
  { arbitrary: fc.record({ t: fc.constant("server" as const), down: fc.boolean() }), weight: 1 }
)

const configArb: fc.Arbitrary<Config> = fc.oneof(
  {
    arbitrary: fc.record({
      mode: fc.constant("managers" as const),
      holders: fc.constantFrom(2, 2, 2, 3),
      store: fc.constant("fenced" as const),
      instant: fc.boolean(),
      shared: fc.boolean(),
      lifetime: fc.constantFrom(10 * minute, 10 * minute, 45 * second),
      initial: fc.constantFrom("session" as const, "empty" as const),
      seed: fc.nat(),
      capacity: fc.constant(0),
      idleTimeToLive: fc.constant(0),
      maxConcurrentRefreshes: fc.constant(0)
    }),
    weight: 6
  },
  {
    arbitrary: fc.record({
      mode: fc.constant("managers" as const),
      holders: fc.constant(1),
      store: fc.constantFrom("fenced" as const, "plain" as const),
      // A plain store whose saves are never pending cannot interleave them: it stays slow.
      instant: fc.constant(false),
      shared: fc.constant(false),
      lifetime: fc.constantFrom(10 * minute, 45 * second),
      initial: fc.constantFrom("session" as const, "empty" as const),
      seed: fc.nat(),
      capacity: fc.constant(0),
      idleTimeToLive: fc.constant(0),
      maxConcurrentRefreshes: fc.constant(0)
    }),
    weight: 2
  },
  {
    arbitrary: fc.record({
      mode: fc.constant("pool" as const),
      holders: fc.constantFrom(3, 6, 6),
      store: fc.constant("fenced" as const),
      instant: fc.boolean(),
      shared: fc.boolean(),
      lifetime: fc.constantFrom(10 * minute, 45 * second),
      initial: fc.constantFrom("session" as const, "empty" as const),
      seed: fc.nat(),
      capacity: fc.constantFrom(1, 2, 100),
      idleTimeToLive: fc.constantFrom(20 * second, 10 * minute),
      maxConcurrentRefreshes: fc.constantFrom(1, 2, 16)
    }),
    weight: 3
  }
)

/** Schedules of up to `maxSteps` steps. */
export const scheduleArb = (maxSteps = 30): fc.Arbitrary<Schedule> =>
  fc.record({ config: configArb, steps: fc.array(stepArb, { maxLength: maxSteps }) })

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

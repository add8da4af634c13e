/**
 * The options of a `SessionManager` (and of each session of a `SessionPool`):
 * their defaults and their one validation.
 *
 * Not public API: the package's exports keep `internal/` private.
 */
import * as Duration from "effect/Duration"
import * as Result from "effect/Result"
import type { Options as SessionManagerOptions } from "../SessionManager.js"
import * as Options_ from "./options.js"
import type * as Rules from "./session/rules.js"
import type { Bounds } from "./session/store.js"

export const defaults = {
  margin: Duration.seconds(60),
  autoRefresh: true,
  cooldown: Duration.seconds(10),
  maxCooldown: Duration.minutes(5),
  minInterval: Duration.seconds(30),
  storeTimeout: Duration.seconds(10),
  lockTimeout: Duration.seconds(60)
} as const

/** The options, as `SessionManager.Options` declares them (a type-only import: no cycle at run time). */
export type Options = SessionManagerOptions

/**
 * The longest a holder keeps the store's lock after it sent the store's
 * refresh token, retrying a failed save (see `session/core.ts`): half the
 * lock timeout (so other holders waiting for the lock do not give up
 * first), at most 30 seconds.
 */
export const saveBoundFor = (lockTimeout: number): number => Math.min(30_000, lockTimeout / 2)

/**
 * The longest closing a manager (or a pool) waits for what the store is owed
 * (see `Cell.closing`): the save bound, and one store operation's timeout for
 * the write out when it passes.
 */
export const closeBound = (config: { readonly saveBound: number }, bounds: Bounds): number =>
  config.saveBound + bounds.store

export interface Resolved {
  /** Without `spread`, which depends on the store. */
  readonly config: Omit<Rules.Config, "spread">
  readonly bounds: Bounds
}

/** Checks the options; a refusal names `owner` and the option. */
export const resolve = (
  options: Options,
  owner: string = "SessionManager"
): Result.Result<Resolved, Options_.Invalid> =>
  Result.gen(function*() {
    const millis = (option: Exclude<keyof typeof defaults, "autoRefresh">, rule: Options_.DurationRule) =>
      Options_.millis(owner, option, options[option] ?? defaults[option], rule)
    const lock = yield* millis("lockTimeout", "positive")
    return {
      config: {
        margin: yield* millis("margin", "nonNegative"),
        autoRefresh: options.autoRefresh ?? defaults.autoRefresh,
        cooldown: yield* millis("cooldown", "nonNegative"),
        maxCooldown: yield* millis("maxCooldown", "nonNegative"),
        minInterval: yield* millis("minInterval", "nonNegative"),
        saveBound: saveBoundFor(lock)
      },
      bounds: { store: yield* millis("storeTimeout", "positive"), lock }
    }
  })

/**
 * The options of a `SessionManager` (and of each session of a `SessionPool`):
 * their defaults and their one validation.
 *
 * Not public API: the package's exports keep `internal/` private.
 */
import { Duration, Either } from "effect"
import type * as SessionManager from "../SessionManager.js"
import * as Options_ from "./options.js"
import type { Bounds } from "./sessionRuntime.js"
import type * as State from "./sessionState.js"

export const defaults = {
  margin: Duration.seconds(60),
  autoRefresh: true,
  cooldown: Duration.seconds(10),
  maxCooldown: Duration.minutes(5),
  minInterval: Duration.seconds(30),
  storeTimeout: Duration.seconds(10),
  lockTimeout: Duration.seconds(60)
} as const

export interface Resolved {
  readonly config: State.Config
  readonly bounds: Bounds
}

/** Checks the options; a refusal names `owner` and the option. */
export const resolve = (
  options: SessionManager.Options,
  owner: string = "SessionManager"
): Either.Either<Resolved, Options_.Invalid> =>
  Either.gen(function*() {
    const millis = (option: keyof typeof defaults & keyof SessionManager.Options, rule: Options_.DurationRule) =>
      Options_.millis(owner, option, (options[option] ?? defaults[option]) as Duration.DurationInput, rule)
    return {
      config: {
        margin: yield* millis("margin", "nonNegative"),
        autoRefresh: options.autoRefresh ?? defaults.autoRefresh,
        cooldown: yield* millis("cooldown", "nonNegative"),
        maxCooldown: yield* millis("maxCooldown", "nonNegative"),
        minInterval: yield* millis("minInterval", "nonNegative")
      },
      bounds: { store: yield* millis("storeTimeout", "positive"), lock: yield* millis("lockTimeout", "positive") }
    }
  })

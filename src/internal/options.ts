/**
 * The one place where options are checked. Every constructor (`RefreshClient`,
 * `SessionManager`, the test doubles, the stores) validates its durations here,
 * so each rule and each message is written once.
 *
 * A check returns a `Result` so the caller decides how to report it: `make`
 * dies (a programming error, at layer construction), `layerConfig` turns the
 * same message into a `ConfigError` naming the setting.
 *
 * Not public API: the package's exports keep `internal/` private.
 */
import * as Cause from "effect/Cause"
import * as Config from "effect/Config"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import * as SchemaIssue from "effect/SchemaIssue"

/** Why an option was refused: the option's name and a sentence that says what it must be. */
export interface Invalid {
  readonly owner: string
  readonly option: string
  readonly reason: string
}

/** `Owner: option "name" reason`: the one wording every refusal uses. */
export const describe = (invalid: Invalid): string => `${invalid.owner}: option "${invalid.option}" ${invalid.reason}`

/** Dies with {@link describe}'s message (an `IllegalArgumentError`, where Effect 3 had `dieMessage`). */
export const die = (invalid: Invalid): Effect.Effect<never> =>
  Effect.die(new Cause.IllegalArgumentError(describe(invalid)))

/** Unwraps a check inside `make`: a refused option is a defect. */
export const orDie = <A>(checked: Result.Result<A, Invalid>): Effect.Effect<A> =>
  Result.match(checked, { onFailure: die, onSuccess: Effect.succeed })

/**
 * Maps a refused option to the `ConfigError` `layerConfig` reports, naming the
 * setting it came from: invalid data at the setting's path, as `Config` itself
 * reports a value its schema refuses.
 */
export const toConfigError = (setting: string) => (invalid: Invalid): Config.ConfigError =>
  new Config.ConfigError(
    new Schema.SchemaError(
      new SchemaIssue.Pointer(
        [setting],
        new SchemaIssue.InvalidValue({ message: `${invalid.option} ${invalid.reason}` })
      )
    )
  )

/**
 * `layerConfig`'s half of "`Config` read, then `make`": reads the options
 * (`Config.unwrap`: one `Config` of them, or a record of one per option), then
 * checks them with the same `check` as `make`. A refusal is a `ConfigError`
 * naming the option, where `make` would die.
 */
export const fromConfig = <O, A>(
  config: Config.Wrap<O>,
  check: (options: O) => Result.Result<A, Invalid>
): Effect.Effect<A, Config.ConfigError> =>
  Effect.flatMap(Config.unwrap<O>(config), (options) =>
    Result.match(check(options), {
      onFailure: (invalid) => Effect.fail(toConfigError(invalid.option)(invalid)),
      onSuccess: Effect.succeed
    }))

// A negative option is a mistake to report, not to clamp or to wait out:
// refused whether it is written negative (Effect 3's `Duration` clamped such
// an input to zero) or decodes to a negative `Duration`.
const isNegative = (input: unknown): boolean => {
  if (typeof input === "number") return input < 0
  if (typeof input === "bigint") return input < 0n
  if (typeof input === "string") return /^\s*-/.test(input)
  return Array.isArray(input) && (Number(input[0]) < 0 || Number(input[1]) < 0)
}

/** Which durations an option accepts. */
export type DurationRule = "positive" | "nonNegative"

const ruleText: Record<DurationRule, string> = {
  positive: "must be a positive, finite duration",
  nonNegative: "must be a finite, non-negative duration"
}

/**
 * Checks a duration option: it must decode, be finite, never be negative, and
 * for `"positive"` be more than zero.
 */
export const duration = (
  owner: string,
  option: string,
  input: Duration.Input,
  rule: DurationRule
): Result.Result<Duration.Duration, Invalid> => {
  const decoded = Duration.fromInput(input)
  const ok = !isNegative(input) && Option.isSome(decoded) && Duration.isFinite(decoded.value) &&
    !Duration.isNegative(decoded.value) && (rule === "nonNegative" || Duration.toMillis(decoded.value) > 0)
  return ok ? Result.succeed((decoded as Option.Some<Duration.Duration>).value) : Result.fail({
    owner,
    option,
    reason: ruleText[rule]
  })
}

/** {@link duration} in milliseconds, the unit the state rules compute in. */
export const millis = (
  owner: string,
  option: string,
  input: Duration.Input,
  rule: DurationRule
): Result.Result<number, Invalid> => Result.map(duration(owner, option, input, rule), Duration.toMillis)

/** Checks a whole number within bounds (a count, a port, whole seconds). */
export const integer = (
  owner: string,
  option: string,
  input: number,
  bounds: { readonly min: number; readonly max?: number | undefined }
): Result.Result<number, Invalid> =>
  Number.isInteger(input) && input >= bounds.min && input <= (bounds.max ?? Number.MAX_SAFE_INTEGER)
    ? Result.succeed(input)
    : Result.fail({
      owner,
      option,
      reason: bounds.max === undefined
        ? `must be a whole number >= ${bounds.min}`
        : `must be a whole number from ${bounds.min} to ${bounds.max}`
    })

/** Checks a fraction in `[min, max]` (a share of a lifetime, a jitter). */
export const fraction = (
  owner: string,
  option: string,
  input: number,
  bounds: { readonly min: number; readonly max: number }
): Result.Result<number, Invalid> =>
  Number.isFinite(input) && input >= bounds.min && input <= bounds.max
    ? Result.succeed(input)
    : Result.fail({ owner, option, reason: `must be a number from ${bounds.min} to ${bounds.max}` })

/** Checks an option that takes one of a few words (a mode, a shape). */
export const oneOf = <const L extends string>(
  owner: string,
  option: string,
  input: unknown,
  allowed: ReadonlyArray<L>
): Result.Result<L, Invalid> =>
  (allowed as ReadonlyArray<unknown>).includes(input)
    ? Result.succeed(input as L)
    : Result.fail({ owner, option, reason: `must be one of ${allowed.map((word) => `"${word}"`).join(", ")}` })

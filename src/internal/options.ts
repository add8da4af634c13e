/**
 * The one place where options are checked. Every constructor (`RefreshClient`,
 * `SessionManager`, the test doubles, the stores) validates its durations here,
 * so each rule and each message is written once.
 *
 * A check returns an `Either` so the caller decides how to report it: `make`
 * dies (a programming error, at layer construction), `layerConfig` turns the
 * same message into a `ConfigError` naming the setting.
 *
 * Not public API: the package's exports keep `internal/` private.
 */
import { ConfigError, Duration, Effect, Either, Option } from "effect"

/** Why an option was refused: the option's name and a sentence that says what it must be. */
export interface Invalid {
  readonly owner: string
  readonly option: string
  readonly reason: string
}

/** `Owner: option "name" reason`: the one wording every refusal uses. */
export const describe = (invalid: Invalid): string => `${invalid.owner}: option "${invalid.option}" ${invalid.reason}`

/** Dies with {@link describe}'s message. */
export const die = (invalid: Invalid): Effect.Effect<never> => Effect.dieMessage(describe(invalid))

/** Unwraps a check inside `make`: a refused option is a defect. */
export const orDie = <A>(checked: Either.Either<A, Invalid>): Effect.Effect<A> =>
  Either.match(checked, { onLeft: die, onRight: Effect.succeed })

/** Maps a refused option to the `ConfigError` `layerConfig` reports, naming the setting it came from. */
export const toConfigError = (setting: string) => (invalid: Invalid): ConfigError.ConfigError =>
  ConfigError.InvalidData([setting], `${invalid.option} ${invalid.reason}`)

// `Duration.decodeUnknown` clamps a negative input ("-5 seconds" included) to
// zero; a negative option is a mistake to report, not to clamp.
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
  input: Duration.DurationInput,
  rule: DurationRule
): Either.Either<Duration.Duration, Invalid> => {
  const decoded = Duration.decodeUnknown(input)
  const ok = !isNegative(input) && Option.isSome(decoded) && Duration.isFinite(decoded.value) &&
    (rule === "nonNegative" || Duration.toMillis(decoded.value) > 0)
  return ok ? Either.right((decoded as Option.Some<Duration.Duration>).value) : Either.left({
    owner,
    option,
    reason: ruleText[rule]
  })
}

/** {@link duration} in milliseconds, the unit the state rules compute in. */
export const millis = (
  owner: string,
  option: string,
  input: Duration.DurationInput,
  rule: DurationRule
): Either.Either<number, Invalid> => Either.map(duration(owner, option, input, rule), Duration.toMillis)

/** Checks a whole number within bounds (a count, a port, whole seconds). */
export const integer = (
  owner: string,
  option: string,
  input: number,
  bounds: { readonly min: number; readonly max?: number | undefined }
): Either.Either<number, Invalid> =>
  Number.isInteger(input) && input >= bounds.min && input <= (bounds.max ?? Number.MAX_SAFE_INTEGER)
    ? Either.right(input)
    : Either.left({
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
): Either.Either<number, Invalid> =>
  Number.isFinite(input) && input >= bounds.min && input <= bounds.max
    ? Either.right(input)
    : Either.left({ owner, option, reason: `must be a number from ${bounds.min} to ${bounds.max}` })

/** Checks an option that takes one of a few words (a mode, a shape). */
export const oneOf = <const L extends string>(
  owner: string,
  option: string,
  input: unknown,
  allowed: ReadonlyArray<L>
): Either.Either<L, Invalid> =>
  (allowed as ReadonlyArray<unknown>).includes(input)
    ? Either.right(input as L)
    : Either.left({ owner, option, reason: `must be one of ${allowed.map((word) => `"${word}"`).join(", ")}` })

/**
 * Reading the outcome a test expects out of an `Exit`: each throws (failing
 * the test, with the cause printed) when the exit is anything else.
 */
import { Cause, Config, Exit, Option } from "effect"

/** The typed error the exit failed with; not a value, a defect or an interruption. */
export const failureOf = <E>(exit: Exit.Exit<unknown, E>): E => {
  if (Exit.isSuccess(exit)) throw new Error("expected a typed failure, got a value")
  const failure = Cause.findErrorOption(exit.cause)
  if (Option.isNone(failure)) throw new Error(`expected a typed failure, got ${Cause.pretty(exit.cause)}`)
  return failure.value
}

/** The printed cause of an exit that died (a defect, such as a refused option at layer build). */
export const defectOf = (exit: Exit.Exit<unknown, unknown>): string => {
  if (Exit.isSuccess(exit) || !Cause.hasDies(exit.cause)) throw new Error(`expected a defect, got ${String(exit)}`)
  return Cause.pretty(exit.cause)
}

/** The `ConfigError` the exit failed with. */
export const configErrorOf = (exit: Exit.Exit<unknown, unknown>): Config.ConfigError => {
  const failure = Exit.isFailure(exit) ? Cause.findErrorOption(exit.cause) : Option.none()
  if (Option.isNone(failure) || !(failure.value instanceof Config.ConfigError)) {
    throw new Error(`expected a ConfigError, got ${String(exit)}`)
  }
  return failure.value
}

// How the runnable examples end: `NodeRuntime.runMain`, except that a failure
// prints as one line and exit code 1, instead of the pretty cause with its
// stack trace. `String(error)` is that line, for the library's errors
// (`TokenRejectedError: Invalid Refresh Token: Refresh Token Not Found`); a
// ConfigError's spans two (`ConfigError(SchemaError(Expected string` then
// `at ["MOON_REFRESH_TOKEN"]))`), joined here with a space.
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Cause, Console, Effect } from "effect"

export const runMain = <A, E>(program: Effect.Effect<A, E>): void =>
  NodeRuntime.runMain(
    Effect.tapCause(program, (cause) =>
      // Ctrl-C is not a failure worth a line.
      Cause.hasInterruptsOnly(cause)
        ? Effect.void
        : Console.error(String(Cause.squash(cause)).replace(/\s*\n\s*/g, " "))),
    { disableErrorReporting: true }
  )

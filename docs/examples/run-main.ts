// How the runnable examples end: `NodeRuntime.runMain`, except that a failure
// prints as one line and exit code 1, instead of the pretty cause with its
// stack trace. `String(error)` is that line, for the library's errors
// (`TokenRejectedError: Invalid Refresh Token: Refresh Token Not Found`) as
// for a ConfigError (`(Missing data at MOON_REFRESH_TOKEN: …)`).
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Cause, Console, Effect } from "effect"

export const runMain = <A, E>(program: Effect.Effect<A, E>): void =>
  NodeRuntime.runMain(
    Effect.tapErrorCause(program, (cause) =>
      // Ctrl-C is not a failure worth a line.
      Cause.isInterruptedOnly(cause) ? Effect.void : Console.error(String(Cause.squash(cause)))),
    { disableErrorReporting: true }
  )

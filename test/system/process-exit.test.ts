import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { spawn } from "node:child_process"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"

// The refresh attempts under way share one timer (src/internal/attempt.ts),
// armed for the earliest deadline and left armed when an attempt ends. In a
// real process it must hold Node open only while an attempt is under way:
// a script whose refresh has ended exits then, not when the timer fires.

const repo = fileURLToPath(new URL("../..", import.meta.url))
const tsx = Path.join(repo, "node_modules", ".bin", "tsx")

// One attempt that ends at once under a 5-minute timeout, then one still under
// way when the other is done, whose end lets the script finish.
const script = `
import { Duration, Effect } from "effect"
import { timeoutFail } from "./src/internal/attempt.ts"
const within = timeoutFail({ duration: Duration.minutes(5), onTimeout: () => "timed out" })
await Effect.runPromise(within(Effect.succeed(1)))
await Effect.runPromise(within(Effect.sleep(Duration.millis(50))))
console.log("done")
`

const run = Effect.callback<{ readonly code: number | null; readonly stdout: string; readonly millis: number }>(
  (resume) => {
    const started = Date.now()
    const child = spawn(tsx, ["--input-type=module", "-e", script], { cwd: repo })
    let stdout = ""
    child.stdout.on("data", (chunk) => stdout += chunk)
    child.stderr.on("data", (chunk) => process.stderr.write(chunk))
    child.once("close", (code) => resume(Effect.succeed({ code, stdout, millis: Date.now() - started })))
    return Effect.sync(() => child.kill("SIGKILL"))
  }
)

describe("the attempts' shared timer in a real process", () => {
  it.live("does not hold Node open once no attempt is under way", () =>
    Effect.gen(function*() {
      // Held open, the script would run for the timer's 5 minutes; the test's own timeout is 2.
      const result = yield* run
      expect({ code: result.code, stdout: result.stdout.trim() }).toStrictEqual({ code: 0, stdout: "done" })
      expect(result.millis).toBeLessThan(120_000)
    }), 150_000)
})

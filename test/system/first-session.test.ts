import { describe, expect, it } from "@effect/vitest"
import { Effect, Redacted } from "effect"
import { MockMoonServer } from "moon-refresh/testing"
import { spawn } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"

// docs/00-first-session.md's start, run as a reader runs it (`npx tsx
// docs/examples/first-session.ts`) in a shell whose umask is 0022, the usual
// one: the session file it writes must be readable by its owner only.

const repo = fileURLToPath(new URL("../..", import.meta.url))
const tsx = Path.join(repo, "node_modules", ".bin", "tsx")
const example = Path.join(repo, "docs", "examples", "first-session.ts")

interface Run {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

// Asynchronous: the server answering the child runs in this process.
const runExample = (cwd: string, env: Record<string, string>): Effect.Effect<Run> =>
  Effect.callback<Run>((resume) => {
    // `control` is made by the same shell: its mode shows the umask the example ran under.
    const child = spawn("sh", ["-c", `umask 022 && touch control && exec "$0" "$1"`, tsx, example], {
      cwd,
      // The examples import "moon-refresh" through the repository's tsconfig paths.
      env: { ...process.env, ...env, TSX_TSCONFIG_PATH: Path.join(repo, "tsconfig.json") }
    })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (chunk) => stdout += chunk)
    child.stderr.on("data", (chunk) => stderr += chunk)
    child.once("close", (code) => resume(Effect.succeed({ code, stdout, stderr })))
    return Effect.sync(() => child.kill("SIGKILL"))
  })

const modeOf = (path: string) => statSync(path).mode & 0o777

describe("docs/00-first-session.md's start", () => {
  it.live("writes the session 0600 in a 0700 directory under umask 0022, and the next run starts from it", () =>
    Effect.gen(function*() {
      const server = yield* MockMoonServer.make()
      const seeded = yield* server.issueSession()
      const cwd = mkdtempSync(Path.join(Os.tmpdir(), "moon-refresh-first-session-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(cwd, { recursive: true, force: true })))
      const env = { MOON_BASE_URL: server.url, MOON_REFRESH_TOKEN: Redacted.value(seeded.refreshToken) }

      const first = yield* runExample(cwd, env)
      expect({ code: first.code, stderr: first.stderr }).toStrictEqual({ code: 0, stderr: "" })
      expect(first.stdout).toContain("signed in as mock-user-1")
      expect(modeOf(Path.join(cwd, "control"))).toBe(0o644)
      expect(modeOf(Path.join(cwd, ".moon"))).toBe(0o700)
      expect(modeOf(Path.join(cwd, ".moon", "session.json"))).toBe(0o600)

      // The file holds the rotated session, whose refresh token is the live one.
      const stored = JSON.parse(readFileSync(Path.join(cwd, ".moon", "session.json"), "utf8"))
      expect(yield* server.isLive(stored.session.refreshToken)).toBe(true)
      expect(yield* server.stats).toMatchObject({ refreshRequests: 1, rotations: 1, reuseRejections: 0 })

      // The second run starts from the stored session: no request, and the spent
      // token in the environment is never sent again.
      const second = yield* runExample(cwd, env)
      expect({ code: second.code, stderr: second.stderr }).toStrictEqual({ code: 0, stderr: "" })
      expect(yield* server.stats).toMatchObject({ refreshRequests: 1, rotations: 1, reuseRejections: 0 })
      expect(modeOf(Path.join(cwd, ".moon", "session.json"))).toBe(0o600)
    }))
})

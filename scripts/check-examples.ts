/**
 * `npm run check:examples`: what the guides promise about their examples.
 *
 * Starts `npm run mock-server`, then runs every runnable example in
 * docs/examples/ as the guides say (`MOON_BASE_URL=… MOON_REFRESH_TOKEN=… npx
 * tsx docs/examples/…`): with a fresh refresh token it must succeed; run again
 * with the token it just spent, it must either handle the rejection itself
 * (exit 0) or end with exit code 1 and one line on stderr, never a stack trace.
 *
 * Each run has a temporary directory of its own (store-first.ts stores the
 * session there), removed at the end; the server is stopped.
 *
 * The observability examples (otlp.ts, prometheus.ts) are checked further by
 * scripts/check-observability.ts: an OTLP receiver on 127.0.0.1 for the one,
 * the moon_refresh_* lines of its /metrics (served on 127.0.0.1, port 0) for
 * the other. Nothing leaves the loopback interface.
 */
import { spawn } from "node:child_process"
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Readline from "node:readline"
import { fileURLToPath } from "node:url"
import { expectations, otlpReceiver } from "./check-observability.js"

const repo = fileURLToPath(new URL("..", import.meta.url))
const examples = Path.join(repo, "docs", "examples")
const started = Date.now()

// An example runs when it ends by running a program (an Effect through
// runMain or Effect.runPromise, or a plain `void main()`); the others only
// export what the guides show (run-main.ts is the helper the runnable ones end with).
const only = process.argv.slice(2)
const runnable = readdirSync(examples)
  .filter((file) => file.endsWith(".ts") && file !== "run-main.ts")
  .filter((file) =>
    /^\s*(runMain|Effect\.runPromise|void main\(\))\s*$/m.test(readFileSync(Path.join(examples, file), "utf8"))
  )
  .sort()
  // `npm run check:examples -- otlp.ts prometheus.ts`: those alone.
  .filter((file) => only.length === 0 || only.includes(file))

const server = spawn("npm", ["run", "--silent", "mock-server"], { cwd: repo, detached: true })
const stopServer = () => {
  // npm runs tsx, which runs node: stop the whole process group started here.
  if (server.pid !== undefined && server.exitCode === null) process.kill(-server.pid, "SIGTERM")
}
const lines = Readline.createInterface({ input: server.stdout })[Symbol.asyncIterator]()
let serverErrors = ""
server.stderr.on("data", (chunk) => serverErrors += chunk)

const nextValue = async (name: string): Promise<string> => {
  for (;;) {
    const line = await lines.next()
    if (line.done) throw new Error(`mock-server ended before printing ${name}: ${serverErrors}`)
    const match = line.value.match(new RegExp(`export ${name}=(\\S+)`))
    if (match?.[1] !== undefined) return match[1]
  }
}

const freshToken = () => {
  server.stdin.write("\n")
  return nextValue("MOON_REFRESH_TOKEN")
}

const otlp = otlpReceiver()

const main = async (tmp: string) => {
  const receiver = await otlp
  const baseUrl = await nextValue("MOON_BASE_URL")
  let token = await nextValue("MOON_REFRESH_TOKEN")
  console.log(`mock-server: ${baseUrl}`)
  if (runnable.length === 0) throw new Error("no runnable example found in docs/examples/")

  // Not spawnSync: the OTLP receiver answers from this process's event loop while the example runs.
  const run = (example: string, refreshToken: string) =>
    new Promise<{ status: number | null; stdout: string; stderr: string }>((done) => {
      // The guides' `npx tsx` in the repository is this tsx.
      const child = spawn(Path.join(repo, "node_modules", ".bin", "tsx"), [Path.join(examples, example)], {
        // A directory of its own: the second run of store-first.ts must not find the session the first one stored.
        cwd: mkdtempSync(Path.join(tmp, `${example}-`)),
        // The examples import "moon-refresh" through the repository's tsconfig paths.
        env: {
          ...process.env,
          MOON_BASE_URL: baseUrl,
          MOON_REFRESH_TOKEN: refreshToken,
          // otlp.ts exports there; prometheus.ts and node-server.ts listen on a free port.
          OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
          PORT: "0",
          TSX_TSCONFIG_PATH: Path.join(repo, "tsconfig.json")
        },
        stdio: ["ignore", "pipe", "pipe"]
      })
      let stdout = ""
      let stderr = ""
      child.stdout.setEncoding("utf8").on("data", (chunk: string) => stdout += chunk)
      child.stderr.setEncoding("utf8").on("data", (chunk: string) => stderr += chunk)
      child.on("close", (status) => done({ status, stdout, stderr }))
    })

  const failures: Array<string> = []
  // What an example promises beyond its exit code (scripts/check-observability.ts).
  const expect = (example: string, stdout: string, refreshToken: string, spent: boolean) => {
    const failed = expectations[example]?.({ stdout, refreshToken, otlp: receiver, spent }) ?? []
    failures.push(...failed.map((failure) => `${example} with a ${spent ? "spent" : "fresh"} token: ${failure}`))
    receiver.reset()
  }
  for (const example of runnable) {
    const fresh = await run(example, token)
    if (fresh.status !== 0 || fresh.stderr !== "") {
      failures.push(`${example} with a fresh token: exit ${fresh.status}\n${fresh.stdout}${fresh.stderr}`)
    }
    expect(example, fresh.stdout, token, false)
    const spent = await run(example, token)
    expect(example, spent.stdout, token, true)
    const errorLines = spent.stderr.trimEnd().split("\n").filter((line) => line !== "")
    const oneLine = spent.status === 1 && errorLines.length === 1 && errorLines[0]?.includes("TokenRejectedError")
    if (!(spent.status === 0 && errorLines.length === 0) && !oneLine) {
      failures.push(`${example} with a spent token: exit ${spent.status}\n${spent.stderr}`)
    }
    console.log(
      `${example.padEnd(16)} fresh token: exit ${fresh.status}; spent token: exit ${spent.status}` +
        (errorLines.length > 0 ? `, "${errorLines[0]}"` : `, ${spent.stdout.trimEnd().split("\n").at(-1)}`)
    )
    token = await freshToken()
  }
  if (failures.length > 0) throw new Error(failures.join("\n"))
}

const tmp = mkdtempSync(Path.join(Os.tmpdir(), "moon-refresh-examples-"))
main(tmp)
  .then(() => console.log(`examples check passed in ${((Date.now() - started) / 1000).toFixed(0)} s`))
  .catch((error: Error) => {
    console.error(`examples check FAILED: ${error.message}`)
    process.exitCode = 1
  })
  .finally(async () => {
    stopServer()
    await (await otlp).close()
    rmSync(tmp, { recursive: true, force: true })
  })

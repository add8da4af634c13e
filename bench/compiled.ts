/**
 * Runs a bench module in a process of its own, on the library compiled as
 * users run it. Under tsx every named function in our TypeScript gets
 * esbuild's `keepNames` wrapper: each closure created at run time costs an
 * `Object.defineProperty` call and a property store of its own (about 256
 * bytes). The published build (`tsc`) has no such wrapper, so a reading
 * under tsx would charge it to the library: a pool holds several closures
 * per session, a refresh creates a dozen. The module is bundled with esbuild
 * (no `keepNames`; `effect`, `@effect/*` and the peers left external, so
 * they are the installed ones) and run with plain node.
 *
 * The child answers one message, `{ result }` or `{ error }`, and exits.
 */
import { fork } from "node:child_process"
import { rmSync } from "node:fs"
import { join } from "node:path"
import { fileURLToPath } from "node:url"

const root = fileURLToPath(new URL("..", import.meta.url))

/** The directory of the bench's TypeScript sources, for a bundled module that must find `server.ts`. */
export const benchDirectory = join(root, "bench")

export const runCompiled = async <A>(entry: string, args: ReadonlyArray<string>, what: string): Promise<A> => {
  const { build } = await import("esbuild")
  const name = entry.replace(/^.*\//, "").replace(/\.ts$/, "")
  // Inside the project, so that the bundle's `effect` import resolves to node_modules.
  const outfile = join(root, "node_modules", ".cache", "moon-refresh-bench", `${name}-${process.pid}-${Date.now()}.mjs`)
  await build({
    entryPoints: [entry],
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    outfile,
    external: ["effect", "@effect/*", "axios", "esbuild", "ioredis"],
    tsconfig: join(root, "tsconfig.json"),
    logLevel: "warning"
  })
  try {
    return await new Promise<A>((resolve, reject) => {
      const child = fork(outfile, [...args], {
        execPath: process.execPath,
        execArgv: ["--expose-gc"],
        env: { ...process.env, MOON_BENCH_DIR: benchDirectory },
        stdio: ["ignore", "inherit", "inherit", "ipc"]
      })
      let answered = false
      child.on("message", (message: { readonly result?: A; readonly error?: string }) => {
        answered = true
        if (message.error !== undefined) reject(new Error(message.error))
        else resolve(message.result!)
      })
      child.on("error", reject)
      child.on("exit", (code) => {
        if (!answered) reject(new Error(`${what} exited with ${code} without an answer`))
      })
    })
  } finally {
    rmSync(outfile, { force: true })
  }
}

/** In the child: runs `task` and sends its result (or its error) to the parent, then exits. */
export const answer = (task: Promise<unknown>): void => {
  task.then(
    (result) => process.send!({ result }, () => process.exit(0)),
    (error) =>
      process.send!({ error: String(error instanceof Error ? error.stack ?? error : error) }, () => process.exit(1))
  )
}

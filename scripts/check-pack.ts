/**
 * `npm run check:pack`: what a user installing the package gets.
 *
 * Packs the repository (`prepack` builds dist/), runs `attw` (the ESM-only
 * profile: 1.0 has no CommonJS build, as Effect 4 has none) and `publint` on
 * the tarball, installs it into an empty project beside its peer dependencies
 * only, and there compiles a consumer of every entry in package.json's
 * `exports` (each `*` expanded to the files it matches) as `.mts`,
 * type-checked under `module` NodeNext and Node16 with `skipLibCheck: false`.
 * It runs the compiled consumer: it imports every entry, refreshes a session
 * against `MockMoonServer`, and shows that no private path resolves. Last, it runs
 * the package's `moon-mock-server` command as installed (`node_modules/.bin`):
 * it must print a refresh token, rotate it once, reject its reuse, and report
 * both at the stats URL it printed. Exits 1 at the first thing that fails,
 * with its output.
 *
 * Everything happens in a temporary directory outside the repository,
 * removed at the end.
 */
import { spawn, spawnSync } from "node:child_process"
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs"
import { createRequire } from "node:module"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Readline from "node:readline"
import { fileURLToPath } from "node:url"

const repo = fileURLToPath(new URL("..", import.meta.url))
const require = createRequire(import.meta.url)
const started = Date.now()

class CheckFailed extends Error {}

const run = (command: string, args: ReadonlyArray<string>, cwd: string): string => {
  const result = spawnSync(command, args, { cwd, encoding: "utf8", maxBuffer: 64 * 1024 * 1024 })
  if (result.status !== 0) {
    throw new CheckFailed(
      `${command} ${args.join(" ")} (in ${cwd}) exited with ${result.status}\n${result.stdout}${result.stderr}`
    )
  }
  return result.stdout
}

const readJson = (path: string): any => JSON.parse(readFileSync(path, "utf8"))

const filesUnder = (dir: string): Array<string> =>
  readdirSync(dir, { recursive: true, encoding: "utf8" })
    .filter((path) => statSync(Path.join(dir, path)).isFile())
    .map((path) => path.split(Path.sep).join("/"))

// ---------------------------------------------------------------------------
// Which subpaths the package's `exports` make public, and which private
// ---------------------------------------------------------------------------

type Exports = Record<string, unknown>

/** Node's rule: an exact key first, else the pattern with the longest prefix before its `*`. */
const exportKeyFor = (exports: Exports, subpath: string): string | undefined => {
  if (subpath in exports) return subpath
  let best: string | undefined
  for (const key of Object.keys(exports)) {
    const star = key.indexOf("*")
    if (star === -1) continue
    const prefix = key.slice(0, star)
    const suffix = key.slice(star + 1)
    const matches = subpath.startsWith(prefix) && subpath.endsWith(suffix) &&
      subpath.length >= key.length - 1
    if (matches && (best === undefined || prefix.length > best.indexOf("*"))) best = key
  }
  return best
}

/** Every subpath `exports` names or that one of its patterns matches in the installed files. */
const subpathsOf = (exports: Exports, installed: string) => {
  const files = filesUnder(installed)
  const subpaths = new Set<string>()
  for (const [key, value] of Object.entries(exports)) {
    if (key === "./package.json") continue
    if (!key.includes("*")) {
      subpaths.add(key)
      continue
    }
    if (value === null) continue
    const target = (value as { default: string }).default.slice(2)
    const [prefix = "", suffix = ""] = target.split("*")
    for (const file of files) {
      if (file.startsWith(prefix) && file.endsWith(suffix)) {
        subpaths.add(key.replace("*", file.slice(prefix.length, file.length - suffix.length)))
      }
    }
  }
  const isPublic = (subpath: string) => {
    const key = exportKeyFor(exports, subpath)
    return key !== undefined && exports[key] !== null
  }
  const all = [...subpaths].sort()
  return { public: all.filter(isPublic), private: all.filter((subpath) => !isPublic(subpath)) }
}

const specifier = (name: string, subpath: string) => subpath === "." ? name : `${name}/${subpath.slice(2)}`

// ---------------------------------------------------------------------------
// The consumer, compiled as .mts
// ---------------------------------------------------------------------------

const consumerSource = (
  name: string,
  entries: { readonly public: ReadonlyArray<string>; readonly private: ReadonlyArray<string> }
) => {
  const imports = entries.public.map((subpath, i) => `import * as entry${i} from "${specifier(name, subpath)}"`)
  const privateTypes = entries.private.map((subpath, i) =>
    `// @ts-expect-error: a private path has no types\n` +
    `export type Private${i} = typeof import("${specifier(name, subpath)}")`
  )
  const table = entries.public.map((subpath, i) => `  "${subpath}": entry${i}`)
  return `${imports.join("\n")}
import { FetchHttpClient } from "effect/http"
import { Effect } from "effect"
import { RefreshClient } from "${name}"
import { MockMoonServer } from "${name}/testing"

${privateTypes.join("\n")}

const entries: Record<string, object> = {
${table.join(",\n")}
}

const resolves = (path: string) => {
  try {
    import.meta.resolve(path)
    return true
  } catch {
    return false
  }
}

const refresh = Effect.gen(function*() {
  const server = yield* MockMoonServer.make()
  const seeded = yield* server.issueSession({ user: { email: "pack@example.com" } })
  const client = yield* RefreshClient.make({ baseUrl: server.url })
  const session = yield* client.refresh(seeded.refreshToken)
  return session.user.email
}).pipe(Effect.scoped, Effect.provide(FetchHttpClient.layer))

Effect.runPromise(refresh).then((user) => {
  const names = Object.fromEntries(
    Object.entries(entries).map(([subpath, module]) => [subpath, Object.keys(module).filter((k) => k !== "default").sort()])
  )
  const reachable = ${JSON.stringify(entries.private.map((subpath) => specifier(name, subpath)))}.filter(resolves)
  console.log(JSON.stringify({ user, names, reachable }))
})
`
}

/** What the consumer prints. */
interface ConsumerOutput {
  readonly user: string | null
  readonly names: Record<string, ReadonlyArray<string>>
  readonly reachable: ReadonlyArray<string>
}

// ---------------------------------------------------------------------------

// ---------------------------------------------------------------------------
// The moon-mock-server command, as installed
// ---------------------------------------------------------------------------

/** The command's stdout lines until it prints `name=…`: the value. */
const printed = async (lines: AsyncIterator<string>, name: string, output: Array<string>): Promise<string> => {
  for (;;) {
    const line = await lines.next()
    if (line.done) throw new CheckFailed(`moon-mock-server ended before printing ${name}:\n${output.join("\n")}`)
    output.push(line.value)
    const match = line.value.match(new RegExp(`${name}[=\\s]+(\\S+)`))
    if (match?.[1] !== undefined) return match[1]
  }
}

const checkBin = async (consumer: string) => {
  const bin = Path.join(consumer, "node_modules", ".bin", "moon-mock-server")
  const child = spawn(bin, ["--port", "0"], { cwd: consumer, stdio: ["pipe", "pipe", "pipe"] })
  const output: Array<string> = []
  child.stderr.on("data", (chunk) => output.push(String(chunk)))
  const exited = new Promise<number | null>((resolve) => child.once("exit", resolve))
  try {
    const lines = Readline.createInterface({ input: child.stdout })[Symbol.asyncIterator]()
    const stats = await printed(lines, "curl", output)
    const baseUrl = await printed(lines, "MOON_BASE_URL", output)
    const token = await printed(lines, "MOON_REFRESH_TOKEN", output)
    const refresh = () =>
      fetch(`${baseUrl}/auth/refresh`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ refresh_token: token })
      })
    const first = await refresh()
    const body = await first.json() as { refresh_token?: unknown }
    // The same token again: a reuse, which the default server rejects.
    const again = await refresh()
    const counters = await (await fetch(stats)).json()
    const expected = { refreshRequests: 2, rotations: 1, reuseRejections: 1 }
    const matches = Object.entries(expected).every(([name, value]) => counters[name] === value)
    if (first.status !== 200 || typeof body.refresh_token !== "string" || again.status !== 500 || !matches) {
      throw new CheckFailed(
        `moon-mock-server: refresh ${first.status}, reuse ${again.status}, stats ${JSON.stringify(counters)}`
      )
    }
    console.log(
      `bin:      node_modules/.bin/moon-mock-server answered a refresh (200), rejected its reuse (500), ` +
        `and ${stats} reported ${JSON.stringify(expected)}`
    )
  } finally {
    child.kill("SIGTERM")
    const code = await exited
    // SIGTERM interrupts the server: it exits on its own, without an error.
    if (code !== 0 && code !== null) console.error(`moon-mock-server exited with ${code}: ${output.join("\n")}`)
  }
}

// ---------------------------------------------------------------------------

const main = (tmp: string) => {
  const pkg = readJson(Path.join(repo, "package.json"))

  // As on a fresh clone: no dist/ until `prepack` builds it.
  rmSync(Path.join(repo, "dist"), { recursive: true, force: true })
  const packed = JSON.parse(run("npm", ["pack", "--json", "--pack-destination", tmp], repo))[0]
  const tarball = Path.join(tmp, packed.filename)
  console.log(
    `pack:     ${packed.filename}, ${packed.entryCount} files, ${(packed.size / 1024).toFixed(0)} KiB ` +
      `(${(packed.unpackedSize / 1024).toFixed(0)} KiB unpacked)`
  )

  // Only the peer dependencies, at the versions the tests ran against.
  const consumer = Path.join(tmp, "consumer")
  mkdirSync(consumer)
  writeFileSync(
    Path.join(consumer, "package.json"),
    JSON.stringify({ name: "pack-consumer", private: true, type: "module" })
  )
  const peers = Object.keys(pkg.peerDependencies).map((peer) => `${peer}@${require(`${peer}/package.json`).version}`)
  run("npm", ["install", "--no-audit", "--no-fund", "--prefer-offline", tarball, ...peers], consumer)
  const installed = Path.join(consumer, "node_modules", pkg.name)
  console.log(`install:  ${pkg.name} with ${peers.join(", ")} into an empty project`)

  // Every subpath, from the exports of the package as installed.
  const entries = subpathsOf(readJson(Path.join(installed, "package.json")).exports, installed)
  console.log(`entries:  public ${entries.public.join(" ")}`)
  console.log(`          private ${entries.private.join(" ")}`)
  if (entries.public.length === 0) throw new CheckFailed("no public entry found in exports")

  // attw exits 1 on any problem. Its own discovery skips patterns, so the expanded subpaths are named.
  // The ESM-only profile leaves out the node10 and require resolutions, which an ESM-only package fails
  // by design.
  const attw = Path.join(repo, "node_modules", ".bin", "attw")
  const extra = entries.public.filter((subpath) => !(subpath in pkg.exports))
  console.log(
    run(attw, [
      tarball,
      "--profile",
      "esm-only",
      "--format",
      "table-flipped",
      "--no-color",
      ...(extra.length > 0 ? ["--include-entrypoints", ...extra] : [])
    ], repo).trimEnd()
  )
  // publint: the package.json fields against the files packed (exports, types, bin); warnings fail too.
  console.log(
    run(Path.join(repo, "node_modules", ".bin", "publint"), ["run", tarball, "--level", "warning", "--strict"], repo)
      .trimEnd()
  )

  writeFileSync(Path.join(consumer, "consumer.mts"), consumerSource(pkg.name, entries))
  writeFileSync(
    Path.join(consumer, "tsconfig.json"),
    JSON.stringify({
      compilerOptions: {
        target: "ES2022",
        // effect's own types name DOM ones (Storage, Transferable).
        lib: ["ES2022", "DOM"],
        strict: true,
        skipLibCheck: false,
        types: ["node"],
        typeRoots: [Path.join(repo, "node_modules", "@types")],
        outDir: "out"
      },
      files: ["consumer.mts"]
    })
  )
  // Node16 is the stricter of the two; NodeNext also emits the program run below.
  const tsc = require.resolve("typescript/bin/tsc")
  run(process.execPath, [tsc, "-p", ".", "--module", "Node16", "--moduleResolution", "Node16", "--noEmit"], consumer)
  run(process.execPath, [tsc, "-p", ".", "--module", "NodeNext", "--moduleResolution", "NodeNext"], consumer)
  console.log("types:    consumer.mts type-checks under Node16 and NodeNext (strict, skipLibCheck false)")

  const result: ConsumerOutput = JSON.parse(run(process.execPath, [Path.join("out", "consumer.mjs")], consumer))
  const empty = entries.public.filter((subpath) => (result.names[subpath] ?? []).length === 0)
  if (empty.length > 0) throw new CheckFailed(`no exports from ${empty.join(", ")}`)
  if (result.user !== "pack@example.com") throw new CheckFailed(`refresh returned ${result.user}`)
  if (result.reachable.length > 0) throw new CheckFailed(`private paths resolve: ${result.reachable}`)
  // CommonJS is gone: a require() of the package must not find a CommonJS build (Node 22 may load
  // ESM through require; what must not exist is a second, CommonJS copy of the library).
  const cjsFiles = filesUnder(installed).filter((file) => file.startsWith("dist/cjs/"))
  if (cjsFiles.length > 0) throw new CheckFailed(`a CommonJS build was packed: ${cjsFiles.slice(0, 3).join(", ")}`)
  console.log(
    `run:      ${entries.public.length} entries import as ESM; a refresh against MockMoonServer works; ` +
      `${entries.private.length} private paths do not resolve`
  )
  return consumer
}

const tmp = mkdtempSync(Path.join(Os.tmpdir(), "moon-refresh-pack-"))
try {
  await checkBin(main(tmp))
  console.log(`pack check passed in ${((Date.now() - started) / 1000).toFixed(0)} s`)
} catch (error) {
  console.error(error instanceof CheckFailed ? `pack check FAILED: ${error.message}` : error)
  process.exitCode = 1
} finally {
  rmSync(tmp, { recursive: true, force: true })
}

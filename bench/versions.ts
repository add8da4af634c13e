/**
 * `npm run bench:versions`: 0.3 (the last release on Effect 3) and this tree
 * (1.0, Effect 4) side by side, on the same machine, in one command.
 *
 * The two cannot share a process (Effect 3 and Effect 4 are different
 * packages with the same name), so each runs its own full `npm run bench`, one
 * after the other: 0.3 from its tag (in a clone without tags, from the
 * commit CHANGELOG.md names for it), extracted with `git archive` into
 * `.bench-versions/<tag>-<commit>` (git-ignored) with its own lockfile's
 * dependencies, then this tree. Every figure compared is a ratio to a floor
 * that bench measured in the same rounds (a bare `FetchHttpClient` POST of
 * the same Effect version, one manager's read loop, the fiber floor) or a
 * count, so a machine that got busier between the two runs moves both floors,
 * not only one side. The absolute figures are printed too, with the load averages.
 *
 * `npm run bench:versions -- --reuse` reads the `bench/results.json` each side
 * wrote last time instead of measuring again (a table only).
 */
import { execFileSync, spawnSync } from "node:child_process"
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"

const repo = fileURLToPath(new URL("..", import.meta.url))
const tag = "v0.3.0"
const reuse = process.argv.includes("--reuse")

const sh = (command: string, args: ReadonlyArray<string>, cwd: string) => {
  console.log(`$ (${Path.relative(repo, cwd) || "."}) ${command} ${args.join(" ")}`)
  const { status } = spawnSync(command, args, { cwd, stdio: "inherit" })
  if (status !== 0) throw new Error(`${command} ${args.join(" ")} exited with ${status}`)
}

/**
 * The commit of 0.3.0: its tag, or, in a clone that came without tags, the
 * commit CHANGELOG.md names for it ("Released in commit `…` (tag `v0.3.0`)").
 */
const oldCommit = (): string => {
  const tagged = spawnSync("git", ["rev-parse", "--verify", "--quiet", `${tag}^{commit}`], {
    cwd: repo,
    encoding: "utf8"
  })
  if (tagged.status === 0) return tagged.stdout.trim()
  const changelog = readFileSync(Path.join(repo, "CHANGELOG.md"), "utf8")
  const line = changelog.split("\n").find((text) => text.includes(`(tag \`${tag}\`)`))
  const named = line === undefined ? null : /Released in commit `([0-9a-f]{7,40})`/.exec(line)
  if (named === null) throw new Error(`no tag ${tag}, and CHANGELOG.md names no commit for it`)
  const full = spawnSync("git", ["rev-parse", "--verify", "--quiet", `${named[1]}^{commit}`], {
    cwd: repo,
    encoding: "utf8"
  })
  if (full.status !== 0) {
    throw new Error(
      `no tag ${tag}, and the commit CHANGELOG.md names for it (${
        named[1]
      }) is not in this clone: is it shallow? (git fetch --unshallow --tags)`
    )
  }
  console.log(`no tag ${tag} in this clone: using commit ${named[1]}, which CHANGELOG.md names for it`)
  return full.stdout.trim()
}

const commit = oldCommit()
const old = Path.join(repo, ".bench-versions", `${tag}-${commit.slice(0, 12)}`)

/** 0.3's tree with its dependencies installed, once. */
const prepareOld = () => {
  if (!existsSync(Path.join(old, "package.json"))) {
    mkdirSync(old, { recursive: true })
    let archive: Buffer
    try {
      archive = execFileSync("git", ["archive", "--format=tar", commit], { cwd: repo, maxBuffer: 256 * 1024 * 1024 })
    } catch (cause) {
      throw new Error(
        `git archive ${commit} (${tag}) failed: is this clone shallow? (git fetch --unshallow --tags)`,
        { cause }
      )
    }
    execFileSync("tar", ["-x", "-C", old], { input: archive })
  }
  if (!existsSync(Path.join(old, "node_modules"))) sh("npm", ["ci", "--no-audit", "--no-fund"], old)
}

interface Results {
  readonly machine: { readonly node: string; readonly loadAverageAtStart: ReadonlyArray<number> }
  readonly targets: {
    readonly roundTrip: {
      readonly overFetch: Record<string, number>
      /** Table 1's figures, where the verdict is on table 1v (the pairs measured alone); before, `overFetch` was table 1's. */
      readonly overFetchTable1?: Record<string, number>
      readonly control?: { readonly ratio: number }
    }
    readonly auth: { readonly ratio: number; readonly p50Ratio: number; readonly table1?: number }
    readonly stampede: { readonly posts: number; readonly ratioToFiberFloor: number }
    readonly hotPath: { readonly readsPerSecond: number }
    readonly pool: { readonly liveBytesPerSession: Record<string, number>; readonly readsPerSecond: number }
    readonly size: { readonly ownShareGzippedBytes: number; readonly ownShareOverSchemaGzippedBytes: number }
  }
  readonly stampede?: { readonly rows?: ReadonlyArray<{ readonly client?: string; readonly millis?: number }> }
}

const read = (root: string): Results => JSON.parse(readFileSync(Path.join(root, "bench", "results.json"), "utf8"))

const main = () => {
  prepareOld()
  if (!reuse) {
    sh("npm", ["run", "bench"], old)
    sh("npm", ["run", "bench"], repo)
  }
  const a = read(old)
  const b = read(repo)
  const kb = (bytes: number) => `${(bytes / 1024).toFixed(1)} KB`
  const x = (ratio: number) => `${ratio.toFixed(2)}x`
  const scales = Object.keys(b.targets.pool.liveBytesPerSession)
  // Side by side, the figures both benches measure the same way: table 1 (every client, interleaved).
  const table1 = (results: Results) => results.targets.roundTrip.overFetchTable1 ?? results.targets.roundTrip.overFetch
  const auth1 = (results: Results) => results.targets.auth.table1 ?? results.targets.auth.ratio
  const alone = b.targets.roundTrip.overFetchTable1 === undefined ? undefined : b.targets.roundTrip
  const rows: Array<[string, string, string, string]> = [
    ["refresh round trip / bare FetchHttpClient floor [cl] (table 1)", x(table1(a).cl!), x(table1(b).cl!), "<= 1.10x"],
    ["  same, chunked", x(table1(a).chunked!), x(table1(b).chunked!), "<= 1.10x"],
    ["  same, gzip", x(table1(a).gzip!), x(table1(b).gzip!), "<= 1.10x"],
    ["AuthHttpClient per request / same client, fixed token (table 1)", x(auth1(a)), x(auth1(b)), "<= 1.05x"],
    ...(alone === undefined ? [] : [
      [
        "  1.0's verdict: the pairs measured alone (table 1v), cl / chunked / gzip",
        "-",
        `${x(alone.overFetch.cl!)} / ${x(alone.overFetch.chunked!)} / ${x(alone.overFetch.gzip!)}`,
        "<= 1.10x"
      ] as [string, string, string, string],
      ["  AuthHttpClient, table 1v", "-", x(b.targets.auth.ratio), "<= 1.05x"] as [string, string, string, string],
      ["  A/A control (the floor against itself), table 1v", "-", x(alone.control!.ratio), "1.00x"] as [
        string,
        string,
        string,
        string
      ]
    ]),
    [
      "hot path reads/s (one manager)",
      a.targets.hotPath.readsPerSecond.toFixed(0),
      b.targets.hotPath.readsPerSecond.toFixed(0),
      ">= 2,000,000"
    ],
    ["10,000-caller stampede: POSTs", String(a.targets.stampede.posts), String(b.targets.stampede.posts), "1"],
    [
      "10,000-caller stampede / fiber floor",
      x(a.targets.stampede.ratioToFiberFloor),
      x(b.targets.stampede.ratioToFiberFloor),
      "<= 1.5x"
    ],
    ...scales.map((scale): [string, string, string, string] => [
      `pool heap per live session, ${scale} sessions`,
      `${a.targets.pool.liveBytesPerSession[scale]?.toFixed(0) ?? "-"} B`,
      `${b.targets.pool.liveBytesPerSession[scale]?.toFixed(0)} B`,
      "<= 5,000 B"
    ]),
    [
      "pool reads/s",
      a.targets.pool.readsPerSecond.toFixed(0),
      b.targets.pool.readsPerSecond.toFixed(0),
      ">= 1,000,000"
    ],
    [
      "browser bundle: own share over a page with Schema + HTTP client (gzip)",
      kb(a.targets.size.ownShareOverSchemaGzippedBytes),
      kb(b.targets.size.ownShareOverSchemaGzippedBytes),
      "<= 30 KB (1.0)"
    ],
    [
      "browser bundle: own share over the HTTP client alone (gzip)",
      kb(a.targets.size.ownShareGzippedBytes),
      kb(b.targets.size.ownShareGzippedBytes),
      "-"
    ]
  ]
  const header: [string, string, string, string] = [
    "figure",
    `0.3 (Effect 3, node ${a.machine.node})`,
    `1.0 (Effect 4, node ${b.machine.node})`,
    "target"
  ]
  const widths = header.map((_, i) => Math.max(...[header, ...rows].map((row) => row[i]!.length)))
  const line = (row: ReadonlyArray<string>) => `| ${row.map((cell, i) => cell.padEnd(widths[i]!)).join(" | ")} |`
  console.log(`\n${line(header)}\n| ${widths.map((w) => "-".repeat(w)).join(" | ")} |\n${rows.map(line).join("\n")}`)
  console.log(
    `\nload average at the start of each run: 0.3 ${a.machine.loadAverageAtStart.join(" ")}; ` +
      `1.0 ${b.machine.loadAverageAtStart.join(" ")}`
  )
  writeFileSync(
    Path.join(repo, "bench", "versions.json"),
    `${JSON.stringify({ generatedAt: new Date().toISOString(), old: tag, oldCommit: commit, rows }, null, 2)}\n`
  )
  console.log("Wrote bench/versions.json.")
}

main()

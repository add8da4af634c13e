/**
 * What every benchmark section shares: the server in its child process, and
 * the statistics.
 */
import { fork } from "node:child_process"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import type { Command, Minted, Stats } from "./server.js"

export interface ServerHandle {
  /** `http://127.0.0.1:PORT`, no trailing slash. */
  readonly baseUrl: string
  readonly mint: (lifetimeSeconds: number) => Promise<Minted>
  readonly expireAccessTokens: () => Promise<void>
  readonly stats: () => Promise<Stats>
  readonly reset: () => Promise<void>
  readonly close: () => void
}

/**
 * Forks `server.ts` with this process's Node options (the tsx loader), and
 * waits until it listens.
 */
export const startServer = (): Promise<ServerHandle> =>
  new Promise((resolve, reject) => {
    // From a bundled section (`compiled.ts`), this file is not next to `server.ts`: it says where it is.
    const directory = process.env["MOON_BENCH_DIR"] ?? dirname(fileURLToPath(import.meta.url))
    const child = fork(join(directory, "server.ts"), [], {
      // The server is TypeScript: tsx runs it, whether this process runs under tsx or not.
      execArgv: ["--import", "tsx"],
      cwd: join(directory, ".."),
      stdio: ["ignore", "inherit", "inherit", "ipc"]
    })
    let next = 0
    const pending = new Map<number, (result: unknown) => void>()
    const call = <A>(command: Command): Promise<A> =>
      new Promise((done) => {
        const id = ++next
        pending.set(id, done as (result: unknown) => void)
        child.send({ id, command })
      })
    child.on("error", reject)
    child.on("message", (message: { readonly ready?: number; readonly id?: number; readonly result?: unknown }) => {
      if (message.ready !== undefined) {
        resolve({
          baseUrl: `http://127.0.0.1:${message.ready}`,
          mint: (lifetimeSeconds) => call({ op: "mint", lifetimeSeconds }),
          expireAccessTokens: () => call({ op: "expireAccessTokens" }),
          stats: () => call({ op: "stats" }),
          reset: () => call({ op: "reset" }),
          close: () => child.kill()
        })
        return
      }
      const done = pending.get(message.id!)
      pending.delete(message.id!)
      done?.(message.result)
    })
  })

export const median = (values: ReadonlyArray<number>): number => percentile(values, 50)

/** Nearest-rank percentile. */
export const percentile = (values: ReadonlyArray<number>, p: number): number => {
  if (values.length === 0) return Number.NaN
  const sorted = [...values].sort((a, b) => a - b)
  const rank = Math.ceil((p / 100) * sorted.length)
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!
}

/** Rounds for display and JSON: 3 significant digits, at most 3 decimals. */
export const round = (value: number): number => {
  if (!Number.isFinite(value)) return value
  const digits = Math.max(0, Math.min(3, 2 - Math.floor(Math.log10(Math.abs(value) || 1))))
  return Number(value.toFixed(digits))
}

/** Prints rows as an aligned text table. */
export const printTable = (title: string, rows: ReadonlyArray<Record<string, string | number>>): void => {
  console.log(`\n${title}`)
  if (rows.length === 0) return
  const columns = Object.keys(rows[0]!)
  const cell = (value: string | number | undefined) =>
    value === undefined ? "" : typeof value === "number" ? String(round(value)) : value
  const widths = columns.map((column) => Math.max(column.length, ...rows.map((row) => cell(row[column]).length)))
  const line = (cells: ReadonlyArray<string>) =>
    cells.map((text, i) => (i === 0 ? text.padEnd(widths[i]!) : text.padStart(widths[i]!))).join("  ")
  console.log(line(columns))
  console.log(line(widths.map((width) => "-".repeat(width))))
  for (const row of rows) console.log(line(columns.map((column) => cell(row[column]))))
}

/** Rotates `items` by `by`, so that no runner always goes first in a round. */
export const rotate = <A>(items: ReadonlyArray<A>, by: number): Array<A> => {
  const k = ((by % items.length) + items.length) % items.length
  return [...items.slice(k), ...items.slice(0, k)]
}

export const sleep = (millis: number) => new Promise<void>((resolve) => setTimeout(resolve, millis))

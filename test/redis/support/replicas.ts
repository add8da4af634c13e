/**
 * Starts replica.ts as Node processes of their own and talks to them: waits
 * for their `ready` line, asks them for their summary, or kills them.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import type { Summary } from "../replica.js"

const script = fileURLToPath(new URL("../replica.ts", import.meta.url))

export interface ReplicaEnv {
  readonly REDIS_URL: string
  readonly KEY: string
  readonly MOON_BASE_URL: string
  readonly READERS: number
  readonly MARGIN_MS: number
  readonly LEASE_MS: number
}

export interface Replica {
  readonly pid: number
  /** Lines it printed that are not its JSON (its logs). */
  readonly logs: Array<string>
  /** Asks for its summary and waits for it to exit. */
  readonly stop: () => Promise<Summary>
  readonly kill: () => void
  readonly exited: Promise<void>
}

export const startReplica = (env: ReplicaEnv): Promise<Replica> =>
  new Promise((resolve, reject) => {
    const child: ChildProcess = spawn(process.execPath, ["--import", "tsx", script], {
      env: { ...process.env, ...Object.fromEntries(Object.entries(env).map(([k, v]) => [k, String(v)])) },
      stdio: ["pipe", "pipe", "pipe"]
    })
    const logs: Array<string> = []
    let stderr = ""
    let summary: ((summary: Summary) => void) | undefined
    const exited = new Promise<void>((done) => child.once("exit", () => done()))
    let buffered = ""
    child.stdout!.on("data", (chunk: Buffer) => {
      buffered += chunk.toString("utf8")
      let end: number
      while ((end = buffered.indexOf("\n")) !== -1) {
        const line = buffered.slice(0, end)
        buffered = buffered.slice(end + 1)
        let message: { ready?: number; summary?: Summary } | undefined
        try {
          message = line.startsWith("{") ? JSON.parse(line) : undefined
        } catch {
          message = undefined
        }
        if (message?.ready !== undefined) resolve(replica)
        else if (message?.summary !== undefined) summary?.(message.summary)
        else logs.push(line)
      }
    })
    child.stderr!.on("data", (chunk: Buffer) => {
      stderr += chunk.toString("utf8")
    })
    child.once("exit", (code, signal) => {
      reject(new Error(`replica exited (${code ?? signal}) before it was ready: ${stderr.trim()}`))
    })
    const replica: Replica = {
      pid: child.pid!,
      logs,
      exited,
      kill: () => child.kill("SIGKILL"),
      stop: () =>
        new Promise<Summary>((done, failed) => {
          const timer = setTimeout(() => {
            child.kill("SIGKILL")
            failed(new Error(`replica ${child.pid} gave no summary within 20 s: ${stderr.trim()}`))
          }, 20_000)
          summary = (s) => {
            clearTimeout(timer)
            exited.then(() => done(s))
          }
          child.stdin!.end("stop\n")
        })
    }
  })

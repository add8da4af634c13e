/**
 * A real `redis-server` for tests and benchmarks: started from `PATH` on
 * 127.0.0.1 and a free port, with its data in a directory of its own, and
 * stopped, killed, frozen or restarted on the same port and data.
 *
 * Plain promises, so that vitest's global setup and the benchmarks can use it.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { accessSync, constants, mkdtempSync, rmSync } from "node:fs"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"

export const installHint = "install it: apt-get install redis-server (Debian, Ubuntu), brew install redis (macOS)"

/** The `redis-server` on `PATH`, if any. */
export const findRedisServer = (): string | undefined => {
  for (const dir of (process.env.PATH ?? "").split(Path.delimiter)) {
    const candidate = Path.join(dir, "redis-server")
    try {
      accessSync(candidate, constants.X_OK)
      return candidate
    } catch {
      // not in this directory
    }
  }
  return undefined
}

/** A port nothing listens on right now. */
export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = Net.createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as Net.AddressInfo).port
      server.close(() => resolve(port))
    })
  })

/** Sends one inline command and resolves with the first line of the answer. */
export const rawCommand = (port: number, command: string, timeoutMs = 1_000): Promise<string> =>
  new Promise((resolve, reject) => {
    const socket = Net.connect(port, "127.0.0.1")
    let answer = ""
    let settled = false
    const done = (result: Error | string) => {
      if (settled) return
      settled = true
      socket.destroy()
      if (typeof result === "string") resolve(result)
      else reject(result)
    }
    socket.setTimeout(timeoutMs, () => done(new Error(`no answer to ${command} within ${timeoutMs} ms`)))
    socket.once("error", done)
    socket.once("close", () => done(new Error(`the connection closed before an answer to ${command}`)))
    socket.on("data", (chunk) => {
      answer += chunk.toString("utf8")
      const end = answer.indexOf("\r\n")
      if (end !== -1) done(answer.slice(0, end))
    })
    socket.once("connect", () => socket.write(`${command}\r\n`))
  })

export interface RedisServer {
  readonly url: string
  readonly port: number
  /** Where it keeps `dump.rdb`. */
  readonly dir: string
  /** Writes a snapshot now (`SAVE`): a restart loads it. */
  readonly save: () => Promise<void>
  /** SIGKILL: nothing since the last `save` survives. */
  readonly kill: () => Promise<void>
  /** `SHUTDOWN SAVE`: everything survives a restart. */
  readonly shutdownSaving: () => Promise<void>
  /** SIGSTOP / SIGCONT: a server that stops answering without closing its connections. */
  readonly freeze: () => void
  readonly thaw: () => void
  /** Starts again on the same port and directory (loading `dump.rdb` if there is one). */
  readonly restart: () => Promise<void>
  /** Stops it (if running) and removes its directory. */
  readonly stop: () => Promise<void>
}

export interface StartOptions {
  readonly port?: number | undefined
}

const exited = (child: ChildProcess): Promise<void> =>
  child.exitCode !== null || child.signalCode !== null
    ? Promise.resolve()
    : new Promise((resolve) => child.once("exit", () => resolve()))

const launch = async (bin: string, port: number, dir: string): Promise<ChildProcess> => {
  const child = spawn(bin, [
    "--port",
    String(port),
    "--bind",
    "127.0.0.1",
    "--save",
    "",
    "--appendonly",
    "no",
    "--dir",
    dir,
    "--loglevel",
    "warning"
  ], { stdio: ["ignore", "ignore", "pipe"] })
  let stderr = ""
  child.stderr?.on("data", (chunk) => {
    stderr += chunk.toString("utf8")
  })
  const deadline = Date.now() + 10_000
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`redis-server exited with ${child.exitCode}: ${stderr.trim()}`)
    try {
      if ((await rawCommand(port, "PING", 200)) === "+PONG") return child
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  child.kill("SIGKILL")
  throw new Error(`redis-server did not answer PING on port ${port} within 10 s: ${stderr.trim()}`)
}

/** Starts a `redis-server` from `PATH`; fails with {@link installHint} when there is none. */
export const startRedisServer = async (options: StartOptions = {}): Promise<RedisServer> => {
  const bin = findRedisServer()
  if (bin === undefined) throw new Error(`redis-server is not on PATH: ${installHint}`)
  const port = options.port ?? await freePort()
  const dir = mkdtempSync(Path.join(Os.tmpdir(), "moon-refresh-redis-"))
  let child = await launch(bin, port, dir)
  const signal = async (name: NodeJS.Signals) => {
    child.kill(name)
    await exited(child)
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    dir,
    save: async () => {
      const answer = await rawCommand(port, "SAVE", 5_000)
      if (answer !== "+OK") throw new Error(`SAVE answered ${answer}`)
    },
    kill: () => signal("SIGKILL"),
    shutdownSaving: async () => {
      // The server closes the connection instead of answering.
      await rawCommand(port, "SHUTDOWN SAVE", 5_000).catch(() => undefined)
      await exited(child)
    },
    freeze: () => child.kill("SIGSTOP"),
    thaw: () => child.kill("SIGCONT"),
    restart: async () => {
      child = await launch(bin, port, dir)
    },
    stop: async () => {
      child.kill("SIGCONT")
      await signal("SIGKILL")
      rmSync(dir, { recursive: true, force: true })
    }
  }
}

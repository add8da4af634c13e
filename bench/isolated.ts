/**
 * Runs one section in a process of its own, so that its heap and its JIT
 * state are not those left by the other sections: the memory readings see
 * only the manager's objects, the hot path only its own call sites. Forked by
 * `runIsolated`; answers over IPC and exits.
 */
import { fork } from "node:child_process"
import { fileURLToPath } from "node:url"
import { type HotPathRow, measureHotPath } from "./hotpath.js"
import { measureMemory, type MemoryResult } from "./memory.js"

interface Sections {
  readonly hotPath: { readonly options: Parameters<typeof measureHotPath>[0]; readonly result: Array<HotPathRow> }
  readonly memory: { readonly options: Parameters<typeof measureMemory>[0]; readonly result: MemoryResult }
}

export const runIsolated = <K extends keyof Sections>(
  section: K,
  options: Sections[K]["options"]
): Promise<Sections[K]["result"]> =>
  new Promise((resolve, reject) => {
    const child = fork(fileURLToPath(import.meta.url), [section, JSON.stringify(options)], {
      execArgv: process.execArgv,
      stdio: ["ignore", "inherit", "inherit", "ipc"]
    })
    let answered = false
    child.on("message", (message: { readonly result?: Sections[K]["result"]; readonly error?: string }) => {
      answered = true
      if (message.error !== undefined) reject(new Error(message.error))
      else resolve(message.result!)
    })
    child.on("error", reject)
    child.on("exit", (code) => {
      if (!answered) reject(new Error(`section ${section} exited with ${code} without an answer`))
    })
  })

const run = (section: string, options: unknown): Promise<unknown> => {
  switch (section) {
    case "hotPath":
      return measureHotPath(options as Sections["hotPath"]["options"])
    case "memory":
      return measureMemory(options as Sections["memory"]["options"])
    default:
      return Promise.reject(new Error(`unknown section ${section}`))
  }
}

if (process.send !== undefined && process.argv[2] !== undefined) {
  run(process.argv[2], JSON.parse(process.argv[3] ?? "null")).then(
    (result) => process.send!({ result }, () => process.exit(0)),
    (error) => process.send!({ error: String(error) }, () => process.exit(1))
  )
}

/**
 * Runs one section in a process of its own, so that its heap and its JIT
 * state are not those left by the other sections (the memory readings see
 * only the manager's objects, the hot path only its own call sites), on the
 * library compiled as users run it (see `compiled.ts`). Forked by
 * `runIsolated`; answers over IPC and exits.
 */
import { fileURLToPath } from "node:url"
import { answer, runCompiled } from "./compiled.js"
import { type ServerHandle, startServer } from "./harness.js"
import { type HotPathRow, measureHotPath } from "./hotpath.js"
import { measureJoin } from "./join.js"
import { measureMemory, type MemoryResult } from "./memory.js"
import { measureMicro } from "./micro.js"
import { measureRoundTrips, type RoundTripOptions, type RoundTripRow } from "./roundtrip.js"
import { measureStampede, type StampedeOptions } from "./stampede.js"

interface Sections {
  readonly hotPath: { readonly options: Parameters<typeof measureHotPath>[0]; readonly result: Array<HotPathRow> }
  readonly memory: { readonly options: Parameters<typeof measureMemory>[0]; readonly result: MemoryResult }
  readonly micro: {
    readonly options: Parameters<typeof measureMicro>[0]
    readonly result: Awaited<ReturnType<typeof measureMicro>>
  }
  /** Against a server of its own (started and stopped in the section's process). */
  readonly roundTrip: { readonly options: RoundTripOptions; readonly result: Array<RoundTripRow> }
  /** Against a server of its own, as the round trip. */
  readonly stampede: {
    readonly options: StampedeOptions
    readonly result: Awaited<ReturnType<typeof measureStampede>>
  }
  readonly join: {
    readonly options: Parameters<typeof measureJoin>[0]
    readonly result: Awaited<ReturnType<typeof measureJoin>>
  }
}

export const runIsolated = <K extends keyof Sections>(
  section: K,
  options: Sections[K]["options"]
): Promise<Sections[K]["result"]> =>
  runCompiled(fileURLToPath(import.meta.url), ["--section", section, JSON.stringify(options)], `section ${section}`)

const withServer = async <A>(measure: (server: ServerHandle) => Promise<A>): Promise<A> => {
  const server = await startServer()
  try {
    return await measure(server)
  } finally {
    server.close()
  }
}

const run = (section: string, options: unknown): Promise<unknown> => {
  switch (section) {
    case "hotPath":
      return measureHotPath(options as Sections["hotPath"]["options"])
    case "memory":
      return measureMemory(options as Sections["memory"]["options"])
    case "micro":
      return measureMicro(options as Sections["micro"]["options"])
    case "roundTrip":
      return withServer((server) => measureRoundTrips(server, options as Sections["roundTrip"]["options"]))
    case "stampede":
      return withServer((server) => measureStampede(server, options as Sections["stampede"]["options"]))
    case "join":
      return measureJoin(options as Sections["join"]["options"])
    default:
      return Promise.reject(new Error(`unknown section ${section}`))
  }
}

if (process.send !== undefined && process.argv[2] === "--section" && process.argv[3] !== undefined) {
  answer(run(process.argv[3], JSON.parse(process.argv[4] ?? "null")))
}

/**
 * 4. Memory: the heap and the live fibers after 1,000 refresh cycles and after
 * 100,000, each read after a full GC. A cycle is `SessionManager.refresh` with
 * everything it does: the single-flight fork, the save to the store, the
 * event, the proactive refresh rescheduled (`autoRefresh` on). The refresh
 * itself is a double that answers a new session at once, so that 100,000
 * cycles fit in the time budget; the HTTP client is measured in section 1.
 * On a machine too busy for that, the last reading comes when the budget runs
 * out (and after at least `minCycles`): the table says how many cycles.
 *
 * Two doubles: one builds its `Session` with `Session.unsafeMake`, which
 * checks the fields and then calls the constructor with `disableChecks`, as
 * `RefreshClient`'s decoding does after the wire schema's checks (`toSession`
 * in internal/wire.ts); the other calls that constructor alone, to tell the
 * manager's own memory from what the checks cost. Runs in a process of its
 * own (see `isolated.ts`).
 */
import { DateTime, Effect, Layer, Metric, Redacted } from "effect"
import { performance } from "node:perf_hooks"
import * as v8 from "node:v8"
import * as vm from "node:vm"
import * as RefreshClient from "../src/RefreshClient.js"
import * as Session from "../src/Session.js"
import * as SessionManager from "../src/SessionManager.js"
import * as SessionStore from "../src/SessionStore.js"

export interface MemoryReading {
  readonly cycles: number
  readonly heapUsedBytes: number
  /** Fibers started in the program and not ended: the manager's background fibers. */
  readonly liveFibers: number
}

export interface MemoryResult {
  readonly refreshClient: string
  readonly readings: ReadonlyArray<MemoryReading>
  readonly growthBytes: number
  readonly fiberGrowth: number
  readonly microsPerCycle: number
}

const collectGarbage = (): () => void => {
  const exposed = (globalThis as { gc?: () => void }).gc
  if (exposed !== undefined) return exposed
  // Run without --expose-gc: switch it on now and take gc from a new context.
  v8.setFlagsFromString("--expose-gc")
  return vm.runInNewContext("gc") as () => void
}

const heapAfterGc = (gc: () => void): number => {
  // Twice: the first pass can leave objects whose finalizers free more.
  gc()
  gc()
  return process.memoryUsage().heapUsed
}

let serial = 0
const pad = "x".repeat(640)
const validated = () =>
  Session.unsafeMake({
    accessToken: `at.${++serial}.${pad}`,
    refreshToken: `rt.${serial}.${pad}`,
    expiresAt: Date.now() + 3_600_000,
    user: { id: "bench-user", email: "bench@example.com" }
  })
const unvalidated = () =>
  new Session.Session({
    accessToken: Redacted.make(`at.${++serial}.${pad}`),
    refreshToken: Redacted.make(`rt.${serial}.${pad}`),
    expiresAt: DateTime.makeUnsafe(Date.now() + 3_600_000),
    tokenType: "bearer",
    user: { id: "bench-user", email: "bench@example.com" }
  }, { disableChecks: true })

/**
 * Counts the fibers started where it is provided that have not ended (Effect
 * 4 has no `Supervisor`: the runtime reports each fiber's start and end to
 * the `Metric.FiberRuntimeMetrics` service in the fiber's context, which
 * forked fibers inherit).
 */
const fiberCounter = () => {
  let live = 0
  const service: Metric.FiberRuntimeMetricsService = {
    recordFiberStart: () => {
      live++
    },
    recordFiberEnd: () => {
      live--
    }
  }
  return { service, live: () => live }
}

export type Double = "validating" | "unvalidated"

export interface MemoryOptions {
  /** Cycles at which the heap is read; the last may come earlier, see `budgetSeconds`. */
  readonly checkpoints: ReadonlyArray<number>
  /** After this many seconds of cycles, the last reading is taken at once... */
  readonly budgetSeconds: number
  /** ...once at least this many cycles have run. */
  readonly minCycles: number
  readonly double: Double
}

export const measureMemory = (options: MemoryOptions): Promise<MemoryResult> => {
  const { checkpoints } = options
  const freshSession = options.double === "validating" ? validated : unvalidated
  const gc = collectGarbage()
  const double = Layer.succeed(
    RefreshClient.RefreshClient,
    RefreshClient.RefreshClient.of({ refresh: () => Effect.sync(freshSession) })
  )
  const layer = SessionManager.layer().pipe(
    Layer.provide(SessionStore.layerMemory(freshSession())),
    Layer.provide(double)
  )
  const fibers = fiberCounter()
  return Effect.runPromise(
    Effect.gen(function*() {
      const manager = yield* SessionManager.SessionManager
      const readings: Array<MemoryReading> = []
      let done = 0
      const start = performance.now()
      const deadline = start + options.budgetSeconds * 1000
      const out = () => done >= options.minCycles && done % 1_000 === 0 && performance.now() > deadline
      for (const [i, checkpoint] of checkpoints.entries()) {
        const last = i === checkpoints.length - 1
        for (; done < checkpoint && !(last && out()); done++) yield* manager.refresh
        // Let interrupted fibers finish their finalizers before counting.
        yield* Effect.sleep(10)
        const liveFibers = fibers.live()
        readings.push({ cycles: done, heapUsedBytes: heapAfterGc(gc), liveFibers })
      }
      const elapsed = performance.now() - start
      const first = readings[0]!
      const last = readings[readings.length - 1]!
      return {
        refreshClient: options.double === "validating"
          ? "double: Session.unsafeMake, checked, as RefreshClient decodes"
          : "double: new Session(..., { disableChecks: true }), unchecked",
        readings,
        growthBytes: last.heapUsedBytes - first.heapUsedBytes,
        fiberGrowth: last.liveFibers - first.liveFibers,
        microsPerCycle: (elapsed * 1000) / done
      }
    }).pipe(Effect.provide(layer), Effect.provideService(Metric.FiberRuntimeMetrics, fibers.service))
  )
}

/**
 * The file lock of `NodeSessionStore` across real processes, in real time
 * (test/system/support/lockWorker.ts). Each worker runs critical sections
 * under `withLease`, checking `lease.ensure` before each action; the test
 * counts the critical sections of different workers that acted at once
 * (it must be 0) and prints what it measured.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { NodeSessionStore } from "moon-refresh/node"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import type { WorkerConfig } from "./support/lockWorker.js"
import {
  expectFrozenHolderHarmless,
  frozenHolder,
  overlaps,
  readLog,
  sectionsOf,
  startWorker
} from "./support/workers.js"

const lease = 2_000
// Workers start under tsx in a second or two; on a busy machine, more.
const startup = "60 seconds"

const setup = Effect.gen(function*() {
  const dir = yield* Effect.acquireRelease(
    Effect.sync(() => Fs.mkdtempSync(Path.join(Os.tmpdir(), "moon-locks-"))),
    (dir) => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true }))
  )
  const path = Path.join(dir, "moon", "session.json")
  // Made first: it creates the directory 0700, as the workers expect it.
  yield* NodeSessionStore.make({ path })
  const log = Path.join(dir, "log.jsonl")
  Fs.writeFileSync(log, "")
  const base: WorkerConfig = { store: "file", path, leaseMs: lease, log, runMs: 0, actions: 3, actMs: 50 }
  return { path, log, base }
})

describe("the file lock across processes", () => {
  it.live("a holder frozen past its lease: another takes over, the resumed one stops and frees nothing", () =>
    Effect.gen(function*() {
      const { base } = yield* setup
      const outcome = yield* frozenHolder(base)
      expectFrozenHolderHarmless("frozen holder", lease, outcome)
    }))

  it.live("the lock's timestamps moved back 60 s all through a hold: no takeover of the live holder", () =>
    Effect.gen(function*() {
      const { base, log, path } = yield* setup
      // The holder's critical section lasts 6 leases.
      const holder = yield* startWorker({ ...base, runMs: 1, actions: 60, actMs: 200 })
      yield* holder.next((r) => r.type === "in", startup)
      const waiter = yield* startWorker({ ...base, runMs: 20_000 })
      yield* waiter.next((r) => r.type === "ready", startup)
      // As if every clock that judged the lock by its times had jumped 60 s forward.
      let moves = 0
      const back = (Date.now() - 60_000) / 1000
      while (!holder.reports().some((r) => r.type === "done")) {
        const dir = `${path}.lock`
        for (const name of Fs.existsSync(dir) ? Fs.readdirSync(dir) : []) {
          Fs.utimesSync(Path.join(dir, name), back, back)
        }
        if (Fs.existsSync(dir)) Fs.utimesSync(dir, back, back)
        moves++
        yield* Effect.sleep("100 millis")
      }
      yield* waiter.next((r) => r.type === "done", "60 seconds")
      const sections = sectionsOf(readLog(log))
      const held = sections.find((s) => s.pid === holder.pid)!
      const waited = sections.filter((s) => s.pid === waiter.pid)
      console.log(
        `timestamps moved back 60 s ${moves} times during a ${held.acts}-action hold (lease ${lease} ms): ` +
          `${
            overlaps(sections).length
          } overlapping sections; the waiter entered ${waited.length} times, first after the holder's last action`
      )
      expect(held.acts).toBe(60)
      expect(overlaps(sections)).toStrictEqual([])
      expect(waited.length).toBeGreaterThan(0)
      expect(waited[0]!.start).toBeGreaterThan(held.end)
    }))

  it.live("a holder killed with SIGKILL is taken over within about one lease", () =>
    Effect.gen(function*() {
      const { base, log } = yield* setup
      const victim = yield* startWorker({ ...base, runMs: 30_000, actions: 1_000, actMs: 300 })
      yield* victim.next((r) => r.type === "act", startup)
      const waiter = yield* startWorker({ ...base, runMs: 10_000 })
      yield* waiter.next((r) => r.type === "ready", startup)
      yield* victim.next((r) => r.type === "act", "10 seconds")
      yield* victim.signal("SIGKILL")
      const killedAt = Date.now()
      expect(yield* victim.exited).toBe("SIGKILL")
      const entered = yield* waiter.next((r) => r.type === "in", "30 seconds")
      yield* waiter.next((r) => r.type === "done", "60 seconds")
      const took = entered.at - killedAt
      console.log(`SIGKILLed holder (lease ${lease} ms): taken over ${took} ms after the kill`)
      expect(overlaps(sectionsOf(readLog(log)))).toStrictEqual([])
      // A lease after the last renewal (they come every third of it), plus the waiter's polling.
      expect(took).toBeLessThan(2 * lease)
    }))
})

/**
 * The Redis lock and its lease with real processes: a replica frozen
 * (SIGSTOP) past its lease while it holds the lock, others taking it over,
 * then resumed (SIGCONT). The workers (test/system/support/lockWorker.ts)
 * check `lease.ensure` before each action and log it; the test counts the
 * critical sections of different replicas that acted at once.
 */
import { describe, expect, inject, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import type { WorkerConfig } from "../system/support/lockWorker.js"
import { overlaps, readLog, sectionsOf, startWorker } from "../system/support/workers.js"
import { freshKey } from "./helpers.js"

const lease = 2_000
const startup = "60 seconds"

describe("RedisSessionStore: a replica frozen past its lease", () => {
  it.scopedLive("is taken over; resumed, it learns it lost the lock, acts no more and deletes nobody's lock", () =>
    Effect.gen(function*() {
      const url = inject("redisUrl")
      const key = freshKey("frozen")
      const dir = yield* Effect.acquireRelease(
        Effect.sync(() => Fs.mkdtempSync(Path.join(Os.tmpdir(), "moon-redis-frozen-"))),
        (dir) => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true }))
      )
      const log = Path.join(dir, "log.jsonl")
      Fs.writeFileSync(log, "")
      const base: WorkerConfig = {
        store: "redis",
        redisUrl: url,
        key,
        leaseMs: lease,
        log,
        runMs: 0,
        actions: 3,
        actMs: 50
      }
      const victim = yield* startWorker({ ...base, runMs: 1, actions: 1_000, actMs: 1_500 })
      yield* victim.next((r) => r.type === "act", startup)
      const others = yield* Effect.all([
        startWorker({ ...base, runMs: 20_000 }),
        startWorker({ ...base, runMs: 20_000 })
      ])
      yield* Effect.forEach(others, (worker) => worker.next((r) => r.type === "ready", startup))
      yield* victim.next((r) => r.type === "act", "10 seconds")
      yield* victim.signal("SIGSTOP")
      const stoppedAt = Date.now()
      const takenOver = yield* Effect.raceAll(
        others.map((worker) => worker.next((r) => r.type === "in" && r.at >= stoppedAt, "30 seconds"))
      )
      yield* Effect.sleep(lease * 2)
      yield* victim.signal("SIGCONT")
      const lost = yield* victim.next((r) => r.type === "lost", "30 seconds")
      const done = yield* Effect.forEach(others, (worker) => worker.next((r) => r.type === "done", "60 seconds"))
      const lines = readLog(log)
      const sections = sectionsOf(lines)
      const resumed = lines.findIndex((line) => line.pid === victim.pid && line.ev === "lost")
      const afterResume = sections.filter((s) => s.pid !== victim.pid && s.start > resumed && s.acts > 0)
      console.log(
        `frozen Redis replica (lease ${lease} ms): taken over ${takenOver.at - stoppedAt} ms after SIGSTOP; ` +
          `resumed after ${lost.at - stoppedAt} ms and found it had lost the lock ("${lost.message}"); ` +
          `${sections.length} critical sections, ${overlaps(sections).length} overlapping`
      )
      expect(overlaps(sections)).toStrictEqual([])
      expect(lost.message).toContain("no longer this holder's")
      expect(afterResume.length).toBeGreaterThan(0)
      expect(done.flatMap((d) => d.lockErrors ?? [])).toStrictEqual([])
    }))
})

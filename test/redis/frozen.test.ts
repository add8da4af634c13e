/**
 * The Redis lock and its lease with real processes: a replica frozen
 * (SIGSTOP) past its lease while it holds the lock, others taking it over,
 * then resumed (SIGCONT). The workers (test/system/support/lockWorker.ts)
 * check `lease.ensure` before each action and log it; the test counts the
 * critical sections of different replicas that acted at once.
 */
import { describe, inject, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import type { WorkerConfig } from "../system/support/lockWorker.js"
import { expectFrozenHolderHarmless, frozenHolder } from "../system/support/workers.js"
import { freshKey } from "./helpers.js"

const lease = 2_000

describe("RedisSessionStore: a replica frozen past its lease", () => {
  it.live("is taken over; resumed, it learns it lost the lock, acts no more and deletes nobody's lock", () =>
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
      const outcome = yield* frozenHolder(base)
      expectFrozenHolderHarmless("frozen Redis replica", lease, outcome)
    }))
})

/**
 * `NodeSessionStore` across real Node processes (child processes under tsx,
 * not fibers), in real time. Each test prints what it measured, so CI logs
 * show the numbers quoted in docs/08-many-processes.md.
 */
import { describe, expect, it } from "@effect/vitest"
import { Clock, Effect, Option } from "effect"
import { NodeSessionStore } from "moon-refresh/node"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { type Child, noChildError, spawnChild } from "./support/Processes.js"
import { session } from "./support/StoreContract.js"

const tempFile = Effect.acquireRelease(
  Effect.sync(() => Fs.mkdtempSync(Path.join(Os.tmpdir(), "moon-processes-"))),
  (dir) => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true }))
).pipe(Effect.map((dir) => Path.join(dir, "moon", "session.json")))

// Child processes take a second or two to start under tsx on a busy machine.
const startup = "30 seconds"

describe("NodeSessionStore across processes", () => {
  it.scopedLive(
    "concurrent saves and loads: no load sees a torn or empty record while a session is stored",
    () =>
      Effect.gen(function*() {
        const path = yield* tempFile
        const store = yield* NodeSessionStore.make({ path, lease: "2 seconds" })
        yield* store.save(session("first"))
        const writers = yield* Effect.all(
          Array.from({ length: 3 }, () => spawnChild("save", { path, leaseMs: 2000, durationMs: 3000 }))
        )
        yield* Effect.forEach(writers, (child) => child.waitFor((m) => m.type === "ready" || undefined, startup))
        let loads = 0
        let empty = 0
        const failures: Array<string> = []
        const done = () =>
          Effect.map(
            Effect.forEach(writers, (child) => child.messages),
            (all) => all.every((messages) => messages.some((m) => m.type === "done" || m.type === "error"))
          )
        while (!(yield* done())) {
          const result = yield* Effect.either(store.read)
          loads++
          if (result._tag === "Left") failures.push(result.left.message)
          else if (Option.isNone(result.right.session)) empty++
        }
        yield* noChildError(writers)
        const reports = yield* Effect.forEach(
          writers,
          (child) => child.waitFor((m) => (m.type === "done" ? m : undefined), "10 seconds")
        )
        const saves = reports.reduce((sum, report) => sum + report.saves, 0)
        console.log(
          `NodeSessionStore, 3 processes saving for 3 s while another loads: ${saves} saves ` +
            `(${
              reports.map((r) => r.saves).join(" + ")
            }), ${loads} loads, ${empty} empty or torn, ${failures.length} failed`
        )
        expect(reports.flatMap((report) => report.errors)).toStrictEqual([])
        expect(failures).toStrictEqual([])
        expect(empty).toBe(0)
        expect(loads).toBeGreaterThan(100)
        expect(saves).toBeGreaterThan(30)
        // Every save was one fenced write: none lost, none doubled.
        expect((yield* store.read).revision).toBe(saves + 1)
      }),
    60_000
  )

  it.scopedLive(
    "a lock holder killed with SIGKILL loses the lock when its lease runs out",
    () =>
      Effect.gen(function*() {
        const path = yield* tempFile
        const lease = 2000
        // Made first: it creates the directory, so the child finds it private.
        const store = yield* NodeSessionStore.make({ path, lease: "2 seconds", lockTimeout: "500 millis" })
        const holder: Child = yield* spawnChild("hold", { path, leaseMs: lease })
        yield* holder.waitFor((m) => m.type === "locked" || undefined, startup)
        // Held: another process cannot take it.
        const refused = yield* Effect.flip(store.withLock(Effect.void))
        expect(refused).toMatchObject({ _tag: "StoreError", operation: "lock" })
        yield* holder.kill("SIGKILL")
        expect(yield* holder.exited).toBe("SIGKILL")
        const killedAt = yield* Clock.currentTimeMillis
        const patient = yield* NodeSessionStore.make({ path, lease: "2 seconds", lockTimeout: "10 seconds" })
        yield* patient.withLock(Effect.void)
        const takenOver = (yield* Clock.currentTimeMillis) - killedAt
        console.log(
          `NodeSessionStore: lock of a SIGKILLed holder taken over ${takenOver} ms after the kill (lease ${lease} ms)`
        )
        // Not before the holder's last renewal has aged a lease (renewals come every half lease)...
        expect(takenOver).toBeGreaterThanOrEqual(lease / 2 - 100)
        // ...and soon after it has.
        expect(takenOver).toBeLessThanOrEqual(lease + 1000)
      }),
    60_000
  )
})

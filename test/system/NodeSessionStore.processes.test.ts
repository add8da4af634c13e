/**
 * `NodeSessionStore` across real Node processes (child processes under tsx,
 * not fibers), in real time (`npm run test:system`). Each test runs until it
 * has seen what it needs (revisions, a takeover), never for a set time, and
 * prints what it measured, so CI logs show the numbers quoted in
 * docs/08-many-processes.md.
 */
import { describe, expect, it } from "@effect/vitest"
import { Clock, Effect, Option } from "effect"
import { NodeSessionStore } from "moon-refresh/node"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { type Child, noChildError, spawnChild } from "../support/Processes.js"
import { session } from "../support/StoreContract.js"

const tempFile = Effect.acquireRelease(
  Effect.sync(() => Fs.mkdtempSync(Path.join(Os.tmpdir(), "moon-processes-"))),
  (dir) => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true }))
).pipe(Effect.map((dir) => Path.join(dir, "moon", "session.json")))

// Hang guards: child processes take a second or two to start under tsx on a busy machine.
const startup = "60 seconds"

/** Revisions written by the other processes that the loader must see come and go before it stops them. */
const revisionsToSee = 30

describe("NodeSessionStore across processes", () => {
  it.live(
    "concurrent saves and loads: no load sees a torn or empty record while a session is stored",
    () =>
      Effect.gen(function*() {
        const path = yield* tempFile
        const store = yield* NodeSessionStore.make({ path, lease: "2 seconds" })
        yield* store.save(session("first"))
        const writers = yield* Effect.all(
          Array.from({ length: 3 }, () => spawnChild("save", { path, leaseMs: 2000 }))
        )
        yield* Effect.forEach(writers, (child) => child.waitFor((m) => m.type === "ready" || undefined, startup))
        // Loads until it has seen `revisionsToSee` revisions written by the others while they write:
        // however fast or slow the machine, the loads and the saves overlap that much.
        let loads = 0
        let empty = 0
        const failures: Array<string> = []
        const seen = new Set<number>()
        while (seen.size < revisionsToSee) {
          yield* noChildError(writers)
          const result = yield* Effect.result(store.read)
          loads++
          if (result._tag === "Failure") failures.push(result.failure.message)
          else if (Option.isNone(result.success.session)) empty++
          else if (result.success.revision > 1) seen.add(result.success.revision)
        }
        yield* Effect.forEach(writers, (child) => child.send({ cmd: "stop" }))
        const reports = yield* Effect.forEach(
          writers,
          (child) => child.waitFor((m) => (m.type === "done" ? m : undefined), startup)
        )
        yield* noChildError(writers)
        const saves = reports.reduce((sum, report) => sum + report.saves, 0)
        const refused = reports.reduce((sum, report) => sum + report.refused, 0)
        console.log(
          `NodeSessionStore, 3 processes saving while another loads until it saw ${revisionsToSee} of their ` +
            `revisions: ${saves} saves (${reports.map((r) => r.saves).join(" + ")}), ${refused} refused ` +
            `(lock lost or not taken in time: a process stalled on a busy machine; nothing written), ` +
            `${loads} loads, ${empty} empty or torn, ${failures.length} failed`
        )
        expect(reports.flatMap((report) => report.errors)).toStrictEqual([])
        expect(failures).toStrictEqual([])
        expect(empty).toBe(0)
        // Every save was one fenced write: none lost, none doubled; a refused save wrote nothing.
        expect((yield* store.read).revision).toBe(saves + 1)
      })
  )

  it.live(
    "a lock holder killed with SIGKILL loses the lock once its lease runs out, not before",
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
        // The holder's last renewal, final now that it is dead: the lock is stale a lease after it.
        const lastRenewal = Fs.statSync(`${path}.lock`).mtime.getTime()
        // A patient waiter (its lockTimeout a hang guard) gets the lock: the lease of a dead holder runs out.
        const patient = yield* NodeSessionStore.make({ path, lease: "2 seconds", lockTimeout: "60 seconds" })
        yield* patient.withLock(Effect.void)
        const takenOverAt = yield* Clock.currentTimeMillis
        console.log(
          `NodeSessionStore: lock of a SIGKILLed holder taken over ${takenOverAt - killedAt} ms after the kill, ` +
            `${takenOverAt - lastRenewal} ms after its last renewal (lease ${lease} ms)`
        )
        // Not before its last renewal has aged a lease. How soon after is printed, not asserted: on a busy
        // machine the waiter's own retries run late.
        expect(takenOverAt).toBeGreaterThanOrEqual(lastRenewal + lease)
      })
  )
})

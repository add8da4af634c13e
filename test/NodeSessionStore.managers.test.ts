/**
 * `SessionManager`s in 4 real Node processes sharing one `NodeSessionStore`
 * file, against a `MockMoonServer` with no reuse window (a second use of a
 * refresh token revokes the session) and access tokens of 3 s (2 to 3 s in
 * fact: `expires_at` is whole seconds), each process with 25 fibers reading
 * the access token in a loop. Real time; each test prints its counts.
 */
import { describe, expect, it } from "@effect/vitest"
import { Clock, Effect, Option, Redacted, Schedule, type Scope } from "effect"
import { Session, type SessionStore } from "moon-refresh"
import { NodeSessionStore } from "moon-refresh/node"
import { MockMoonServer } from "moon-refresh/testing"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import type { ChildMessage } from "./support/ChildProtocol.js"
import { fingerprint } from "./support/ChildProtocol.js"
import { type Child, noChildError, spawnChild } from "./support/Processes.js"

const lifetime = 3
const marginMs = 1000
const leaseMs = 2000
const processes = 4
const readers = 25

const tempFile = Effect.acquireRelease(
  Effect.sync(() => Fs.mkdtempSync(Path.join(Os.tmpdir(), "moon-managers-"))),
  (dir) => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true }))
).pipe(Effect.map((dir) => Path.join(dir, "moon", "session.json")))

interface Env {
  readonly server: MockMoonServer.Service
  readonly path: string
  readonly store: SessionStore.Service
}

/** A server, a file holding a fresh session of it, and the store the test reads the file through. */
const setup = (options: { readonly reuseWindow?: number } = {}) =>
  Effect.gen(function*(): Effect.fn.Return<Env, unknown, Scope.Scope> {
    const server = yield* MockMoonServer.make({ reuseWindow: options.reuseWindow ?? 0, accessTokenLifetime: lifetime })
    const path = yield* tempFile
    const store = yield* NodeSessionStore.make({ path, lease: "2 seconds" })
    yield* store.save(Session.unsafeMake(yield* server.issueSession()))
    return { server, path, store }
  })

const startFleet = (path: string, url: string, options: { readonly pollMs?: number } = {}) =>
  Effect.gen(function*() {
    const children = yield* Effect.all(
      Array.from(
        { length: processes },
        () => spawnChild("manager", { path, url, leaseMs, marginMs, readers, pollMs: options.pollMs ?? 2000 })
      )
    )
    yield* Effect.forEach(children, (child) => child.waitFor((m) => m.type === "ready" || undefined, "60 seconds"))
    return children
  })

type Summary = Extract<ChildMessage, { type: "summary" }>

const stopFleet = (children: ReadonlyArray<Child>) =>
  Effect.gen(function*() {
    // The last rotation reaches the other processes through the change feed
    // (tens of milliseconds); the next is seconds away.
    yield* Effect.sleep("500 millis")
    yield* Effect.forEach(children, (child) => child.send({ cmd: "stop" }))
    const summaries = yield* Effect.forEach(
      children,
      (child) => child.waitFor((m): Summary | undefined => (m.type === "summary" ? m : undefined), "20 seconds")
    )
    yield* noChildError(children)
    return summaries
  })

const eventsOf = (children: ReadonlyArray<Child>, tag: string) =>
  Effect.map(
    Effect.forEach(children, (child) => child.messages),
    (all) => all.flat().filter((m) => m.type === "event" && m.tag === tag)
  )

/** Waits until the server has rotated at least `count` times in all. */
const rotations = (server: MockMoonServer.Service, count: number, within: number) =>
  server.stats.pipe(
    Effect.repeat({ schedule: Schedule.spaced("100 millis"), until: (stats) => stats.rotations >= count }),
    Effect.timeoutFail({ duration: within, onTimeout: () => `fewer than ${count} rotations within ${within} ms` })
  )

/** The refresh POSTs the server rotated on, oldest first, by its clock. */
const rotatedAt = (server: MockMoonServer.Service) =>
  Effect.map(
    server.requests,
    (requests) => requests.filter((r) => r.path === "/auth/refresh" && r.outcome === "rotated").map((r) => r.at)
  )

/** The file's refresh token as children report it (a hash), and whether the server would still rotate it. */
const fileToken = (env: Env) =>
  Effect.gen(function*() {
    const session = Option.getOrThrow((yield* env.store.read).session)
    return {
      hash: fingerprint(session.refreshToken),
      live: yield* env.server.isLive(Redacted.value(session.refreshToken))
    }
  })

describe("SessionManagers in 4 processes on one NodeSessionStore file", () => {
  it.scopedLive(
    "one refresh POST per expiry, no reuse, no sign-out, every process ends on the live session",
    () =>
      Effect.gen(function*() {
        const env = yield* setup()
        const children = yield* startFleet(env.path, env.server.url)
        const started = (yield* env.server.stats).rotations
        yield* rotations(env.server, started + 11, 45_000)
        const summaries = yield* stopFleet(children)
        const stats = yield* env.server.stats
        const at = yield* rotatedAt(env.server)
        const signedOut = yield* eventsOf(children, "SignedOut")
        const file = yield* fileToken(env)
        // Each rotation after the first (the processes started up to seconds
        // after the session was issued) came within the margin before the
        // expiry of the token it replaced: gaps of lifetime - margin to lifetime.
        const gaps = at.slice(1).map((t, i) => t - at[i]!)
        const reads = summaries.reduce((sum, s) => sum + s.reads, 0)
        const readErrors = summaries.flatMap((s) => Object.entries(s.readErrors))
        console.log(
          `${processes} processes x ${readers} readers, ${lifetime} s tokens, no reuse window: ` +
            `${stats.refreshRequests} refresh POSTs, ${stats.rotations} rotations, ${stats.reuseRejections} reuse rejections, ` +
            `${signedOut.length} sign-outs; gaps between rotations ${Math.min(...gaps)} to ${Math.max(...gaps)} ms; ` +
            `${reads} access-token reads, errors ${JSON.stringify(readErrors)}`
        )
        expect(stats.rotations).toBeGreaterThanOrEqual(10)
        expect(stats.refreshRequests).toBe(stats.rotations)
        expect(stats.reuseRejections).toBe(0)
        expect(signedOut).toStrictEqual([])
        for (const gap of gaps) {
          expect(gap).toBeGreaterThanOrEqual((lifetime * 1000 - marginMs) - 50)
          expect(gap).toBeLessThanOrEqual(lifetime * 1000 + 200)
        }
        expect(readErrors).toStrictEqual([])
        expect(file.live).toBe(true)
        expect(summaries.map((s) => s.token)).toStrictEqual(summaries.map(() => file.hash))
      }),
    90_000
  )

  const killedMidRefresh = (fault: "Delay" | "SlowBody", reuseWindow: number) =>
    Effect.gen(function*() {
      const env = yield* setup({ reuseWindow })
      const children = yield* startFleet(env.path, env.server.url)
      const started = (yield* env.server.stats).rotations
      yield* rotations(env.server, started + 1, 30_000)
      // The next refresh hangs: `Delay` before the server rotates, `SlowBody` after.
      yield* env.server.script(
        fault === "Delay"
          ? MockMoonServer.Fault.Delay({ millis: 1500 })
          : MockMoonServer.Fault.SlowBody({ millis: 1500 })
      )
      yield* env.server.requests.pipe(
        Effect.repeat({
          schedule: Schedule.spaced("10 millis"),
          until: (requests) => requests.some((r) => r.fault === fault)
        }),
        Effect.timeout("10 seconds")
      )
      // The process inside the lock now is the one waiting for that answer.
      const inside = yield* Effect.filter(children, (child) =>
        Effect.map(child.messages, (messages) => {
          const last = messages.filter((m) => m.type === "lock").at(-1)
          return last !== undefined && last.type === "lock" && last.state === "in"
        }))
      expect(inside).toHaveLength(1)
      const victim = inside[0]!
      yield* victim.kill("SIGKILL")
      const killedAt = yield* Clock.currentTimeMillis
      expect(yield* victim.exited).toBe("SIGKILL")
      const before = (yield* env.server.stats).rotations
      yield* rotations(env.server, before + 2, 30_000)
      const survivors = children.filter((child) => child !== victim)
      const summaries = yield* stopFleet(survivors)
      const stats = yield* env.server.stats
      const firstAfter = (yield* env.server.requests).find((r) =>
        r.path === "/auth/refresh" && r.at > killedAt && (r.outcome === "rotated" || r.outcome === "reuse-tolerated")
      )
      const signedOut = yield* eventsOf(survivors, "SignedOut")
      const file = yield* fileToken(env)
      const takeover = firstAfter === undefined ? Infinity : firstAfter.at - killedAt
      console.log(
        `holder SIGKILLed mid-refresh (${fault}, reuse window ${reuseWindow} ms, lease ${leaseMs} ms): next refresh ` +
          `${takeover} ms after the kill; ${stats.refreshRequests} refresh POSTs, ${stats.rotations} rotations, ` +
          `${stats.reusesTolerated} reuses tolerated, ${stats.reuseRejections} reuse rejections, ${signedOut.length} sign-outs`
      )
      expect(takeover).toBeLessThanOrEqual(leaseMs + 1000)
      expect(stats.reuseRejections).toBe(0)
      expect(signedOut).toStrictEqual([])
      expect(file.live).toBe(true)
      expect(summaries.map((s) => s.token)).toStrictEqual(summaries.map(() => file.hash))
      return stats
    })

  it.scopedLive(
    "a holder killed before the server rotated: the others take over within the lease, nothing lost",
    () =>
      Effect.gen(function*() {
        const stats = yield* killedMidRefresh("Delay", 0)
        // The killed POST is the one that did not rotate.
        expect(stats.refreshRequests).toBe(stats.rotations + 1)
      }),
    90_000
  )

  it.scopedLive(
    "a holder killed after the server rotated: its rotation is spent, recovered inside a reuse window",
    () =>
      Effect.gen(function*() {
        const stats = yield* killedMidRefresh("SlowBody", 10_000)
        expect(stats.reusesTolerated).toBe(1)
      }),
    90_000
  )

  it.scopedLive(
    "a sign-out in one process signs every other out within one change notification, and sticks",
    () =>
      Effect.gen(function*() {
        const env = yield* setup()
        // A 30 s poll: only a file-system notification can deliver the sign-out in time.
        const children = yield* startFleet(env.path, env.server.url, { pollMs: 30_000 })
        const started = (yield* env.server.stats).rotations
        yield* rotations(env.server, started + 1, 30_000)
        const [leaver, ...others] = children
        yield* leaver!.send({ cmd: "signOut" })
        yield* leaver!.waitFor((m) => m.type === "signedOut" || undefined, "10 seconds")
        const tombstone = yield* env.store.read
        expect(Option.isNone(tombstone.session)).toBe(true)
        // When the tombstone was written, by the host's clock (the children report by it too).
        const signedOutAt = Math.round(Fs.statSync(env.path).mtimeMs)
        const reached = yield* Effect.forEach(others, (child) =>
          child.waitFor(
            (m) => (m.type === "event" && m.tag === "SignedOut" ? { at: m.at, reason: m.detail } : undefined),
            "5 seconds"
          ))
        // Two token lifetimes: every process's refresh would have come due.
        yield* Effect.sleep(`${2 * lifetime} seconds`)
        const summaries = yield* stopFleet(children)
        const after = yield* env.store.read
        const postsAfter = (yield* env.server.requests).filter((r) => r.path === "/auth/refresh" && r.at > signedOutAt)
        const latencies = reached.map((r) => r.at - signedOutAt)
        console.log(
          `sign-out in 1 of ${processes} processes (30 s poll): the others signed out ${Math.min(...latencies)} to ` +
            `${
              Math.max(...latencies)
            } ms after the tombstone was written; ${postsAfter.length} refresh POSTs after it; ` +
            `file at revision ${after.revision} (the tombstone's: ${tombstone.revision})`
        )
        expect(reached.map((r) => r.reason)).toStrictEqual(others.map(() => "SignedOutElsewhere"))
        for (const latency of latencies) {
          expect(latency).toBeGreaterThanOrEqual(0)
          expect(latency).toBeLessThan(1000)
        }
        expect(postsAfter).toStrictEqual([])
        expect(after.revision).toBe(tombstone.revision)
        expect(Option.isNone(after.session)).toBe(true)
        expect(summaries.map((s) => s.token)).toStrictEqual(summaries.map(() => null))
        // Readers fail as signed out, and only so.
        const errors = new Set(summaries.flatMap((s) => Object.keys(s.readErrors)))
        expect([...errors]).toStrictEqual(["NoSessionError"])
      }),
    90_000
  )
})

/**
 * 3. Hot path: reading a still-valid access token, N times inside one Effect
 * program, against reading a variable in a plain closure. The token is valid
 * for an hour, so no read refreshes: the RefreshClient is a double that would
 * die if called.
 */
import { Effect, Layer, Redacted } from "effect"
import { performance } from "node:perf_hooks"
import * as RefreshClient from "../src/RefreshClient.js"
import * as Session from "../src/Session.js"
import * as SessionManager from "../src/SessionManager.js"
import * as SessionStore from "../src/SessionStore.js"
import { median, rotate } from "./harness.js"

export interface HotPathRow {
  readonly read: string
  /** Reads per second of this process's CPU time: robust to other processes taking the CPU. */
  readonly opsPerSecond: number
  readonly nsPerRead: number
  /** The same by the wall clock. */
  readonly wallOpsPerSecond: number
  readonly reads: number
  readonly rounds: number
}

interface Reader {
  readonly name: string
  /** Reads `n` times; returns the elapsed milliseconds. */
  readonly run: (n: number) => Promise<number>
}

interface Timing {
  readonly wallMs: number
  readonly cpuMs: number
}

export const measureHotPath = async (
  options: { readonly reads: number; readonly rounds: number }
): Promise<Array<HotPathRow>> => {
  const minted = { accessToken: `at.1.${"x".repeat(640)}`, refreshToken: `rt.1.${"x".repeat(640)}` }
  const session = Session.unsafeMake({ ...minted, expiresAt: Date.now() + 3_600_000, user: { id: "bench-user" } })
  const neverCalled = Layer.succeed(
    RefreshClient.RefreshClient,
    RefreshClient.RefreshClient.of({ refresh: () => Effect.die(new Error("the hot path must not refresh")) })
  )
  const layer = SessionManager.layer().pipe(
    Layer.provide(SessionStore.layerMemory(session)),
    Layer.provide(neverCalled)
  )
  // Something each loop writes, so that no read can be optimised away.
  let sink = 0

  return Effect.runPromise(
    Effect.gen(function*() {
      const manager = yield* SessionManager.SessionManager
      const context = yield* Effect.context<SessionManager.SessionManager>()
      const timed = (body: (n: number) => Effect.Effect<void, unknown>) => (n: number) =>
        Effect.runPromise(Effect.suspend(() => {
          const start = performance.now()
          return Effect.map(body(n), () => performance.now() - start)
        }))

      const readers: Array<Reader> = [
        {
          name: "plain closure: () => token",
          run: (n) => {
            const token = Redacted.make(minted.accessToken)
            const read = () => token
            const start = performance.now()
            for (let i = 0; i < n; i++) if (read() === undefined) sink++
            return Promise.resolve(performance.now() - start)
          }
        },
        {
          name: "Effect floor: yield* Effect.succeed(token) in Effect.gen",
          run: timed((n) => {
            const read = Effect.succeed(Redacted.make(minted.accessToken))
            return Effect.gen(function*() {
              for (let i = 0; i < n; i++) if ((yield* read) === undefined) sink++
            })
          })
        },
        {
          name: "yield* manager.accessToken in Effect.gen",
          run: timed((n) =>
            Effect.gen(function*() {
              for (let i = 0; i < n; i++) if ((yield* manager.accessToken) === undefined) sink++
            })
          )
        },
        {
          name: "Effect.repeat(manager.accessToken, { times: n - 1 })",
          run: timed((n) => Effect.asVoid(Effect.repeat(manager.accessToken, { times: n - 1 })))
        },
        {
          name: "Effect floor: Effect.repeat(Effect.succeed(token), { times: n - 1 })",
          run: timed((n) =>
            Effect.asVoid(Effect.repeat(Effect.succeed(Redacted.make(minted.accessToken)), { times: n - 1 }))
          )
        },
        {
          name: "yield* SessionManager.accessToken (accessor) in Effect.gen",
          run: timed((n) =>
            Effect.gen(function*() {
              for (let i = 0; i < n; i++) if ((yield* SessionManager.accessToken) === undefined) sink++
            }).pipe(Effect.provide(context))
          )
        }
      ]

      const samples = new Map<string, Array<Timing>>(readers.map((reader) => [reader.name, []]))
      for (const reader of readers) yield* Effect.promise(() => reader.run(Math.min(options.reads, 100_000)))
      for (let round = 0; round < options.rounds; round++) {
        for (const reader of rotate(readers, round)) {
          const cpu = process.cpuUsage()
          const wallMs = yield* Effect.promise(() => reader.run(options.reads))
          const used = process.cpuUsage(cpu)
          samples.get(reader.name)!.push({ wallMs, cpuMs: (used.user + used.system) / 1000 })
        }
      }
      if (sink !== 0) console.log(`(sink ${sink})`)
      return readers.map((reader): HotPathRow => {
        const cpuMs = median(samples.get(reader.name)!.map((timing) => timing.cpuMs))
        const wallMs = median(samples.get(reader.name)!.map((timing) => timing.wallMs))
        return {
          read: reader.name,
          opsPerSecond: options.reads / (cpuMs / 1000),
          nsPerRead: (cpuMs * 1e6) / options.reads,
          wallOpsPerSecond: options.reads / (wallMs / 1000),
          reads: options.reads,
          rounds: options.rounds
        }
      })
    }).pipe(Effect.provide(layer))
  )
}

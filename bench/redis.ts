/**
 * 6. What RedisSessionStore adds: a SessionManager on it against one on the
 * memory store, side by side against the same server, round by round. A
 * token read should cost the same (reads stay in memory); a refresh adds the
 * lock (SET NX PX, then compare-and-delete), the re-read under the lock and
 * the fenced write (a script that also publishes): four round trips to a
 * local redis-server, which this section starts from PATH. Without one, the
 * section says it was skipped.
 */
import { Context, Effect, Layer, Option } from "effect"
import { FetchHttpClient } from "effect/http"
import { performance } from "node:perf_hooks"
import { RedisSessionStore } from "../src/redis/index.js"
import * as RefreshClient from "../src/RefreshClient.js"
import * as Session from "../src/Session.js"
import * as SessionManager from "../src/SessionManager.js"
import * as SessionStore from "../src/SessionStore.js"
import { findRedisServer, startRedisServer } from "../test/support/RedisServer.js"
import { median, type ServerHandle } from "./harness.js"

export interface RedisRow {
  readonly what: string
  readonly memoryMs: number
  readonly redisMs: number
  readonly addedMs: number
  readonly ratio: number
}

export type RedisResult =
  | { readonly skipped: string }
  | { readonly rows: Array<RedisRow>; readonly reads: number; readonly refreshes: number; readonly rounds: number }

export const measureRedis = async (
  server: ServerHandle,
  options: { readonly reads: number; readonly refreshes: number; readonly rounds: number }
): Promise<RedisResult> => {
  if (findRedisServer() === undefined) return { skipped: "skipped: no redis-server on PATH" }
  const redis = await startRedisServer()
  try {
    return await Effect.runPromise(Effect.scoped(measure(server, redis.url, options)))
  } finally {
    await redis.stop()
  }
}

const measure = (
  server: ServerHandle,
  redisUrl: string,
  options: { readonly reads: number; readonly refreshes: number; readonly rounds: number }
) =>
  Effect.gen(function*() {
    const signIn = Effect.promise(() => server.mint(3600)).pipe(
      Effect.map((minted) => Session.unsafeMake({ ...minted, user: { id: "bench-user" } }))
    )
    const managerOn = (store: Layer.Layer<SessionStore.SessionStore>) =>
      Effect.gen(function*() {
        const context = yield* Layer.build(
          SessionManager.layer({ autoRefresh: false, minInterval: 0 }).pipe(
            Layer.provide(RefreshClient.layer({ baseUrl: server.baseUrl })),
            Layer.provide(store),
            Layer.provide(FetchHttpClient.layer)
          )
        )
        const manager = Context.get(context, SessionManager.SessionManager)
        yield* manager.signIn(yield* signIn)
        return manager
      })
    const client = yield* RedisSessionStore.makeClient(redisUrl)
    const memory = yield* managerOn(SessionStore.layerMemory())
    const redis = yield* managerOn(
      RedisSessionStore.layer({ key: "bench:moon-session" }).pipe(
        Layer.provide(RedisSessionStore.layerClient(client))
      )
    )
    const store = yield* RedisSessionStore.make({ key: "bench:store-ops" }).pipe(
      Effect.provideService(RedisSessionStore.RedisClient, client)
    )

    // A plain loop: Effect 4's `Effect.repeat` steps a schedule between runs,
    // which costs more than a token read.
    const time = <A, E>(n: number, effect: Effect.Effect<A, E>) =>
      Effect.gen(function*() {
        const start = performance.now()
        for (let i = 0; i < n; i++) yield* effect
        return (performance.now() - start) / n
      })
    const samples = { read: [[], []], refresh: [[], []], lock: [[], []], write: [[], []] } as Record<
      "read" | "refresh" | "lock" | "write",
      [Array<number>, Array<number>]
    >
    // The memory store's lock and write, against Redis's: what the refresh row is made of.
    const memoryStore = yield* SessionStore.makeMemory()
    let revision = { memory: 0, redis: (yield* store.read).revision }
    const sample = Session.unsafeMake({
      accessToken: "a",
      refreshToken: "r",
      expiresAt: Date.now() + 3_600_000,
      user: { id: "bench-user" }
    })

    for (let round = 0; round < options.rounds; round++) {
      // Alternate which goes first, so that neither always runs on a warmer machine.
      const order = round % 2 === 0 ? ([0, 1] as const) : ([1, 0] as const)
      for (const side of order) {
        const manager = side === 0 ? memory : redis
        const target = side === 0 ? memoryStore : store
        samples.read[side].push(yield* time(options.reads, manager.accessToken))
        samples.refresh[side].push(yield* time(options.refreshes, manager.refresh))
        samples.lock[side].push(yield* time(options.refreshes, target.withLock(Effect.void)))
        samples.write[side].push(
          yield* time(
            options.refreshes,
            Effect.suspend(() => {
              const key = side === 0 ? "memory" : "redis"
              return Effect.map(target.write(Option.some(sample), revision[key]), (stored) => {
                revision = { ...revision, [key]: stored.revision }
              })
            })
          )
        )
      }
    }
    const row = (what: string, [onMemory, onRedis]: [Array<number>, Array<number>]): RedisRow => {
      const memoryMs = median(onMemory)
      const redisMs = median(onRedis)
      return { what, memoryMs, redisMs, addedMs: redisMs - memoryMs, ratio: redisMs / memoryMs }
    }
    return {
      rows: [
        row("token read (SessionManager.accessToken)", samples.read),
        row("one refresh (SessionManager.refresh: lock, read, POST, fenced write)", samples.refresh),
        row("the store's lock alone (acquire + release)", samples.lock),
        row("one fenced write alone", samples.write)
      ],
      reads: options.reads,
      refreshes: options.refreshes,
      rounds: options.rounds
    }
  })

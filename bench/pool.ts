/**
 * The pool section of `npm run bench` (also `npx tsx --expose-gc bench/pool.ts`
 * on its own): what a `SessionPool` costs per session, in memory and time, at
 * 1,000, 10,000 and 100,000 sessions; how fast it serves tokens for random
 * keys; and how many refresh POSTs it has in flight when 10,000 sessions
 * expire together. No HTTP: a `MockRefreshClient` answers the refreshes, so
 * the figures are the pool's own.
 *
 * Sessions carry realistic tokens: a 900-character access token (a Supabase
 * JWT is about that) and a 40-character refresh token, distinct per session.
 */
import { Context, Effect, Layer, Redacted } from "effect"
import { Session, SessionPool, SessionStore } from "moon-refresh"
import { MockRefreshClient } from "moon-refresh/testing"

const gc = () => {
  const collect = (globalThis as { gc?: () => void }).gc
  if (collect === undefined) throw new Error("run with --expose-gc (npm run bench does)")
  collect()
  collect()
}

const heap = () => {
  gc()
  return process.memoryUsage().heapUsed
}

const jwt = "x".repeat(880)
const sessionFor = (key: string, expiresAt: number) =>
  Session.unsafeMake({
    accessToken: `${jwt}${key.padStart(20, "0")}`,
    refreshToken: `refresh-${key.padStart(32, "0")}`,
    expiresAt,
    user: { id: key, email: `${key}@example.com` }
  })

export interface PoolFigures {
  readonly sessions: number
  /** Heap of the stored sessions alone (the store's records), per session. */
  readonly storedBytesPerSession: number
  /** Heap the pool adds per live session, on top of the stored record. */
  readonly liveBytesPerSession: number
  /** Heap left per session once the pool dropped them all (idle): what the store keeps. */
  readonly idleBytesPerSession: number
  /** Time to load every session from the store into the pool. */
  readonly warmMillis: number
  readonly warmMicrosPerSession: number
}

/** Builds a pool over a keyed memory store holding `n` valid sessions and measures it. */
const measureScale = (n: number) =>
  Effect.gen(function*() {
    const keys = Array.from({ length: n }, (_, i) => `user-${i}`)
    const mockContext = yield* Layer.build(MockRefreshClient.layer())
    const keyed = yield* SessionStore.makeMemoryKeyed
    const base = heap()
    const expiresAt = Date.now() + 3_600_000
    for (const key of keys) yield* (yield* keyed.forKey(key)).save(sessionFor(key, expiresAt))
    const stored = heap()
    const pool = Context.get(
      yield* Layer.build(
        SessionPool.layer({ idleTimeToLive: "1 hour", capacity: n }).pipe(
          Layer.provide(Layer.succeedContext(mockContext)),
          Layer.provide(Layer.succeed(SessionStore.KeyedSessionStore, keyed))
        )
      ),
      SessionPool.SessionPool
    )
    const warmStart = performance.now()
    for (const key of keys) yield* pool.accessToken(key)
    const warmMillis = performance.now() - warmStart
    const live = heap()
    // Drop every session: a pool of capacity n takes n more keys that are not stored.
    for (let i = 0; i < n; i++) yield* Effect.either(pool.accessToken(`absent-${i}`))
    const idle = heap()
    return {
      sessions: n,
      storedBytesPerSession: (stored - base) / n,
      liveBytesPerSession: (live - stored) / n,
      idleBytesPerSession: (idle - base) / n,
      warmMillis,
      warmMicrosPerSession: (warmMillis * 1000) / n
    } satisfies PoolFigures
  }).pipe(Effect.scoped)

/** Token reads per second, for random live keys. */
const measureReads = (n: number, reads: number) =>
  Effect.gen(function*() {
    const keys = Array.from({ length: n }, (_, i) => `user-${i}`)
    const mockContext = yield* Layer.build(MockRefreshClient.layer())
    const keyed = yield* SessionStore.makeMemoryKeyed
    const expiresAt = Date.now() + 3_600_000
    for (const key of keys) yield* (yield* keyed.forKey(key)).save(sessionFor(key, expiresAt))
    const pool = Context.get(
      yield* Layer.build(
        SessionPool.layer({ idleTimeToLive: "1 hour" }).pipe(
          Layer.provide(Layer.succeedContext(mockContext)),
          Layer.provide(Layer.succeed(SessionStore.KeyedSessionStore, keyed))
        )
      ),
      SessionPool.SessionPool
    )
    for (const key of keys) yield* pool.accessToken(key)
    // The random keys are drawn beforehand: the loop measures the pool, not Math.random.
    const order = Array.from({ length: reads }, () => keys[Math.floor(Math.random() * n)]!)
    let length = 0
    const start = performance.now()
    for (const key of order) length += Redacted.value(yield* pool.accessToken(key)).length
    const seconds = (performance.now() - start) / 1000
    if (length === 0) throw new Error("no token read")
    return reads / seconds
  }).pipe(Effect.scoped)

/** The most refresh POSTs in flight when `n` sessions all need one at once, with the cap at `cap`. */
const measureStampede = (n: number, cap: number) =>
  Effect.gen(function*() {
    const keys = Array.from({ length: n }, (_, i) => `user-${i}`)
    const mockContext = yield* Layer.build(
      MockRefreshClient.layer({ whenEmpty: MockRefreshClient.succeed({ delay: "1 millis" }) })
    )
    const keyed = yield* SessionStore.makeMemoryKeyed
    // Expired already: every first read needs a refresh.
    for (const key of keys) yield* (yield* keyed.forKey(key)).save(sessionFor(key, Date.now() - 1_000))
    const pool = Context.get(
      yield* Layer.build(
        SessionPool.layer({ maxConcurrentRefreshes: cap, idleTimeToLive: "1 hour" }).pipe(
          Layer.provide(Layer.succeedContext(mockContext)),
          Layer.provide(Layer.succeed(SessionStore.KeyedSessionStore, keyed))
        )
      ),
      SessionPool.SessionPool
    )
    const start = performance.now()
    yield* Effect.forEach(keys, (key) => Effect.either(pool.accessToken(key)), {
      concurrency: "unbounded",
      discard: true
    })
    const millis = performance.now() - start
    const stats = yield* pool.stats
    const mock = Context.get(mockContext, MockRefreshClient.MockRefreshClient)
    return { sessions: n, cap, maxInFlight: stats.maxRefreshesInFlight, posts: (yield* mock.stats).calls, millis }
  }).pipe(Effect.scoped)

export const measurePool = (settings: {
  readonly scales: ReadonlyArray<number>
  readonly reads: number
  readonly stampede: number
  readonly cap: number
}) =>
  Effect.runPromise(Effect.gen(function*() {
    const scales: Array<PoolFigures> = []
    for (const n of settings.scales) scales.push(yield* measureScale(n))
    const readsPerSecond = yield* measureReads(settings.scales[settings.scales.length - 1]!, settings.reads)
    const stampede = yield* measureStampede(settings.stampede, settings.cap)
    return { scales, readsPerSecond, stampede }
  }))

// Run on its own: `npx tsx --expose-gc bench/pool.ts`.
if (import.meta.url === `file://${process.argv[1]}`) {
  measurePool({ scales: [1_000, 10_000, 100_000], reads: 1_000_000, stampede: 10_000, cap: 16 }).then(
    (result) => {
      console.table(result.scales.map((row) => ({
        sessions: row.sessions,
        "stored B/session": Math.round(row.storedBytesPerSession),
        "pool B/live session": Math.round(row.liveBytesPerSession),
        "B/idle session": Math.round(row.idleBytesPerSession),
        "warm ms": Math.round(row.warmMillis),
        "warm µs/session": row.warmMicrosPerSession.toFixed(1)
      })))
      console.log(`reads/s, random live keys: ${Math.round(result.readsPerSecond).toLocaleString("en")}`)
      console.log(`stampede: ${JSON.stringify(result.stampede)}`)
    },
    (error) => {
      console.error(error)
      process.exit(1)
    }
  )
}

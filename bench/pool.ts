/**
 * The pool section of `npm run bench` (also `npx tsx bench/pool.ts`
 * on its own): what a `SessionPool` costs per session, in memory and time, at
 * 1,000, 10,000 and 100,000 sessions; how fast it serves tokens for random
 * keys; and how many refresh POSTs it has in flight when 10,000 sessions
 * expire together. No HTTP: a `MockRefreshClient` answers the refreshes, so
 * the figures are the pool's own.
 *
 * Sessions carry realistic tokens: a 900-character access token (a Supabase
 * JWT is about that) and a 40-character refresh token, distinct per session.
 */
import { Clock, Context, Duration, Effect, Layer, Redacted, References } from "effect"
import { Session, SessionPool, SessionStore } from "moon-refresh"
import { MockRefreshClient } from "moon-refresh/testing"
import { fileURLToPath, pathToFileURL } from "node:url"
import { answer, runCompiled } from "./compiled.js"

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
  /** Heap the pool still holds per session once it dropped them all for being idle (the store's records aside). */
  readonly idleBytesPerSession: number
  /** Time to load every session from the store into the pool. */
  readonly warmMillis: number
  readonly warmMicrosPerSession: number
}

/**
 * A clock the bench moves by hand. Each load from a store races a timeout (a
 * sleep, interrupted when the load wins), so the clock's sleep is on the
 * warm-up's path: here it is one entry added to a set and dropped from it,
 * as cheap as the live clock's timer. Not `TestClock`, which adds work of its
 * own to every sleep (a semaphore-guarded check for its "time is not moving"
 * warning, a sorted insert, a search on removal) and, when moved, waits for
 * the fibers it woke to suspend: costs that would be counted as the pool's.
 */
const manualClock = (start: number) => {
  let now = start
  const sleeps = new Set<{ readonly at: number; readonly wake: () => void }>()
  const nanos = () => BigInt(now) * 1_000_000n
  const clock: Clock.Clock = {
    currentTimeMillisUnsafe: () => now,
    currentTimeMillis: Effect.sync(() => now),
    currentTimeNanosUnsafe: nanos,
    currentTimeNanos: Effect.sync(nanos),
    monotonicTimeNanosUnsafe: nanos,
    monotonicTimeNanos: Effect.sync(nanos),
    sleep: (duration) =>
      Effect.callback<void>((resume) => {
        const sleep = { at: now + Duration.toMillis(duration), wake: () => resume(Effect.void) }
        sleeps.add(sleep)
        return Effect.sync(() => void sleeps.delete(sleep))
      })
  }
  /** Moves the clock on and wakes the sleeps that are due. */
  const adjust = (millis: number) =>
    Effect.sync(() => {
      now += millis
      for (const sleep of [...sleeps]) {
        if (sleep.at <= now) {
          sleeps.delete(sleep)
          sleep.wake()
        }
      }
    })
  return { clock, adjust }
}

/** Lets the fibers a wake-up started run, until `done` (or gives up). */
const settle = (done: Effect.Effect<boolean>) =>
  Effect.gen(function*() {
    for (let turn = 0; turn < 10_000; turn++) {
      if (yield* done) return true
      yield* Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))
    }
    return false
  })

/**
 * Builds a pool over a keyed memory store holding `n` valid sessions and
 * measures it. On a clock moved by hand: the sweep that drops idle sessions
 * runs when the bench moves the clock, not during the warm-up.
 */
const measureScale = (n: number) => {
  const time = manualClock(Date.now())
  return Effect.gen(function*() {
    const keys = Array.from({ length: n }, (_, i) => `user-${i}`)
    const mockContext = yield* Layer.build(MockRefreshClient.layer())
    const keyed = yield* SessionStore.makeMemoryKeyed
    const base = heap()
    const expiresAt = Date.now() + 3_600_000
    for (const key of keys) yield* (yield* keyed.forKey(key)).save(sessionFor(key, expiresAt))
    const stored = heap()
    const pool = Context.get(
      yield* Layer.build(
        SessionPool.layer({ idleTimeToLive: "10 minutes", capacity: n }).pipe(
          Layer.provide(Layer.succeedContext(mockContext)),
          Layer.provide(Layer.succeed(SessionStore.KeyedSessionStore, keyed))
        )
      ),
      SessionPool.SessionPool
    )
    const warmStart = performance.now()
    for (const key of keys) yield* pool.accessToken(key)
    const warmMillis = performance.now() - warmStart
    if ((yield* pool.stats).live !== n) throw new Error("not every session is live")
    const live = heap()
    // Idle past idleTimeToLive: the sweep drops every session from memory.
    yield* time.adjust(Duration.toMillis("15 minutes"))
    const live0 = Effect.map(pool.stats, (stats) => stats.live === 0)
    if (!(yield* settle(live0))) throw new Error("the sweep left sessions in memory")
    const idle = heap()
    return {
      sessions: n,
      storedBytesPerSession: (stored - base) / n,
      liveBytesPerSession: (live - stored) / n,
      idleBytesPerSession: (idle - stored) / n,
      warmMillis,
      warmMicrosPerSession: (warmMillis * 1000) / n
    } satisfies PoolFigures
  }).pipe(Effect.scoped, Effect.provideService(Clock.Clock, time.clock))
}

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
    for (const key of order) if (Redacted.isRedacted(yield* pool.accessToken(key))) length++
    const seconds = (performance.now() - start) / 1000
    if (length !== reads) throw new Error("a read did not give a token")
    return reads / seconds
  }).pipe(Effect.scoped)

/** The most refresh POSTs in flight when `n` sessions all need one at once, with the cap at `cap`. */
const measureStampede = (n: number, cap: number) =>
  Effect.gen(function*() {
    const keys = Array.from({ length: n }, (_, i) => `user-${i}`)
    const mockContext = yield* Layer.build(
      MockRefreshClient.layer({ whenEmpty: MockRefreshClient.succeed({ delay: "1 millis" }) })
    )
    const mock = Context.get(mockContext, MockRefreshClient.MockRefreshClient)
    const keyed = yield* SessionStore.makeMemoryKeyed
    // Expired already: every first read needs a refresh.
    for (const key of keys) yield* (yield* keyed.forKey(key)).save(yield* mock.issueSession({ lifetime: 0, name: key }))
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
    yield* Effect.forEach(keys, (key) => Effect.result(pool.accessToken(key)), {
      concurrency: "unbounded",
      discard: true
    })
    const millis = performance.now() - start
    const stats = yield* pool.stats
    return { sessions: n, cap, maxInFlight: stats.maxRefreshesInFlight, posts: (yield* mock.stats).calls, millis }
  }).pipe(Effect.scoped)

export const measurePool = async (settings: {
  readonly scales: ReadonlyArray<number>
  /**
   * A scale is measured only if, judged by the one before it (its time times
   * the ratio of sizes), it ends within this many seconds of the section's
   * start; the first two always are. A busy machine so skips the largest.
   */
  readonly budgetSeconds: number
  /** Reads are of random keys among this many live sessions. */
  readonly readsOver: number
  readonly reads: number
  readonly stampede: number
  readonly cap: number
}) => {
  // One program per measurement: each starts from the default services.
  const run = <A, E>(effect: Effect.Effect<A, E>) =>
    Effect.runPromise(effect.pipe(Effect.provideService(References.MinimumLogLevel, "None")))
  const scales: Array<PoolFigures> = []
  const skipped: Array<number> = []
  const started = performance.now()
  let previous: { readonly n: number; readonly millis: number } | undefined
  for (const [i, n] of settings.scales.entries()) {
    const expected = previous === undefined ? 0 : (previous.millis * n) / previous.n
    if (i >= 2 && performance.now() - started + expected > settings.budgetSeconds * 1000) {
      skipped.push(n)
      continue
    }
    const scaleStart = performance.now()
    scales.push(await run(measureScale(n)))
    previous = { n, millis: performance.now() - scaleStart }
  }
  const readsPerSecond = await run(measureReads(settings.readsOver, settings.reads))
  const stampede = await run(measureStampede(settings.stampede, settings.cap))
  return { scales, skipped, readsPerSecond, stampede }
}

/** `measurePool` in a process of its own, on the library compiled as users run it (see `compiled.ts`). */
export const measurePoolCompiled = (settings: Parameters<typeof measurePool>[0]) =>
  runCompiled<Awaited<ReturnType<typeof measurePool>>>(
    fileURLToPath(import.meta.url),
    ["--child", JSON.stringify(settings)],
    "the pool section"
  )

const isMain = import.meta.url === pathToFileURL(process.argv[1] ?? "").href

if (isMain && process.argv[2] === "--child" && process.send !== undefined) {
  answer(measurePool(JSON.parse(process.argv[3]!)))
} else if (isMain) {
  // On its own: `npx tsx bench/pool.ts` (POOL_SCALES=1000,10000 for a shorter run).
  measurePoolCompiled({
    scales: (process.env.POOL_SCALES ?? "1000,10000,100000").split(",").map(Number),
    budgetSeconds: Infinity,
    readsOver: 10_000,
    reads: 1_000_000,
    stampede: 10_000,
    cap: 16
  }).then(
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

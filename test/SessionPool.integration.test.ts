// A SessionPool of 1,000 users against MockMoonServer over real HTTP on
// 127.0.0.1, in real time: single-use refresh tokens with no reuse window,
// 4-second access tokens, readers on every key, across several expiries.
import { FetchHttpClient } from "@effect/platform"
import { describe, expect, it } from "@effect/vitest"
import { Context, Duration, Effect, Fiber, Layer, Option, Redacted, Stream } from "effect"
import { RefreshClient, Session, SessionPool, SessionStore } from "moon-refresh"
import { MockMoonServer } from "moon-refresh/testing"

const keys = Array.from({ length: 1_000 }, (_, i) => `user-${i}`)
const runFor = Duration.seconds(20)

describe("SessionPool over real HTTP", () => {
  it.scopedLive(
    "1,000 keys with readers across several expiries: one refresh POST per key per expiry, no reuse; a revoked key alone is signed out",
    () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.make({ accessTokenLifetime: 6, reuseWindow: 0 })
        const keyed = yield* SessionStore.makeMemoryKeyed
        const pool = Context.get(
          yield* Layer.build(
            SessionPool.layer({
              session: { margin: "2 seconds", minInterval: 0, cooldown: "200 millis" },
              idleTimeToLive: "1 hour",
              maxConcurrentRefreshes: 32
            }).pipe(
              // A generous timeout: on a busy machine an answer the server sent must not be given up on (with no
              // reuse window, a retry of a rotated token is a reuse: the lost-answer limit, not the pool's).
              Layer.provide(RefreshClient.layer({ baseUrl: server.url, timeout: "60 seconds" })),
              Layer.provide(FetchHttpClient.layer),
              Layer.provide(Layer.succeed(SessionStore.KeyedSessionStore, keyed))
            )
          ),
          SessionPool.SessionPool
        )
        const refreshed = new Map<string, number>()
        const signedOut: Array<string> = []
        yield* Effect.forkScoped(Stream.runForEach(pool.events, ({ event, key }) =>
          Effect.sync(() => {
            if (event._tag === "Refreshed") refreshed.set(key, (refreshed.get(key) ?? 0) + 1)
            if (event._tag === "SignedOut") signedOut.push(key)
          })))
        const first = new Map<string, Session.Session>()
        yield* Effect.forEach(keys, (key) =>
          Effect.gen(function*() {
            const session = Session.unsafeMake(yield* server.issueSession({ user: { id: key } }))
            first.set(key, session)
            yield* (yield* keyed.forKey(key)).save(session)
          }), { discard: true })

        // Readers: for every key, two concurrent reads every 200 ms, each key on its own fiber.
        let reads = 0
        const failures: Array<string> = []
        const readers = yield* Effect.fork(
          Effect.forEach(
            keys,
            (key) =>
              Effect.forever(
                Effect.zipRight(
                  Effect.all([pool.accessToken(key), pool.accessToken(key)], { concurrency: 2 }).pipe(
                    Effect.match({
                      onFailure: (error) => {
                        if (key !== "user-0") failures.push(`${key}: ${error._tag}`)
                      },
                      onSuccess: () => {
                        reads += 2
                      }
                    })
                  ),
                  Effect.sleep("200 millis")
                )
              ),
            { concurrency: "unbounded", discard: true }
          )
        )
        // Half way through, user-0's session is revoked server-side (a sign-out elsewhere).
        yield* Effect.sleep(Duration.toMillis(runFor) / 2)
        yield* server.revokeSession(Redacted.value(Option.getOrThrow(yield* pool.current("user-0")).refreshToken))
        yield* Effect.sleep(Duration.toMillis(runFor) / 2)
        yield* Fiber.interrupt(readers)

        const stats = yield* server.stats
        const counts = [...refreshed.values()]
        const perKey = { min: Math.min(...counts), max: Math.max(...counts) }
        console.log(
          `pool over HTTP: ${keys.length} keys, ${runFor.toString()}: ${stats.refreshRequests} refresh POSTs, ` +
            `${stats.rotations} rotations, ${stats.reuseRejections} reuse rejections; refreshes per key ` +
            `${perKey.min}..${perKey.max}; ${reads} reads; ${failures.length} failed reads; ` +
            `POSTs in flight at most ${(yield* pool.stats).maxRefreshesInFlight}; signed out: ${signedOut.join(", ")}`
        )
        // Every POST rotated a live token: none was a second POST of the same token.
        expect(stats.reuseRejections).toBe(0)
        expect(stats.rotations).toBe(stats.refreshRequests - 1) // the revoked key's one refused POST
        expect(stats.unknownTokens).toBe(1)
        // Several expiries for every key (6 s tokens, refreshed 1 to 2 s early), never more than one refresh a lifetime.
        expect(refreshed.size).toBe(keys.length)
        expect(perKey.min).toBeGreaterThanOrEqual(3)
        expect(perKey.max).toBeLessThanOrEqual(Math.ceil(Duration.toSeconds(runFor) / 4) + 1)
        // Only the revoked key was signed out, and every other key holds a live session.
        expect(signedOut).toStrictEqual(["user-0"])
        expect(failures).toStrictEqual([])
        expect((yield* pool.stats).maxRefreshesInFlight).toBeLessThanOrEqual(32)
        for (const key of keys.slice(1)) {
          const held = Option.getOrThrow(yield* pool.current(key))
          expect(yield* server.isLive(held.refreshToken)).toBe(true)
        }
        expect(Option.isNone(yield* pool.current("user-0"))).toBe(true)
      }),
    60_000
  )
})

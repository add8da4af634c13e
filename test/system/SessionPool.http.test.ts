// A SessionPool of 1,000 users against MockMoonServer over real HTTP on
// 127.0.0.1, in real time (`npm run test:system`): single-use refresh tokens
// with no reuse window, 8-second access tokens, readers on every key. It runs
// until every key has been refreshed twice (a revoked key aside), then counts
// outcomes; how long that took is printed, not asserted.
import { describe, expect, it } from "@effect/vitest"
import { Context, DateTime, Effect, Fiber, Layer, Option, Redacted, Schedule, Stream } from "effect"
import { FetchHttpClient } from "effect/http"
import { RefreshClient, Session, SessionPool, SessionStore } from "moon-refresh"
import { MockMoonServer } from "moon-refresh/testing"

const keys = Array.from({ length: 1_000 }, (_, i) => `user-${i}`)
const marginMs = 2_000
/** Every wait is bounded by this, as a guard against a hang. */
const hangGuard = "150 seconds"

/** Waits until `condition` holds, checking every 100 ms, within the hang guard. */
const until = <E>(what: string, condition: Effect.Effect<boolean, E>) =>
  condition.pipe(
    Effect.filterOrFail((holds) => holds, () => `not yet: ${what}`),
    Effect.retry(Schedule.spaced("100 millis")),
    Effect.timeoutOrElse({ duration: hangGuard, orElse: () => Effect.fail(`never: ${what}`) })
  )

describe("SessionPool over real HTTP", () => {
  it.live(
    "1,000 keys with readers across expiries: one refresh POST per key per expiry, no reuse; a revoked key alone is signed out",
    () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.make({ accessTokenLifetime: 8, reuseWindow: 0 })
        const keyed = yield* SessionStore.makeMemoryKeyed
        const pool = Context.get(
          yield* Layer.build(
            SessionPool.layer({
              session: { margin: `${marginMs} millis`, minInterval: 0, cooldown: "200 millis" },
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
        // Per key, each refresh: when it was published, and the expiry of the session it brought.
        const refreshed = new Map<string, Array<{ readonly at: number; readonly expiresAt: number }>>()
        const signedOut: Array<string> = []
        yield* Effect.forkScoped(Stream.runForEach(pool.events, ({ event, key }) =>
          Effect.sync(() => {
            if (event._tag === "Refreshed") {
              const all = refreshed.get(key) ?? []
              all.push({ at: Date.now(), expiresAt: DateTime.toEpochMillis(event.session.expiresAt) })
              refreshed.set(key, all)
            }
            if (event._tag === "SignedOut") signedOut.push(key)
          })))
        const seeded = new Map<string, number>()
        for (const key of keys) {
          const session = Session.unsafeMake(yield* server.issueSession({ user: { id: key } }))
          seeded.set(key, DateTime.toEpochMillis(session.expiresAt))
          yield* (yield* keyed.forKey(key)).save(session)
        }
        const others = keys.slice(1)
        const everyKeyRefreshed = (times: number) =>
          Effect.sync(() => others.every((key) => (refreshed.get(key)?.length ?? 0) >= times))

        // Readers: two per key, each on its own fiber, reading every 200 ms.
        let reads = 0
        const failures: Array<string> = []
        const reader = (key: string) =>
          Effect.forever(
            Effect.andThen(
              pool.accessToken(key).pipe(
                Effect.match({
                  onFailure: (error) => {
                    if (key !== "user-0") failures.push(`${key}: ${error._tag}`)
                  },
                  onSuccess: () => {
                    reads++
                  }
                })
              ),
              Effect.sleep("200 millis")
            )
          )
        const started = Date.now()
        const readers = yield* Effect.forkChild(
          Effect.forEach([...keys, ...keys], reader, { concurrency: "unbounded", discard: true })
        )
        // Once every key went through one expiry, user-0's session is revoked server-side (a sign-out elsewhere).
        yield* until("every key refreshed once", everyKeyRefreshed(1))
        yield* server.revokeSession(Redacted.value(Option.getOrThrow(yield* pool.current("user-0")).refreshToken))
        yield* until("every other key refreshed twice", everyKeyRefreshed(2))
        yield* Fiber.interrupt(readers)
        const ranMs = Date.now() - started

        // The proactive refreshes go on: a key's held token may be spent by a POST whose answer is on its way
        // (test/repro/pool-held-token.test.ts showed exactly that). Each key must come to hold a live token.
        const notLiveAtFirst: Array<string> = []
        for (const key of others) {
          const heldIsLive = Effect.flatMap(
            pool.current(key),
            (held) => Option.isSome(held) ? server.isLive(held.value.refreshToken) : Effect.succeed(false)
          )
          if (!(yield* heldIsLive)) {
            notLiveAtFirst.push(key)
            yield* until(`${key} holds a live token`, heldIsLive)
          }
        }

        const stats = yield* server.stats
        const counts = others.map((key) => refreshed.get(key)?.length ?? 0)
        // Never a refresh before the margin of the session it replaces: one refresh a lifetime at most.
        const early = others.flatMap((key) => {
          const events = refreshed.get(key) ?? []
          return events.flatMap((event, i) => {
            const replaced = i === 0 ? seeded.get(key)! : events[i - 1]!.expiresAt
            return event.at < replaced - marginMs ? [`${key}#${i}`] : []
          })
        })
        console.log(
          `pool over HTTP: ${keys.length} keys until each was refreshed twice (${ranMs} ms): ${stats.refreshRequests} ` +
            `refresh POSTs, ${stats.rotations} rotations, ${stats.reuseRejections} reuse rejections; refreshes per key ` +
            `${Math.min(...counts)}..${
              Math.max(...counts)
            }; ${reads} reads; ${failures.length} failed reads; POSTs in ` +
            `flight at most ${(yield* pool.stats).maxRefreshesInFlight}; held a token whose refresh was in flight at ` +
            `the check: ${notLiveAtFirst.length}; signed out: ${signedOut.join(", ")}`
        )
        // Every POST rotated a live token: none was a second POST of the same token.
        expect(stats.reuseRejections).toBe(0)
        expect(stats.rotations).toBe(stats.refreshRequests - 1) // the revoked key's one refused POST
        expect(stats.unknownTokens).toBe(1)
        expect(early).toStrictEqual([])
        // Only the revoked key was signed out.
        expect(signedOut).toStrictEqual(["user-0"])
        expect(failures).toStrictEqual([])
        expect((yield* pool.stats).maxRefreshesInFlight).toBeLessThanOrEqual(32)
        expect(Option.isNone(yield* pool.current("user-0"))).toBe(true)
      }),
    300_000
  )
})

/**
 * SessionManager on RedisSessionStore, unchanged, when Redis goes away: the
 * session held in memory keeps serving, a refresh (which needs the lock)
 * fails with a StoreError and a cooldown without any POST, and nothing is
 * lost when Redis returns, even empty.
 */
import { describe, expect, it } from "@effect/vitest"
import { Clock, Context, Effect, Layer, Option, Redacted, Schema, Stream } from "effect"
import { FetchHttpClient } from "effect/http"
import { RefreshClient, Session, SessionManager, SessionStore } from "moon-refresh"
import { RedisSessionStore } from "moon-refresh/redis"
import { MockMoonServer } from "moon-refresh/testing"
import { freshKey, ownRedisServer, rawClient } from "./helpers.js"

describe("SessionManager on RedisSessionStore: Redis down", () => {
  it.live("the session is served from memory, a refresh fails with the cooldown, nothing is lost when Redis returns", () =>
    Effect.gen(function*() {
      const redis = yield* ownRedisServer
      const server = yield* MockMoonServer.make({ reuseWindow: 0, accessTokenLifetime: 3600 })
      const key = freshKey("manager")
      const client = yield* RedisSessionStore.makeClient(redis.url)
      const context = yield* Layer.build(
        SessionManager.layer({ autoRefresh: false, cooldown: "1 second", storeTimeout: "2 seconds" }).pipe(
          Layer.provide(RefreshClient.layer({ baseUrl: server.url })),
          Layer.provide(RedisSessionStore.layer({ key, timeout: "300 millis" })),
          Layer.provide(RedisSessionStore.layerClient(client)),
          Layer.provide(FetchHttpClient.layer)
        )
      )
      const manager = Context.get(context, SessionManager.SessionManager)
      const events: Array<SessionManager.SessionEvent> = []
      yield* Effect.forkScoped(Stream.runForEach(manager.events, (event) => Effect.sync(() => events.push(event))))
      const signedIn = Session.unsafeMake(yield* server.issueSession())
      yield* manager.signIn(signedIn)

      yield* Effect.promise(() => redis.kill())
      // Reads stay in memory.
      const tokens = yield* Effect.all(Array.from({ length: 100 }, () => manager.accessToken), {
        concurrency: "unbounded"
      })
      expect(new Set(tokens.map(Redacted.value))).toStrictEqual(new Set([Redacted.value(signedIn.accessToken)]))

      const start = yield* Clock.currentTimeMillis
      const failed = yield* Effect.flip(manager.refresh)
      const failedAfter = (yield* Clock.currentTimeMillis) - start
      expect(failed).toMatchObject({ _tag: "StoreError", operation: "lock" })
      // Bounded by the store's 300 ms timeout; a hang guard far under the manager's 60 s lockTimeout.
      expect(failedAfter).toBeLessThan(10_000)
      expect(events.some((event) => event._tag === "RefreshFailed")).toBe(true)
      // Inside the cooldown a refresh fails at once, and no POST was ever sent without the lock.
      expect((yield* Effect.flip(manager.refresh))._tag).toBe("StoreError")
      expect((yield* server.stats).refreshRequests).toBe(0)
      expect(Redacted.value(yield* manager.accessToken)).toBe(Redacted.value(signedIn.accessToken))

      // Redis returns without its data; after the cooldown the refresh goes through.
      yield* Effect.promise(() => redis.restart())
      yield* Effect.sleep("1100 millis")
      const refreshed = yield* manager.refresh
      const raw = yield* rawClient(redis.url)
      const record = Schema.decodeSync(SessionStore.StoredJson)((yield* Effect.promise(() => raw.get(key)))!)
      console.log(
        `Redis down under a manager: refresh failed after ${failedAfter} ms; back: record at revision ${record.revision}, ` +
          `stats ${JSON.stringify(yield* server.stats)}`
      )
      expect(yield* server.stats).toMatchObject({ refreshRequests: 1, rotations: 1, reuseRejections: 0 })
      expect(record.revision).toBe(2)
      expect(Redacted.value(Option.getOrThrow(record.session).refreshToken)).toBe(
        Redacted.value(refreshed.refreshToken)
      )
      expect(yield* server.isLive(refreshed.refreshToken)).toBe(true)
    }))
})

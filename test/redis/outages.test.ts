/**
 * When Redis is not well: stopped, frozen, restarted with its data, without
 * it, or from an older snapshot, and a subscriber that missed a message.
 * Each test starts its own redis-server, so it can kill and restart it.
 */
import { describe, expect, it } from "@effect/vitest"
import { Clock, Deferred, Effect, Option, Schedule, Schema, Stream } from "effect"
import type { SessionStore as SessionStoreNs } from "moon-refresh"
import { SessionStore } from "moon-refresh"
import { freshKey, openStore, ownRedisServer, rawClient, session, tokenOf } from "./helpers.js"

/** Runs `effect` and returns how long it took, in ms, and its result. */
const timed = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const start = yield* Clock.currentTimeMillis
    const result = yield* Effect.result(effect)
    return { ms: (yield* Clock.currentTimeMillis) - start, result }
  })

/** The first record from `store`'s feed with at least `revision`, within 10 s. */
const awaitRevision = (store: SessionStoreNs.Service, revision: number) =>
  Effect.gen(function*() {
    const seen = yield* Deferred.make<SessionStoreNs.Stored>()
    yield* Effect.forkScoped(Stream.runForEach(
      store.changes,
      (stored) => stored.revision >= revision ? Deferred.succeed(seen, stored) : Effect.void
    ))
    return Deferred.await(seen).pipe(
      Effect.timeoutOrElse({ duration: "10 seconds", orElse: () => Effect.fail("no record") })
    )
  })

describe("RedisSessionStore: Redis down", () => {
  it.live("stopped: every operation fails with a StoreError within the timeout; back, they work", () =>
    Effect.gen(function*() {
      const redis = yield* ownRedisServer
      const store = yield* openStore(redis.url, { key: freshKey("down"), timeout: "500 millis" })
      yield* store.write(Option.some(session("1")), 0)
      yield* Effect.promise(() => redis.kill())

      const outcomes = [
        yield* timed(store.read),
        yield* timed(store.write(Option.some(session("2")), 1)),
        yield* timed(store.withLock(Effect.void))
      ]
      console.log(`Redis stopped: read, write, lock failed after ${outcomes.map((o) => o.ms).join(", ")} ms`)
      for (const { ms, result } of outcomes) {
        expect(result._tag).toBe("Failure")
        expect(result._tag === "Failure" && result.failure).toMatchObject({ _tag: "StoreError" })
        // A hang guard, far past the 500 ms bound: unbounded, an operation would wait for ever.
        expect(ms).toBeLessThan(10_000)
      }

      yield* Effect.promise(() => redis.restart())
      // The server came back empty; the store puts back the record it knew.
      const stored = yield* store.read.pipe(Effect.retry({ times: 20 }))
      expect(stored.revision).toBe(1)
      expect((yield* store.write(Option.some(session("2")), 1)).revision).toBe(2)
    }))

  it.live("frozen (no answer, connections open): operations fail with a StoreError within the timeout", () =>
    Effect.gen(function*() {
      const redis = yield* ownRedisServer
      const store = yield* openStore(redis.url, { key: freshKey("frozen"), timeout: "500 millis" })
      yield* store.write(Option.some(session("1")), 0)
      redis.freeze()
      const read = yield* timed(store.read)
      const lock = yield* timed(store.withLock(Effect.void))
      redis.thaw()
      console.log(`Redis frozen: read failed after ${read.ms} ms, lock after ${lock.ms} ms`)
      for (const { ms, result } of [read, lock]) {
        expect(result._tag === "Failure" && result.failure).toMatchObject({ _tag: "StoreError" })
        // Not before the bound; the hang guard far past it (a frozen server never answers).
        expect(ms).toBeGreaterThanOrEqual(499)
        expect(ms).toBeLessThan(10_000)
      }
      expect(read.result._tag === "Failure" && read.result.failure.message).toContain("did not answer within 500ms")
      const back = yield* store.read.pipe(Effect.retry({ times: 20 }))
      expect(tokenOf(back)).toBe("refresh-1")
    }))
})

describe("RedisSessionStore: Redis restarted", () => {
  // Two replicas hold revision 2; Redis restarts in one of three ways.
  const restarted = (how: "data kept" | "data lost" | "older snapshot") =>
    Effect.gen(function*() {
      const redis = yield* ownRedisServer
      const key = freshKey("restart")
      const [a, b] = [yield* openStore(redis.url, { key }), yield* openStore(redis.url, { key })]
      yield* a.write(Option.some(session("1")), 0)
      if (how === "older snapshot") yield* Effect.promise(() => redis.save())
      const bSees2 = yield* awaitRevision(b, 2)
      yield* a.write(Option.some(session("2")), 1)
      yield* bSees2

      if (how === "data kept") yield* Effect.promise(() => redis.shutdownSaving())
      else yield* Effect.promise(() => redis.kill())
      yield* Effect.promise(() => redis.restart())

      // Once reconnected, b reads the record (its feed starts with it) and
      // passes it on; whichever replica reads first puts revision 2 back if
      // the server lost it.
      const seen = yield* Effect.flatten(awaitRevision(b, 2))
      expect(seen.revision).toBe(2)
      expect(tokenOf(seen)).toBe("refresh-2")
      const raw = yield* rawClient(redis.url)
      const value = yield* Effect.promise(() => raw.get(key))
      expect(Schema.decodeSync(SessionStore.StoredJson)(value!).revision).toBe(2)
      // Fencing goes on from there: the next write at 2 wins, a stale one is refused.
      expect((yield* a.write(Option.some(session("3")), 2)).revision).toBe(3)
      expect((yield* Effect.flip(b.write(Option.some(session("stale")), 2)))._tag).toBe("StoreConflictError")
      expect(tokenOf(yield* b.read)).toBe("refresh-3")
    })

  it.live("with its data: the replicas carry on at the same revision", () => restarted("data kept"))
  it.live("without its data: the replicas put back the newest record they hold", () => restarted("data lost"))
  it.live("from an older snapshot: the replicas put back the newer record they hold", () => restarted("older snapshot"))

  it.live("a write published while a subscriber was disconnected reaches it by the re-read on reconnect", () =>
    Effect.gen(function*() {
      const redis = yield* ownRedisServer
      const key = freshKey("missed")
      const store = yield* openStore(redis.url, { key })
      yield* store.write(Option.some(session("1")), 0)
      // The feed is running (it started with revision 1) before the write below.
      const received: Array<SessionStoreNs.Stored> = []
      yield* Effect.forkScoped(Stream.runForEach(store.changes, (stored) => Effect.sync(() => received.push(stored))))
      yield* Effect.suspend(() => received.length > 0 ? Effect.void : Effect.fail("none")).pipe(
        Effect.retry(Schedule.spaced("20 millis")),
        Effect.timeout("5 seconds")
      )
      const raw = yield* rawClient(redis.url)
      // In one transaction: drop every subscriber, then another holder writes
      // and publishes to nobody.
      const json = Schema.encodeSync(SessionStore.StoredJson)({ revision: 2, session: Option.some(session("2")) })
      yield* Effect.promise(() =>
        raw.multi().client("KILL", "TYPE", "pubsub").set(key, json).publish(`${key}:changes`, json).exec()
      )
      const stored = yield* Effect.suspend(() => {
        const found = received.find((stored) => stored.revision === 2)
        return found === undefined ? Effect.fail("none") : Effect.succeed(found)
      }).pipe(Effect.retry(Schedule.spaced("20 millis")), Effect.timeout("10 seconds"))
      expect(tokenOf(stored)).toBe("refresh-2")
    }))
})

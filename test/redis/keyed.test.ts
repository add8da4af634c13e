/**
 * RedisSessionStore.makeKeyed against a real redis-server: the store contract
 * on one key, keys that never touch each other (even keys built to look like
 * another's lock or channel), one subscriber connection whose channels exist
 * only while a key's feed runs, and a SessionPool on it.
 */
import { describe, expect, inject, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, Option, Schedule, Stream } from "effect"
import type { SessionStore } from "moon-refresh"
import { RedisSessionStore } from "moon-refresh/redis"
import * as Internal from "../../src/redis/internal/redis.js"
import { acrossExpiries, followFeeds } from "../support/KeyedPool.js"
import { storeContract } from "../support/StoreContract.js"
import { freshKey, rawClient, session, tokenOf } from "./helpers.js"

const url = inject("redisUrl")

/** A keyed store on a client of its own, as one replica has. */
const openKeyed = (options: RedisSessionStore.KeyedOptions) =>
  Effect.flatMap(
    RedisSessionStore.makeClient(url),
    (client) => Effect.provideService(RedisSessionStore.makeKeyed(options), RedisSessionStore.RedisClient, client)
  )

/** The internal keyed store, whose subscriber the tests look at. */
const openKeyedInternal = (prefix: string) =>
  Effect.flatMap(
    RedisSessionStore.makeClient(url),
    (client) => Internal.makeKeyed(client, { prefix, lease: 10_000, lockTimeout: 30_000, timeout: 2_000 })
  )

const freshPrefix = (name: string) => `${freshKey(name)}:`

storeContract(
  "RedisSessionStore.makeKeyed, forKey(\"some-user\")",
  Effect.sync(() => {
    const prefix = freshPrefix("keyed-contract")
    return { open: Effect.flatMap(openKeyed({ prefix }), (keyed) => keyed.forKey("some-user")) }
  }),
  { feedWithin: "5 seconds" }
)

describe("RedisSessionStore.makeKeyed: keys", () => {
  it.live("stores a key's record under prefix{key}, percent-encoded, and gives it back for every forKey", () =>
    Effect.gen(function*() {
      const prefix = freshPrefix("names")
      const [one, two] = [yield* openKeyed({ prefix }), yield* openKeyed({ prefix })]
      const raw = yield* rawClient(url)
      yield* (yield* one.forKey("ada")).save(session("ada"))
      yield* (yield* one.forKey("a:b{c}/é")).save(session("odd"))
      expect(RedisSessionStore.recordKey(prefix, "ada")).toBe(`${prefix}{ada}`)
      expect(RedisSessionStore.recordKey(prefix, "a:b{c}/é")).toBe(`${prefix}{a%3Ab%7Bc%7D%2F%C3%A9}`)
      expect((yield* Effect.promise(() => raw.keys(`${prefix}*`))).sort()).toStrictEqual(
        [`${prefix}{a%3Ab%7Bc%7D%2F%C3%A9}`, `${prefix}{ada}`]
      )
      for (const keyed of [one, two]) {
        expect(tokenOf(yield* (yield* keyed.forKey("ada")).read)).toBe("refresh-ada")
        expect(tokenOf(yield* (yield* keyed.forKey("a:b{c}/é")).read)).toBe("refresh-odd")
      }
    }))

  it.live("keys shaped like another key's lock or channel get records of their own", () =>
    Effect.gen(function*() {
      const prefix = freshPrefix("shapes")
      const keyed = yield* openKeyed({ prefix })
      // Under a plain `prefix + key` scheme, "ada:lock" would be ada's lock and "ada:changes" her channel.
      const keys = ["ada", "ada:lock", "ada:changes", "ada:released", "{ada}", "ada}:lock", "Ada", "%61da"]
      const holder = yield* Effect.forkChild((yield* keyed.forKey("ada")).withLock(Effect.never))
      yield* Effect.sleep("100 millis")
      for (const [i, key] of keys.entries()) {
        // Ada's lock is held: no other key's write (which needs no lock) or lock is held up by it.
        const store = yield* keyed.forKey(key)
        yield* store.write(Option.some(session(`k${i}`)), 0)
        if (key !== "ada") yield* store.withLock(Effect.void).pipe(Effect.timeout("2 seconds"))
      }
      yield* Fiber.interrupt(holder)
      for (const [i, key] of keys.entries()) {
        const stored = yield* (yield* keyed.forKey(key)).read
        expect([stored.revision, tokenOf(stored)]).toStrictEqual([1, `refresh-k${i}`])
      }
    }))

  it.live("refuses an empty key and one with a lone surrogate with a StoreError of operation \"key\"", () =>
    Effect.gen(function*() {
      const keyed = yield* openKeyed({ prefix: freshPrefix("bad") })
      for (const key of ["", "\uD800", "a\uDC00"]) {
        const error = yield* Effect.flip(keyed.forKey(key))
        expect(error).toMatchObject({ _tag: "StoreError", operation: "key" })
        expect(error.message).toMatch(/^RedisSessionStore: a key must/)
      }
    }))
})

describe("RedisSessionStore.makeKeyed: isolation", () => {
  it.live("writes and clears of one key never show in another's load or change feed", () =>
    Effect.gen(function*() {
      const prefix = freshPrefix("isolation")
      const [here, there] = [yield* openKeyed({ prefix }), yield* openKeyed({ prefix })]
      const [ada, bob] = [yield* here.forKey("ada"), yield* there.forKey("bob")]
      const seen: Array<string> = []
      const bobWrote = yield* Deferred.make<void>()
      yield* Effect.forkScoped(Stream.runForEach(bob.changes, (stored: SessionStore.Stored) =>
        Effect.andThen(
          Effect.sync(() => seen.push(`${stored.revision}:${tokenOf(stored)}`)),
          stored.revision === 1 ? Deferred.succeed(bobWrote, undefined) : Effect.void
        )))
      // Bob's channel subscribed before anyone writes.
      const raw = yield* rawClient(url)
      yield* Effect.promise(() => raw.pubsub("NUMSUB", `${prefix}{bob}:changes`)).pipe(
        Effect.filterOrFail((reply) => reply[1] === 1),
        Effect.retry(Schedule.spaced("20 millis")),
        Effect.timeout("5 seconds")
      )
      yield* ada.save(session("a1"))
      yield* ada.save(session("a2"))
      yield* ada.clear
      yield* ada.withLock(ada.read)
      expect(yield* bob.read).toStrictEqual({ revision: 0, session: Option.none() })
      yield* (yield* here.forKey("bob")).save(session("b1"))
      yield* Deferred.await(bobWrote).pipe(Effect.timeout("5 seconds"))
      // Only bob's records: the empty one his feed started with (perhaps twice: once read, once on subscribing), then his write.
      expect(seen.every((entry) => entry === "0:none" || entry === "1:refresh-b1")).toBe(true)
      expect(seen.at(-1)).toBe("1:refresh-b1")
      expect((yield* ada.read).revision).toBe(3)
    }))
})

describe("RedisSessionStore.makeKeyed: the subscriber", () => {
  it.live("is one connection for every key, subscribed to a key's channel only while its feed runs", () =>
    Effect.gen(function*() {
      const prefix = freshPrefix("subscriber")
      const { keyed, subscriber } = yield* openKeyedInternal(prefix)
      const raw = yield* rawClient(url)
      const channels = () => Effect.promise(() => raw.pubsub("CHANNELS", `${prefix}*`)) as Effect.Effect<Array<string>>
      const stores = yield* Effect.forEach(Array.from({ length: 1_000 }, (_, i) => `user-${i}`), keyed.forKey)
      expect(subscriber.channels()).toBe(0)
      const { feeds, received } = yield* followFeeds(stores.slice(0, 3))
      yield* channels().pipe(
        Effect.filterOrFail((subscribed) => subscribed.length === 3),
        Effect.retry(Schedule.spaced("20 millis")),
        Effect.timeout("5 seconds")
      )
      expect(subscriber.channels()).toBe(3)
      // One connection carries them all.
      const list = yield* Effect.promise(() => raw.client("LIST") as Promise<string>)
      const subscribers = list.split("\n").filter((line) =>
        line.includes("name=moon-refresh:changes") && /sub=[1-9]/.test(line)
      )
      expect(subscribers.map((line) => /sub=(\d+)/.exec(line)?.[1])).toContain("3")
      yield* stores[1]!.save(session("1"))
      yield* Deferred.await(received).pipe(Effect.timeout("5 seconds"))
      yield* Fiber.interruptAll(feeds)
      expect(subscriber.channels()).toBe(0)
      yield* channels().pipe(
        Effect.filterOrFail((subscribed) => subscribed.length === 0),
        Effect.retry(Schedule.spaced("20 millis")),
        Effect.timeout("5 seconds")
      )
    }))
})

describe("RedisSessionStore.makeKeyed under a SessionPool", () => {
  it.effect(
    "50 keys across two expiries: one refresh POST a key an expiry, no reuse; an idle session comes back from Redis without a POST",
    () =>
      Effect.gen(function*() {
        const { keyed, subscriber } = yield* openKeyedInternal(freshPrefix("pool"))
        yield* acrossExpiries({ keyed, following: () => subscriber.channels() > 0 })
      }),
    60_000
  )
})

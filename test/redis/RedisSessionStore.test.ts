/**
 * RedisSessionStore against a real redis-server: the store contract, the
 * record as Redis holds it, the lease lock (acquire, release, expiry,
 * renewal, timeout) and fenced writes against a holder that outlived its
 * lease.
 */
import { describe, expect, inject, it } from "@effect/vitest"
import { Clock, Deferred, Effect, Fiber, Option, Schedule, Schema, Stream } from "effect"
import { SessionStore } from "moon-refresh"
import { storeContract } from "../support/StoreContract.js"
import { freshKey, openStore, rawClient, session, tokenOf } from "./helpers.js"

const url = inject("redisUrl")

storeContract(
  "RedisSessionStore",
  Effect.sync(() => {
    const key = freshKey("contract")
    return { open: openStore(url, { key }) }
  }),
  { feedWithin: "5 seconds" }
)

describe("RedisSessionStore: the record", () => {
  it.live("is SessionStore.StoredJson under the key, and every write is published on key:changes", () =>
    Effect.gen(function*() {
      const key = freshKey("record")
      const store = yield* openStore(url, { key })
      const raw = yield* rawClient(url)
      const listener = yield* Effect.acquireRelease(
        Effect.sync(() => raw.duplicate()),
        (c) => Effect.sync(() => c.disconnect())
      )
      const published = yield* Deferred.make<string>()
      listener.on(
        "message",
        (_channel: string, message: string) => Deferred.doneUnsafe(published, Effect.succeed(message))
      )
      yield* Effect.promise(() => listener.subscribe(`${key}:changes`))

      yield* store.write(Option.some(session("1")), 0)
      const value = yield* Effect.promise(() => raw.get(key))
      const decoded = Schema.decodeSync(SessionStore.StoredJson)(value!)
      expect(decoded.revision).toBe(1)
      expect(tokenOf(decoded)).toBe("refresh-1")
      expect(yield* Deferred.await(published).pipe(Effect.timeout("5 seconds"))).toBe(value)
    }))

  it.live("a value that does not decode reads as a sign-out at the revision it names, and a write replaces it", () =>
    Effect.gen(function*() {
      const key = freshKey("corrupt")
      const raw = yield* rawClient(url)
      yield* Effect.promise(() => raw.set(key, JSON.stringify({ revision: 4, session: { access_token: 1 } })))
      const store = yield* openStore(url, { key })
      const stored = yield* store.read
      expect(stored.revision).toBe(4)
      expect(Option.isNone(stored.session)).toBe(true)
      expect((yield* store.write(Option.some(session("5")), 4)).revision).toBe(5)

      const garbage = freshKey("garbage")
      yield* Effect.promise(() => raw.set(garbage, "not json"))
      const other = yield* openStore(url, { key: garbage })
      expect((yield* other.read).revision).toBe(0)
      expect((yield* other.write(Option.some(session("1")), 0)).revision).toBe(1)
    }))
})

describe("RedisSessionStore: the change feed", () => {
  it.live("starts with the record as it is: a write made before a holder subscribed is not missed", () =>
    Effect.gen(function*() {
      const key = freshKey("feed-start")
      const [a, b] = [yield* openStore(url, { key }), yield* openStore(url, { key })]
      // Both subscribed (and so done with their first re-read) before the write.
      const raw = yield* rawClient(url)
      yield* Effect.promise(() => raw.pubsub("NUMSUB", `${key}:changes`)).pipe(
        Effect.filterOrFail((reply) => reply[1] === 2),
        Effect.retry(Schedule.spaced("20 millis")),
        Effect.timeout("5 seconds")
      )
      yield* Effect.sleep("100 millis")
      yield* a.write(Option.some(session("1")), 0)
      // Long enough for b to have heard of the write already, before anyone listens to its feed.
      yield* Effect.sleep("300 millis")
      const first = yield* Stream.runHead(b.changes).pipe(
        Effect.timeout("2 seconds"),
        Effect.orElseSucceed(Option.none)
      )
      expect(Option.map(first, (stored) => [stored.revision, tokenOf(stored)])).toStrictEqual(
        Option.some([1, "refresh-1"])
      )
    }))
})

describe("RedisSessionStore: the lock", () => {
  it.live("is key:lock holding the holder's token (host:pid:random) while held, and deleted on release", () =>
    Effect.gen(function*() {
      const key = freshKey("lock")
      const store = yield* openStore(url, { key, lease: "10 seconds" })
      const raw = yield* rawClient(url)
      const inside = yield* store.withLock(
        Effect.promise(() => Promise.all([raw.get(`${key}:lock`), raw.pttl(`${key}:lock`)]))
      )
      expect(inside[0]).toMatch(new RegExp(`:${process.pid}:[0-9a-z]+$`))
      // A lease of 10 s (how much of it was left when read depends on the machine).
      expect(inside[1]).toBeGreaterThan(0)
      expect(inside[1]).toBeLessThanOrEqual(10_000)
      expect(yield* Effect.promise(() => raw.exists(`${key}:lock`))).toBe(0)
    }))

  it.live("is released when the critical section fails, and the failure comes through", () =>
    Effect.gen(function*() {
      const key = freshKey("lock-fail")
      const store = yield* openStore(url, { key })
      const raw = yield* rawClient(url)
      const error = yield* Effect.flip(store.withLock(Effect.fail("boom" as const)))
      expect(error).toBe("boom")
      expect(yield* Effect.promise(() => raw.exists(`${key}:lock`))).toBe(0)
    }))

  it.live("is only deleted by its owner: a release after the lease passed to another holder leaves theirs", () =>
    Effect.gen(function*() {
      const key = freshKey("lock-owner")
      const store = yield* openStore(url, { key, lease: "10 seconds" })
      const raw = yield* rawClient(url)
      yield* store.withLock(
        // As if the lease ran out and another holder took the lock.
        Effect.promise(() => raw.set(`${key}:lock`, "other-holder", "PX", 10_000))
      )
      expect(yield* Effect.promise(() => raw.get(`${key}:lock`))).toBe("other-holder")
    }))

  it.live("withLease: ensure renews the lease, asks nearly the whole lease when more is asked for, and fails once the lock is another's", () =>
    Effect.gen(function*() {
      const key = freshKey("lock-lease")
      const store = yield* openStore(url, { key, lease: "10 seconds" })
      const raw = yield* rawClient(url)
      const outcomes = yield* store.withLease((lease) =>
        Effect.gen(function*() {
          yield* Effect.promise(() => raw.pexpire(`${key}:lock`, 3_000))
          yield* lease.ensure("9 seconds")
          const renewedTo = yield* Effect.promise(() => raw.pttl(`${key}:lock`))
          // More than the lease gives: 90% of its usable part is asked for, which a renewal gives.
          const tooLong = yield* Effect.result(lease.ensure("9600 millis"))
          // As if the lease ran out while the holder was frozen and another holder took the lock.
          yield* Effect.promise(() => raw.set(`${key}:lock`, "other-holder", "PX", 10_000))
          const lost = yield* Effect.flip(lease.ensure("1 second"))
          const again = yield* Effect.flip(lease.ensure("1 second"))
          return { renewedTo, tooLong: tooLong._tag, lost: lost.message, again: again.message }
        })
      )
      expect(outcomes.renewedTo).toBeGreaterThan(9_000)
      expect(outcomes.tooLong).toBe("Success")
      expect(outcomes.lost).toContain("no longer this holder's")
      expect(outcomes.again).toContain("no longer this holder's")
      // Its release left the other holder's lock alone.
      expect(yield* Effect.promise(() => raw.get(`${key}:lock`))).toBe("other-holder")
    }))

  it.live("left by a holder that died is taken over when its lease ends", () =>
    Effect.gen(function*() {
      const key = freshKey("lock-expiry")
      const store = yield* openStore(url, { key, lockTimeout: "10 seconds" })
      const raw = yield* rawClient(url)
      // Read before the lock is set: the lock cannot be taken over before this plus its 800 ms.
      const start = yield* Clock.currentTimeMillis
      yield* Effect.promise(() => raw.set(`${key}:lock`, "dead-holder", "PX", 800))
      yield* store.withLock(Effect.void)
      const waited = (yield* Clock.currentTimeMillis) - start
      // How soon after the lease is printed, not asserted (lockTimeout, 10 s, is the hang guard).
      console.log(`lock of a dead holder (lease 800 ms) taken over after ${waited} ms`)
      expect(waited).toBeGreaterThanOrEqual(800 - 1)
    }))

  it.live("is renewed while the critical section runs past the lease, so nobody else enters", () =>
    Effect.gen(function*() {
      const key = freshKey("lock-renew")
      const [a, b] = [
        yield* openStore(url, { key, lease: "600 millis", timeout: "300 millis" }),
        yield* openStore(url, { key })
      ]
      const order: Array<string> = []
      const inside = yield* Deferred.make<void>()
      const first = yield* Effect.forkChild(a.withLock(
        Effect.gen(function*() {
          yield* Deferred.succeed(inside, undefined)
          yield* Effect.sleep("2400 millis") // four leases
          order.push("a done")
        })
      ))
      yield* Deferred.await(inside)
      yield* b.withLock(Effect.sync(() => order.push("b in")))
      yield* Fiber.join(first)
      expect(order).toStrictEqual(["a done", "b in"])
    }))

  it.live("wakes a waiter as soon as the holder releases, not at the end of the lease", () =>
    Effect.gen(function*() {
      const key = freshKey("lock-wake")
      const [a, b] = [yield* openStore(url, { key, lease: "10 seconds" }), yield* openStore(url, { key })]
      const inside = yield* Deferred.make<void>()
      const release = yield* Deferred.make<void>()
      const first = yield* Effect.forkChild(
        a.withLock(Effect.andThen(Deferred.succeed(inside, undefined), Deferred.await(release)))
      )
      yield* Deferred.await(inside)
      // Let b try once and start waiting.
      const second = yield* Effect.forkChild(b.withLock(Clock.currentTimeMillis))
      yield* Effect.sleep("200 millis")
      const released = yield* Clock.currentTimeMillis
      yield* Deferred.succeed(release, undefined)
      yield* Fiber.join(first)
      const entered = yield* Fiber.join(second)
      console.log(`a waiter entered ${entered - released} ms after the release`)
      // Long before the 10 s lease would have ended (how long is printed; half the lease is the bound).
      expect(entered - released).toBeLessThan(5_000)
    }))

  it.live("fails with a StoreError after lockTimeout when another holder keeps it", () =>
    Effect.gen(function*() {
      const key = freshKey("lock-timeout")
      const store = yield* openStore(url, { key, lockTimeout: "500 millis" })
      const raw = yield* rawClient(url)
      yield* Effect.promise(() => raw.set(`${key}:lock`, "busy-holder", "PX", 30_000))
      let entered = false
      const start = yield* Clock.currentTimeMillis
      const error = yield* Effect.flip(store.withLock(Effect.sync(() => {
        entered = true
      })))
      const waited = (yield* Clock.currentTimeMillis) - start
      expect(error).toMatchObject({ _tag: "StoreError", operation: "lock" })
      expect(error.message).toContain("500ms")
      expect(entered).toBe(false)
      // Not before lockTimeout; long before the 30 s the other holder keeps it (a hang guard).
      expect(waited).toBeGreaterThanOrEqual(499)
      expect(waited).toBeLessThan(10_000)
      expect(yield* Effect.promise(() => raw.get(`${key}:lock`))).toBe("busy-holder")
    }))
})

describe("RedisSessionStore: fencing", () => {
  // The holder's lock is deleted behind its back, as its lease would end
  // while it stalls (a GC pause, a frozen VM): it still believes it holds it.
  const stalledHolder = (signOut: boolean) =>
    Effect.gen(function*() {
      const key = freshKey("fence")
      const [a, b] = [yield* openStore(url, { key, lease: "10 seconds" }), yield* openStore(url, { key })]
      const raw = yield* rawClient(url)
      yield* a.write(Option.some(session("1")), 0)
      const read = yield* Deferred.make<number>()
      const resume = yield* Deferred.make<void>()
      const stale = yield* Effect.forkChild(a.withLock(
        Effect.gen(function*() {
          const stored = yield* a.read
          yield* Deferred.succeed(read, stored.revision)
          yield* Deferred.await(resume)
          return yield* Effect.result(a.write(Option.some(session("stale")), stored.revision))
        })
      ))
      expect(yield* Deferred.await(read)).toBe(1)
      yield* Effect.promise(() => raw.del(`${key}:lock`))
      // The next holder takes over and writes a newer session, or signs out.
      yield* b.withLock(
        Effect.flatMap(
          b.read,
          (stored) => b.write(signOut ? Option.none() : Option.some(session("2")), stored.revision)
        )
      )
      yield* Deferred.succeed(resume, undefined)
      const result = yield* Fiber.join(stale)
      expect(result._tag).toBe("Failure")
      expect(result._tag === "Failure" && result.failure).toMatchObject({
        _tag: "StoreConflictError",
        expected: 1,
        actual: 2
      })
      return yield* b.read
    })

  it.live("a holder that stalled past its lease cannot overwrite the newer session", () =>
    Effect.gen(function*() {
      const stored = yield* stalledHolder(false)
      expect(stored.revision).toBe(2)
      expect(tokenOf(stored)).toBe("refresh-2")
    }))

  it.live("a holder that stalled past its lease cannot undo a sign-out", () =>
    Effect.gen(function*() {
      const stored = yield* stalledHolder(true)
      expect(stored.revision).toBe(2)
      expect(tokenOf(stored)).toBe("none")
    }))
})

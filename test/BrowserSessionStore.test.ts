/**
 * `BrowserSessionStore` in Node, on a fake origin (test/support/FakeBrowser.ts):
 * the store contract, the lock's bound and takeover under `TestClock`, and
 * the feed. The same store runs in Chromium in test/browser/.
 */
import { describe, expect, it } from "@effect/vitest"
import type { Scope } from "effect"
import { Deferred, Effect, Fiber, Option, Redacted, Result, Stream } from "effect"
import { TestClock } from "effect/testing"
import type { SessionStore } from "moon-refresh"
import { BrowserSessionStore } from "moon-refresh/browser"
import * as Internal from "../src/browser/internal/browserStore.js"
import { defectOf, failureOf } from "./support/Exits.js"
import { FakeBrowser } from "./support/FakeBrowser.js"
import { session, storeContract } from "./support/StoreContract.js"

const key = "moon-session"
const lockName = `moon-refresh/moon-refresh/${key}`

const settings = (options: Partial<BrowserSessionStore.Options> = {}) =>
  Result.getOrThrow(Internal.settings({ key, ...options }))

/** A store in a new tab of `browser`. */
const openTab = (
  browser: FakeBrowser,
  options: Partial<BrowserSessionStore.Options> = {}
): Effect.Effect<{ readonly store: SessionStore.Service; readonly clientId: string }, never, Scope.Scope> => {
  const tab = browser.tab()
  return Effect.map(Internal.make(tab.platform, settings(options)), (store) => ({ store, clientId: tab.clientId }))
}

// The fakes answer through promises and microtasks, outside the fibers'
// scheduler: let them run until `done()` (bounded, so a bug fails fast).
const until = (done: () => boolean, what: string) =>
  Effect.gen(function*() {
    for (let turn = 0; turn < 500; turn++) {
      if (done()) return
      yield* Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))
    }
    return yield* Effect.die(new Error(`never happened: ${what}`))
  })

const settle = Effect.forEach(
  Array.from({ length: 20 }),
  () => Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve))),
  { discard: true }
)

const tokenOf = (stored: SessionStore.Stored) =>
  Option.match(stored.session, { onNone: () => "none", onSome: (s) => Redacted.value(s.refreshToken) })

storeContract(
  "BrowserSessionStore (fake origin in Node)",
  Effect.sync(() => {
    const browser = new FakeBrowser()
    return { open: Effect.map(openTab(browser), ({ store }) => store) }
  }),
  { feedWithin: "1 second" }
)

describe("BrowserSessionStore: construction", () => {
  it.effect("fails with BrowserStoreUnavailableError naming Web Locks where they are missing (in Node)", () =>
    Effect.gen(function*() {
      const error = failureOf(yield* Effect.exit(BrowserSessionStore.make({ key })))
      expect(error).toBeInstanceOf(BrowserSessionStore.BrowserStoreUnavailableError)
      expect(error.missing).toBe("navigator.locks")
      expect(error.message).toContain("secure contexts")
    }))

  it.effect("names IndexedDB when only it is missing", () =>
    Effect.gen(function*() {
      const browser = new FakeBrowser()
      const globals = globalThis as { navigator?: unknown }
      const saved = Object.getOwnPropertyDescriptor(globalThis, "navigator")
      Object.defineProperty(globalThis, "navigator", {
        value: { locks: browser.tab().platform.locks },
        configurable: true
      })
      const exit = yield* Effect.exit(BrowserSessionStore.make({ key })).pipe(
        Effect.ensuring(Effect.sync(() => {
          if (saved === undefined) delete globals.navigator
          else Object.defineProperty(globalThis, "navigator", saved)
        }))
      )
      expect(failureOf(exit).missing).toBe("indexedDB")
    }))

  it.effect("dies on an empty key or a maxHold that is not a positive duration", () =>
    Effect.gen(function*() {
      expect(defectOf(yield* Effect.exit(BrowserSessionStore.make({ key: "" })))).toContain(
        `BrowserSessionStore: option "key" must be a non-empty string`
      )
      expect(defectOf(yield* Effect.exit(BrowserSessionStore.make({ key, maxHold: "-1 seconds" })))).toContain(
        `BrowserSessionStore: option "maxHold" must be a positive, finite duration`
      )
    }))

  it.effect("is a shared store: managers spread their refreshes", () =>
    Effect.scoped(Effect.gen(function*() {
      const { store } = yield* openTab(new FakeBrowser())
      expect(store.shared).toBe(true)
    })))
})

/**
 * A tab frozen inside the lock, over a record at revision 1: nothing can
 * interrupt it, so it never lets go by itself. `thaw` lets it go on to write
 * over revision 1 and gives what that write did.
 */
const stuckHolder = (browser: FakeBrowser, store: SessionStore.Service) =>
  Effect.gen(function*() {
    yield* store.write(Option.some(session("1")), 0)
    const thawed = yield* Deferred.make<void>()
    let late: Result.Result<SessionStore.Stored, unknown> | undefined
    yield* Effect.forkChild(store.withLock(Effect.uninterruptible(Effect.andThen(
      Deferred.await(thawed),
      Effect.flatMap(Effect.result(store.write(Option.some(session("stale")), 1)), (result) =>
        Effect.sync(() => {
          late = result
        }))
    ))))
    yield* until(() => browser.locks.held.has(lockName), "the stuck tab holds the lock")
    return {
      thaw: Effect.andThen(
        Deferred.succeed(thawed, undefined),
        Effect.map(until(() => late !== undefined, "the stuck tab tries to write"), () => late!)
      )
    }
  })

/** Three tabs of one origin; the first holds the lock until `release` (which waits for it to let go). */
const heldByFirstOfThree = Effect.gen(function*() {
  const browser = new FakeBrowser()
  const [a, b, c] = [yield* openTab(browser), yield* openTab(browser), yield* openTab(browser)]
  const released = yield* Deferred.make<void>()
  const holder = yield* Effect.forkChild(a.store.withLock(Deferred.await(released)))
  yield* until(() => browser.locks.held.has(lockName), "the first tab holds the lock")
  return { browser, b, c, release: Effect.andThen(Deferred.succeed(released, undefined), Fiber.join(holder)) }
})

const waiting = (browser: FakeBrowser, count: number) =>
  until(() => (browser.locks.queues.get(lockName)?.length ?? 0) === count, `${count} waiting for the lock`)

describe("BrowserSessionStore: the lock's bound and takeover", () => {
  it.effect("a holder keeps the lock at most maxHold: then its critical section is interrupted and the lock released", () =>
    Effect.gen(function*() {
      const browser = new FakeBrowser()
      const [a, b] = [yield* openTab(browser), yield* openTab(browser)]
      let interrupted = false
      const holder = yield* Effect.forkChild(a.store.withLock(Effect.onInterrupt(Effect.never, () =>
        Effect.sync(() => {
          interrupted = true
        }))))
      yield* until(() => browser.locks.held.has(lockName), "the lock is granted")
      yield* TestClock.adjust("14 seconds")
      yield* settle
      expect(interrupted).toBe(false)
      yield* TestClock.adjust("1 second")
      const error = failureOf(yield* Fiber.await(holder))
      expect(error).toMatchObject({ _tag: "StoreError", operation: "lock" })
      expect(error.message).toContain("longer than its bound")
      expect(interrupted).toBe(true)
      expect(browser.locks.held.has(lockName)).toBe(false)
      expect(yield* b.store.withLock(Effect.succeed("b got it"))).toBe("b got it")
      expect(browser.locks.steals).toBe(0)
    }))

  it.effect("a waiter takes over from a holder stuck past maxHold + 1 s, and the stuck holder's write is refused", () =>
    Effect.gen(function*() {
      const browser = new FakeBrowser()
      const [a, b] = [yield* openTab(browser), yield* openTab(browser)]
      const stuck = yield* stuckHolder(browser, a.store)
      const stealer = yield* Effect.forkChild(b.store.withLock(
        Effect.flatMap(b.store.read, (stored) => b.store.write(Option.some(session("2")), stored.revision))
      ))
      yield* waiting(browser, 1)
      yield* TestClock.adjust("15 seconds")
      yield* settle
      expect(stealer.pollUnsafe()).toBeUndefined()
      yield* TestClock.adjust("1 second")
      yield* until(() => browser.locks.steals === 1, "b takes over")
      const written = yield* Fiber.join(stealer)
      expect(written.revision).toBe(2)
      const late = yield* stuck.thaw
      expect(Result.getFailure(late).pipe(Option.getOrThrow)).toMatchObject({ _tag: "StoreConflictError" })
      expect(tokenOf(yield* b.store.read)).toBe("refresh-2")
    }))

  it.effect("the stuck holder's write is refused even when nobody wrote since (the lock, not the revision, says no)", () =>
    Effect.gen(function*() {
      const browser = new FakeBrowser()
      const [a, b] = [yield* openTab(browser), yield* openTab(browser)]
      const stuck = yield* stuckHolder(browser, a.store)
      const taken = yield* Deferred.make<void>()
      const release = yield* Deferred.make<void>()
      yield* Effect.forkChild(
        b.store.withLock(Effect.andThen(Deferred.succeed(taken, undefined), Deferred.await(release)))
      )
      yield* waiting(browser, 1)
      yield* TestClock.adjust("16 seconds")
      yield* Deferred.await(taken)
      const late = yield* stuck.thaw
      expect(Result.getFailure(late).pipe(Option.getOrThrow)).toMatchObject({
        _tag: "StoreConflictError",
        message: "another tab took over the lock while this one held it; nothing written"
      })
      expect((yield* b.store.read).revision).toBe(1)
      yield* Deferred.succeed(release, undefined)
    }))

  it.effect("waiters behind holders that keep their bound wait their turn and steal nothing", () =>
    Effect.gen(function*() {
      const browser = new FakeBrowser()
      const [a, b, c] = [yield* openTab(browser), yield* openTab(browser), yield* openTab(browser)]
      const order: Array<string> = []
      const hold = (name: string) =>
        Effect.andThen(
          Effect.sync(() => {
            order.push(name)
          }),
          Effect.sleep("10 seconds")
        )
      const fa = yield* Effect.forkChild(a.store.withLock(hold("a")))
      yield* until(() => order.length === 1, "a holds")
      const fb = yield* Effect.forkChild(b.store.withLock(hold("b")))
      yield* waiting(browser, 1)
      const fc = yield* Effect.forkChild(c.store.withLock(hold("c")))
      yield* waiting(browser, 2)
      // 10 s each: c waits 20 s in all, past its 16 s of patience, but the lock moved on meanwhile.
      for (let second = 0; second < 30; second++) {
        yield* TestClock.adjust("1 second")
        yield* settle
      }
      yield* Fiber.joinAll([fa, fb, fc])
      expect(order).toStrictEqual(["a", "b", "c"])
      expect(browser.locks.steals).toBe(0)
    }))

  it.effect("a manager torn down while it waits withdraws its request (a Strict Mode double mount leaves no lock behind)", () =>
    Effect.gen(function*() {
      const { b, browser, c, release } = yield* heldByFirstOfThree
      const mounted = yield* Effect.forkChild(b.store.withLock(Effect.succeed("never")))
      yield* waiting(browser, 1)
      yield* Fiber.interrupt(mounted)
      expect(browser.locks.queues.get(lockName)).toStrictEqual([])
      yield* release
      expect(yield* c.store.withLock(Effect.succeed("c got it"))).toBe("c got it")
      yield* until(() => browser.locks.held.size === 0, "c lets go")
    }))

  it.effect("a grant that reaches a manager already torn down is released at once", () =>
    Effect.gen(function*() {
      const { b, browser, c, release } = yield* heldByFirstOfThree
      let ran = false
      const mounted = yield* Effect.forkChild(b.store.withLock(Effect.sync(() => {
        ran = true
      })))
      yield* waiting(browser, 1)
      // The grant is on its way to b when b is torn down: aborting can no longer withdraw it.
      let open = () => {}
      browser.locks.hold = new Promise<void>((resolve) => {
        open = resolve
      })
      yield* release
      yield* until(() => browser.locks.held.get(lockName)?.clientId === b.clientId, "the lock goes to b")
      yield* Fiber.interrupt(mounted)
      browser.locks.hold = undefined
      open()
      yield* until(() => !browser.locks.held.has(lockName), "b lets go of the late grant")
      expect(ran).toBe(false)
      expect(yield* c.store.withLock(Effect.succeed("c got it"))).toBe("c got it")
    }))

  it.effect("a lock the browser refuses fails with a StoreError and runs nothing", () =>
    Effect.gen(function*() {
      const { platform } = new FakeBrowser().tab()
      const refusing: typeof platform.locks = {
        request: (() => Promise.reject(new DOMException("The request was denied.", "SecurityError"))) as any,
        query: platform.locks.query
      }
      const store = yield* Internal.make({ ...platform, locks: refusing }, settings())
      let ran = false
      const error = yield* Effect.flip(store.withLock(Effect.sync(() => {
        ran = true
      })))
      expect(error).toMatchObject({ _tag: "StoreError", operation: "lock" })
      expect(error.message).toBe("the browser refused the lock: SecurityError: The request was denied.")
      expect(ran).toBe(false)
    }))

  it.effect("a holder whose lock is stolen has its critical section interrupted", () =>
    Effect.gen(function*() {
      const browser = new FakeBrowser()
      const a = yield* openTab(browser)
      let interrupted = false
      const holder = yield* Effect.forkChild(a.store.withLock(Effect.onInterrupt(Effect.never, () =>
        Effect.sync(() => {
          interrupted = true
        }))))
      yield* until(() => browser.locks.held.has(lockName), "a holds")
      yield* Effect.promise(() => browser.tab().platform.locks.request(lockName, { steal: true }, () => undefined))
      const error = failureOf(yield* Fiber.await(holder))
      expect(error).toMatchObject({ _tag: "StoreError", operation: "lock" })
      expect(error.message).toContain("another tab took over")
      expect(interrupted).toBe(true)
    }))
})

describe("BrowserSessionStore: the lease", () => {
  it.effect("ensure succeeds while the hold is the tab's with enough of its bound left (half of it when more than the bound is asked for), and fails after a steal", () =>
    Effect.gen(function*() {
      const browser = new FakeBrowser()
      const a = yield* openTab(browser, { maxHold: "30 seconds" })
      const outcomes: Array<string> = []
      const check = (lease: SessionStore.Lease, atLeast: `${number} seconds` | `${number} second`) =>
        Effect.result(lease.ensure(atLeast)).pipe(
          Effect.map((result) =>
            outcomes.push(`${atLeast}: ${result._tag === "Success" ? "ok" : result.failure.message}`)
          )
        )
      const checked = yield* Deferred.make<void>()
      const stolen = yield* Deferred.make<void>()
      const holder = yield* Effect.forkChild(a.store.withLease((lease) =>
        Effect.gen(function*() {
          yield* check(lease, "29 seconds")
          yield* check(lease, "31 seconds")
          yield* TestClock.adjust("20 seconds")
          yield* check(lease, "11 seconds")
          yield* check(lease, "10 seconds")
          yield* Deferred.succeed(checked, undefined)
          yield* Deferred.await(stolen)
          yield* settle
          yield* check(lease, "1 second")
        }).pipe(Effect.uninterruptible)
      ))
      yield* Deferred.await(checked)
      yield* Effect.promise(() => browser.tab().platform.locks.request(lockName, { steal: true }, () => undefined))
      yield* Deferred.succeed(stolen, undefined)
      expect(failureOf(yield* Fiber.await(holder))).toMatchObject({ _tag: "StoreError", operation: "lock" })
      expect(outcomes).toStrictEqual([
        "29 seconds: ok",
        // More than the bound: half of it is asked for.
        "31 seconds: ok",
        `11 seconds: the lock "${lockName}" has 10000 ms of its bound left, not 11000 ms`,
        "10 seconds: ok",
        `1 second: the lock "${lockName}" is no longer this tab's`
      ])
    }))
})

describe("BrowserSessionStore: the change feed", () => {
  /** Records `store`'s feed into an array, from now until the scope closes. */
  const recordFeed = (store: SessionStore.Service) =>
    Effect.gen(function*() {
      const seen: Array<SessionStore.Stored> = []
      yield* Effect.forkScoped(Stream.runForEach(store.changes, (stored) =>
        Effect.sync(() => {
          seen.push(stored)
        })))
      // The subscription opens its channel when the stream starts.
      yield* settle
      return seen
    })

  it.effect("a page shown again reads the record again, so a write it missed meanwhile still reaches it", () =>
    Effect.gen(function*() {
      const browser = new FakeBrowser()
      const [a, b] = [yield* openTab(browser), yield* openTab(browser)]
      const seen = yield* recordFeed(b.store)
      browser.dropMessages = true
      yield* a.store.write(Option.some(session("1")), 0)
      yield* settle
      expect(seen).toStrictEqual([])
      browser.resume(b.clientId)
      yield* until(() => seen.length === 1, "b reads again")
      expect(tokenOf(seen[0]!)).toBe("refresh-1")
    }))

  it.effect("a sign-out in one tab reaches the other tab's feed as a record without a session", () =>
    Effect.gen(function*() {
      const browser = new FakeBrowser()
      const [a, b] = [yield* openTab(browser), yield* openTab(browser)]
      yield* a.store.write(Option.some(session("1")), 0)
      const seen = yield* recordFeed(b.store)
      yield* a.store.clear
      yield* until(() => seen.length === 1, "b sees the sign-out")
      expect(seen[0]!.revision).toBe(2)
      expect(Option.isNone(seen[0]!.session)).toBe(true)
    }))

  it.effect("a write announced twice (message, then the page shown again) is seen once", () =>
    Effect.gen(function*() {
      const browser = new FakeBrowser()
      const [a, b] = [yield* openTab(browser), yield* openTab(browser)]
      const seen = yield* recordFeed(b.store)
      yield* a.store.write(Option.some(session("1")), 0)
      yield* until(() => seen.length === 1, "b sees the write")
      browser.resume(b.clientId)
      yield* settle
      expect(seen.map((stored) => stored.revision)).toStrictEqual([1])
    }))
})

describe("BrowserSessionStore: the record", () => {
  it.live("a record that does not decode reads as no session at its revision, and the next write replaces it", () =>
    Effect.scoped(Effect.gen(function*() {
      const browser = new FakeBrowser()
      const { store } = yield* openTab(browser)
      yield* store.write(Option.some(session("1")), 0)
      // Another version of the app wrote something else under the key.
      yield* Effect.promise(() =>
        new Promise<void>((resolve, reject) => {
          const request = browser.indexedDB.open("moon-refresh", 1)
          request.onsuccess = () => {
            const tx = request.result.transaction("sessions", "readwrite")
            tx.objectStore("sessions").put({ revision: 4, session: { accessToken: 42 } }, key)
            tx.oncomplete = () => {
              request.result.close()
              resolve()
            }
            tx.onerror = () => reject(tx.error)
          }
        })
      )
      const stored = yield* store.read
      expect(stored.revision).toBe(4)
      expect(Option.isNone(stored.session)).toBe(true)
      expect((yield* store.write(Option.some(session("5")), 4)).revision).toBe(5)
      expect(tokenOf(yield* store.read)).toBe("refresh-5")
    })))

  it.live("stores the record as StoredSchema encodes it: revision, then the session with its tokens in clear", () =>
    Effect.scoped(Effect.gen(function*() {
      const browser = new FakeBrowser()
      const { store } = yield* openTab(browser)
      yield* store.write(Option.some(session("1")), 0)
      const raw = yield* Effect.promise(() =>
        new Promise<unknown>((resolve) => {
          const request = browser.indexedDB.open("moon-refresh", 1)
          request.onsuccess = () => {
            const get = request.result.transaction("sessions").objectStore("sessions").get(key)
            get.onsuccess = () => {
              request.result.close()
              resolve(get.result)
            }
          }
        })
      )
      expect(raw).toMatchObject({ revision: 1, session: { refreshToken: "refresh-1", accessToken: "access-1" } })
    })))
})

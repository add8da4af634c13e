/**
 * The file lock (src/node/internal/fileLock.ts, protocol in fileLease.ts): its
 * rules as pure functions, then the lock on real files with the monotonic
 * clock driven by `TestClock`, each waiter's attempt made by hand (no
 * polling), so nothing depends on the machine's speed. A lease of a minute
 * keeps the real-time renewals (every 20 s) out of these short tests: a
 * holder renews when a test says so (`ensure`).
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Exit, Option, Result, Scope } from "effect"
import { TestClock } from "effect/testing"
import { NodeSessionStore } from "moon-refresh/node"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as FileLease from "../src/node/internal/fileLease.js"
import * as FileLock from "../src/node/internal/fileLock.js"
import { session } from "./support/StoreContract.js"

const lease = 60_000

const entry = (gen: number, beat: number, state: "held" | "done" = "held"): FileLease.Entry => ({
  gen,
  text: FileLease.text("owner", beat, state)
})

describe("the lock's rules", () => {
  it("an entry is stale only once its text has not changed for a whole lease of the waiter's watching", () => {
    const first = FileLease.observe(new Map(), [entry(1, 0)], 1_000)
    expect(FileLease.isFree([entry(1, 0)], first, 1_000 + lease - 1, lease)).toBe(false)
    expect(FileLease.isFree([entry(1, 0)], first, 1_000 + lease, lease)).toBe(true)
    // A renewal seen restarts the count.
    const renewed = FileLease.observe(first, [entry(1, 1)], 30_000)
    expect(FileLease.isFree([entry(1, 1)], renewed, 1_000 + lease, lease)).toBe(false)
    expect(FileLease.isFree([entry(1, 1)], renewed, 30_000 + lease, lease)).toBe(true)
    // An entry seen for the first time is never stale, whatever the time.
    expect(FileLease.isFree([entry(2, 0)], renewed, Number.MAX_SAFE_INTEGER, lease)).toBe(false)
  })

  it("a released entry is gone at once; the next generation follows the highest", () => {
    expect(FileLease.isFree([entry(1, 5, "done"), entry(2, 0, "done")], new Map(), 0, lease)).toBe(true)
    expect(FileLease.nextGen([entry(3, 0), entry(7, 0, "done")])).toBe(8)
    expect(FileLease.nextGen([])).toBe(1)
  })

  it("a waiter that created its entry withdraws when an entry below changed since it judged it, or one above is live", () => {
    const seen = FileLease.observe(new Map(), [entry(1, 4)], 0)
    const own = FileLease.text("me", 0, "held")
    const mine = { gen: 2, text: own }
    expect(FileLease.mayEnter(2, own, [entry(1, 4), mine], seen, lease, lease)).toBe(true)
    // The holder renewed between the waiter's listing and its creation.
    expect(FileLease.mayEnter(2, own, [entry(1, 5), mine], seen, lease, lease)).toBe(false)
    expect(FileLease.mayEnter(2, own, [entry(1, 4), mine, entry(3, 0)], seen, lease, lease)).toBe(false)
    expect(FileLease.mayEnter(2, own, [entry(1, 4), mine, entry(3, 0, "done")], seen, lease, lease)).toBe(true)
    // Its own entry replaced (or removed): not its lock.
    expect(
      FileLease.mayEnter(
        2,
        own,
        [entry(1, 4), { gen: 2, text: FileLease.text("other", 0, "held") }],
        seen,
        lease,
        lease
      )
    )
      .toBe(false)
  })

  it("an entry's text keeps its length whatever the count, so it is rewritten in place", () => {
    expect(FileLease.text("abc", 0, "held").length).toBe(FileLease.text("abc", 999_999_999_999, "done").length)
    expect(FileLease.isDone(FileLease.text("abc", 3, "done"))).toBe(true)
    expect(FileLease.isDone(FileLease.text("abc", 3, "held"))).toBe(false)
  })
})

const lockFile = Effect.acquireRelease(
  Effect.sync(() => Fs.mkdtempSync(Path.join(Os.tmpdir(), "moon-file-lock-"))),
  (dir) => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true }))
).pipe(Effect.map((dir) => Path.join(dir, "session.json")))

const optionsFor = (file: string): FileLock.LockOptions => ({
  file,
  lease: Duration.millis(lease),
  timeout: Duration.seconds(1)
})

/** One hand-made attempt in a scope of its own: the holding and the scope that releases it, or `Busy`. */
const attemptOnce = (options: FileLock.LockOptions, watch: FileLock.Watch) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const result = yield* Effect.result(Scope.provide(FileLock.attempt(options, watch), scope))
    if (Result.isFailure(result)) yield* Scope.close(scope, Exit.void)
    return Result.map(result, (holding) => ({ holding, release: Scope.close(scope, Exit.void) }))
  })

const entriesOf = (file: string) => Effect.promise(() => FileLease.list(`${file}.lock`))

/** Moves every time of the lock directory and its entries `seconds` into the past. */
const moveTimesBack = (file: string, seconds: number) =>
  Effect.sync(() => {
    const dir = `${file}.lock`
    const back = Date.now() / 1000 - seconds
    for (const name of Fs.readdirSync(dir)) Fs.utimesSync(Path.join(dir, name), back, back)
    Fs.utimesSync(dir, back, back)
  })

/** A holder `a` that renewed nothing for a lease, and `b` that took the lock over from it. */
const takenOver = Effect.gen(function*() {
  const options = optionsFor(yield* lockFile)
  const a = Result.getOrThrow(yield* attemptOnce(options, FileLock.newWatch()))
  const watch = FileLock.newWatch()
  yield* attemptOnce(options, watch)
  yield* TestClock.adjust(lease)
  const b = Result.getOrThrow(yield* attemptOnce(options, watch))
  return { a, b, options }
})

const isBusy = <A>(result: Result.Result<A, FileLock.Busy | unknown>) =>
  Result.isFailure(result) && result.failure instanceof FileLock.Busy

describe("the file lock", () => {
  it.effect("is taken by one holder at a time; a release lets the next in at once", () =>
    Effect.gen(function*() {
      const options = optionsFor(yield* lockFile)
      const a = yield* attemptOnce(options, FileLock.newWatch())
      expect(Result.isSuccess(a)).toBe(true)
      const watch = FileLock.newWatch()
      expect(isBusy(yield* attemptOnce(options, watch))).toBe(true)
      yield* Result.getOrThrow(a).release
      const b = yield* attemptOnce(options, watch)
      expect(Result.isSuccess(b)).toBe(true)
      yield* Result.getOrThrow(b).release
      // A quiet lock leaves nothing behind.
      expect(Fs.existsSync(`${options.file}.lock`)).toBe(false)
    }))

  it.effect("a holder that stops renewing is taken over after a lease of the waiter's watching; its ensure then fails", () =>
    Effect.gen(function*() {
      const options = optionsFor(yield* lockFile)
      const a = Result.getOrThrow(yield* attemptOnce(options, FileLock.newWatch()))
      yield* a.holding.ensure("10 seconds")
      const watch = FileLock.newWatch()
      expect(isBusy(yield* attemptOnce(options, watch))).toBe(true)
      yield* TestClock.adjust(lease - 1)
      expect(isBusy(yield* attemptOnce(options, watch))).toBe(true)
      yield* TestClock.adjust(1)
      const b = Result.getOrThrow(yield* attemptOnce(options, watch))
      const error = yield* Effect.flip(a.holding.ensure("1 second"))
      expect(error).toMatchObject({ _tag: "StoreError", operation: "lock" })
      expect(error.message).toContain("no longer this holder's")
      expect(a.holding.lost()).toBe(true)
      expect(yield* a.holding.stillHeld).toBe(false)
      // The new holder's lease is its own.
      yield* b.holding.ensure("10 seconds")
      expect(b.holding.lost()).toBe(false)
      yield* b.release
    }))

  it.effect("a release by a holder that lost the lock leaves the new holder's lock in place: no third gets in", () =>
    Effect.gen(function*() {
      const { a, b, options } = yield* takenOver
      const before = yield* entriesOf(options.file)
      // The frozen holder resumes and releases.
      yield* a.release
      expect(yield* entriesOf(options.file)).toStrictEqual(before)
      expect(before.map((e) => FileLease.isDone(e.text))).toStrictEqual([false])
      const third = FileLock.newWatch()
      expect(isBusy(yield* attemptOnce(options, third))).toBe(true)
      yield* TestClock.adjust(lease / 2)
      yield* b.holding.ensure("1 second")
      yield* TestClock.adjust(lease / 2)
      expect(isBusy(yield* attemptOnce(options, third))).toBe(true)
      yield* b.release
      expect(Result.isSuccess(yield* attemptOnce(options, third))).toBe(true)
    }))

  it.effect("renewal is the owner's only: a lost holder's renewal writes nothing, and cannot revive its lock", () =>
    Effect.gen(function*() {
      const { a, b, options } = yield* takenOver
      const before = yield* entriesOf(options.file)
      expect(Result.isFailure(yield* Effect.result(a.holding.ensure("1 second")))).toBe(true)
      expect(yield* entriesOf(options.file)).toStrictEqual(before)
      yield* b.release
    }))

  it.effect("the lock's times moved back 60 s do not make a live holder's lock stale", () =>
    Effect.gen(function*() {
      const options = optionsFor(yield* lockFile)
      const a = Result.getOrThrow(yield* attemptOnce(options, FileLock.newWatch()))
      const watch = FileLock.newWatch()
      for (let i = 0; i < 8; i++) {
        // What a clock step forward of a minute looks like to a lock judged by its times.
        yield* moveTimesBack(options.file, 60)
        expect(isBusy(yield* attemptOnce(options, watch))).toBe(true)
        yield* TestClock.adjust(lease / 2)
        yield* a.holding.ensure("10 seconds")
      }
      // Four leases have passed on the waiter's clock; the holder renewed every half lease.
      expect(a.holding.lost()).toBe(false)
      yield* a.release
    }))

  it.effect("ensure renews, and asks nearly the whole lease when more is asked for, without losing the lock", () =>
    Effect.gen(function*() {
      const options = optionsFor(yield* lockFile)
      const a = Result.getOrThrow(yield* attemptOnce(options, FileLock.newWatch()))
      const usable = lease - FileLock.marginOf(lease)
      const [before] = yield* entriesOf(options.file)
      yield* a.holding.ensure(Duration.millis(usable))
      const [after] = yield* entriesOf(options.file)
      expect(after!.text).not.toBe(before!.text)
      // More than the lease gives: 90% of its usable part is asked for, which a renewal gives.
      yield* a.holding.ensure(Duration.millis(usable + 1))
      expect(a.holding.lost()).toBe(false)
      // A renewal more than the usable lease after the one before: the holder counts itself out.
      yield* TestClock.adjust(usable)
      expect(Result.isFailure(yield* Effect.result(a.holding.ensure("1 second")))).toBe(true)
      expect(a.holding.lost()).toBe(true)
      yield* a.release
    }))
})

describe("NodeSessionStore.withLease", () => {
  it.effect("a holder frozen past its lease (the clock moved under it) writes nothing: its lease is lost", () =>
    Effect.gen(function*() {
      const path = yield* lockFile
      const store = yield* NodeSessionStore.make({ path, lease: "1 minute", pollInterval: "1 hour" })
      yield* store.save(session("1"))
      const error = yield* Effect.flip(store.withLease((held) =>
        Effect.gen(function*() {
          yield* held.ensure("10 seconds")
          yield* TestClock.adjust(lease)
          return yield* store.write(Option.some(session("2")), 1)
        })
      ))
      expect(error).toMatchObject({ _tag: "StoreError", operation: "save" })
      const stored = yield* store.read
      expect(stored.revision).toBe(1)
    }))
})

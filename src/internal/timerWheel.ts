/**
 * One timer for many sessions: a `SessionPool` arms each key's proactive
 * refresh here instead of sleeping in a fiber per key. A min-heap of due
 * times and one fiber that sleeps until the earliest; re-arming or clearing a
 * key leaves its old heap entry behind, skipped when it comes up (a version
 * number tells). Cost: one heap entry per armed key, no fiber.
 *
 * Not public API: the package's exports keep `internal/` private.
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Queue from "effect/Queue"
import * as Scope from "effect/Scope"

interface Slot {
  at: number
  run: Effect.Effect<void>
  version: number
}

interface Due {
  readonly at: number
  readonly key: string
  readonly version: number
}

/** A binary min-heap of due times. */
class Heap {
  private readonly items: Array<Due> = []
  get size(): number {
    return this.items.length
  }
  peek(): Due | undefined {
    return this.items[0]
  }
  push(item: Due): void {
    const items = this.items
    items.push(item)
    let i = items.length - 1
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (items[parent]!.at <= item.at) break
      items[i] = items[parent]!
      i = parent
    }
    items[i] = item
  }
  pop(): Due | undefined {
    const items = this.items
    const top = items[0]
    const last = items.pop()
    if (items.length > 0 && last !== undefined) {
      let i = 0
      for (;;) {
        const left = 2 * i + 1
        if (left >= items.length) break
        const right = left + 1
        const child = right < items.length && items[right]!.at < items[left]!.at ? right : left
        if (items[child]!.at >= last.at) break
        items[i] = items[child]!
        i = child
      }
      items[i] = last
    }
    return top
  }
}

/** A key's timer: `arm(at)` replaces the time armed before; `undefined` clears it. */
export interface Timer {
  readonly arm: (at: number | undefined) => void
}

export interface TimerWheel {
  /** The timer of one key, which runs `run` when it fires. */
  readonly timer: (key: string, run: Effect.Effect<void>) => Timer
  /** Keys armed now (for statistics). */
  readonly armed: () => number
}

/**
 * Starts the wheel's fiber in the scope. Due runs are forked in the scope,
 * so a slow refresh never delays the next key's.
 */
export const make: Effect.Effect<TimerWheel, never, Scope.Scope> = Effect.gen(function*() {
  const slots = new Map<string, Slot>()
  const heap = new Heap()
  const wake = yield* Queue.sliding<void>(1)
  // Due runs go to a scope of their own, closed after whatever the owner's scope
  // ran after making the wheel: a pool's closing still needs its timers (retrying
  // a save it owes), and a closing scope forks nothing more into itself.
  const scope = yield* Scope.fork(yield* Effect.scope)
  let version = 0

  const loop = Effect.gen(function*() {
    for (;;) {
      // Drop entries that were re-armed or cleared since they were pushed.
      let next = heap.peek()
      while (next !== undefined && slots.get(next.key)?.version !== next.version) {
        heap.pop()
        next = heap.peek()
      }
      const now = yield* Clock.currentTimeMillis
      if (next === undefined) {
        yield* Queue.take(wake)
        continue
      }
      if (next.at > now) {
        // Whole milliseconds: a sleep shorter than one may not move a clock that counts in them.
        yield* Effect.raceFirst(Effect.sleep(Duration.millis(Math.ceil(next.at - now))), Queue.take(wake))
        continue
      }
      heap.pop()
      const slot = slots.get(next.key)!
      slots.delete(next.key)
      yield* Effect.forkIn(slot.run, scope)
    }
  })
  yield* Effect.forkScoped(loop)

  return {
    timer: (key, run) => ({
      arm: (at) => {
        if (at === undefined) {
          slots.delete(key)
          return
        }
        const earliest = heap.peek()
        const slot = { at, run, version: ++version }
        slots.set(key, slot)
        heap.push({ at, key, version: slot.version })
        if (earliest === undefined || at < earliest.at) Queue.offerUnsafe(wake, undefined)
      }
    }),
    armed: () => slots.size
  }
})

/**
 * `locallyAll` (src/internal/locally.ts) does what nested `Effect.locally`
 * calls do: the values hold while the effect runs, in fibers it forks too,
 * and the previous values are back however it ends.
 */
import { describe, expect, it } from "@effect/vitest"
import { Context, Deferred, Effect, Fiber, FiberRef, Option } from "effect"
import { locallyAll } from "../src/internal/locally.js"

const level = FiberRef.unsafeMake("outer")
const count = FiberRef.unsafeMake(0)
class Service extends Context.Tag("test/Service")<Service, string>() {}

const read = Effect.all([FiberRef.get(level), FiberRef.get(count), Effect.serviceOption(Service)])

const inner = <A, E, R>(self: Effect.Effect<A, E, R>) =>
  locallyAll(
    self,
    (fiber) => [
      [level, "inner"],
      [count, fiber.getFiberRef(count) + 1],
      [FiberRef.currentContext, Context.add(fiber.currentContext, Service, "provided")]
    ]
  )

describe("locallyAll", () => {
  it.effect("sets every value while the effect runs, computed from the running fiber", () =>
    Effect.gen(function*() {
      yield* FiberRef.set(count, 41)
      const [seen, n, service] = yield* inner(read)
      expect(seen).toBe("inner")
      expect(n).toBe(42)
      expect(service).toEqual(Option.some("provided"))
    }))

  it.effect("puts the values back after a success, a failure and a defect", () =>
    Effect.gen(function*() {
      const outcomes = [Effect.succeed(1), Effect.fail("refused"), Effect.die("broken")] as const
      for (const outcome of outcomes) {
        yield* Effect.exit(inner(outcome))
        const [seen, n, service] = yield* read
        expect([seen, n, Option.isNone(service)]).toEqual(["outer", 0, true])
      }
    }))

  it.effect("a fiber forked inside inherits the values", () =>
    Effect.gen(function*() {
      const fiber = yield* inner(Effect.fork(read))
      const [seen, n, service] = yield* Fiber.join(fiber)
      expect([seen, n, service]).toEqual(["inner", 1, Option.some("provided")])
    }))

  it.effect("a change the effect makes to another FiberRef is kept, as with Effect.locally", () =>
    Effect.gen(function*() {
      const other = FiberRef.unsafeMake("before")
      yield* inner(FiberRef.set(other, "set inside"))
      expect(yield* FiberRef.get(other)).toBe("set inside")
    }))

  it.live("puts the values back when the effect is interrupted", () =>
    Effect.gen(function*() {
      const running = yield* Deferred.make<void>()
      const after = yield* Deferred.make<readonly [string, number]>()
      const fiber = yield* Effect.fork(
        Effect.ensuring(
          inner(Effect.zipRight(Deferred.succeed(running, undefined), Effect.never)),
          // What a finalizer of the caller sees: the values from before.
          Effect.flatMap(Effect.all([FiberRef.get(level), FiberRef.get(count)]), (values) =>
            Deferred.succeed(after, values))
        )
      )
      yield* Deferred.await(running)
      yield* Fiber.interrupt(fiber)
      expect(yield* Deferred.await(after)).toEqual(["outer", 0])
    }))
})

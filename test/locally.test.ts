/**
 * Effect 3's `locallyAll` (src/internal/locally.ts) did what nested
 * `Effect.locally` calls do: the values hold while the effect runs, in fibers
 * it forks too, and the previous values are back however it ends. Effect 4
 * has no `FiberRef`s: the values are context references and services, and
 * the attempt's are set by `timeoutFail`'s `context` option
 * (src/internal/attempt.ts), which replaced `locallyAll`. These tests hold it
 * to the same, on the live clock (where the attempt runs in a child fiber)
 * and under the TestClock (where it is `Effect.timeoutOrElse`).
 */
import { describe, expect, it } from "@effect/vitest"
import { Context, Deferred, Duration, Effect, Fiber, Option } from "effect"
import { timeoutFail } from "../src/internal/attempt.js"

const level = Context.Reference<string>("test/locally/level", { defaultValue: () => "outer" })
const count = Context.Reference<number>("test/locally/count", { defaultValue: () => 0 })
class Service extends Context.Service<Service, string>()("test/Service") {}

const read = Effect.all([level, count, Effect.serviceOption(Service)])

const inner = timeoutFail({
  duration: Duration.minutes(1),
  onTimeout: () => "timed out" as const,
  context: (context) =>
    context.pipe(
      Context.add(level, "inner"),
      Context.add(count, Context.get(context, count) + 1),
      Context.add(Service, "provided")
    )
})

for (const [clock, test] of [["the live clock", it.live], ["the TestClock", it.effect]] as const) {
  describe(`timeoutFail's context, on ${clock}`, () => {
    test("sets every value while the effect runs, computed from the caller's", () =>
      Effect.gen(function*() {
        const [seen, n, service] = yield* inner(read).pipe(Effect.provideService(count, 41))
        expect(seen).toBe("inner")
        expect(n).toBe(42)
        expect(service).toEqual(Option.some("provided"))
      }))

    test("puts the values back after a success, a failure and a defect", () =>
      Effect.gen(function*() {
        const outcomes = [Effect.succeed(1), Effect.fail("refused"), Effect.die("broken")] as const
        for (const outcome of outcomes) {
          yield* Effect.exit(inner(outcome))
          const [seen, n, service] = yield* read
          expect([seen, n, Option.isNone(service)]).toEqual(["outer", 0, true])
        }
      }))

    test("a fiber forked inside inherits the values", () =>
      Effect.gen(function*() {
        // Joined inside: the attempt's own fibers end with it.
        const [seen, n, service] = yield* inner(Effect.flatMap(Effect.forkChild(read), Fiber.join))
        expect([seen, n, service]).toEqual(["inner", 1, Option.some("provided")])
      }))

    // Effect 3: "a change the effect makes to another FiberRef is kept, as
    // with Effect.locally". Effect 4 has no `FiberRef.set`: a value is changed
    // for a region (`Effect.provideService`), never for the rest of a fiber,
    // so a change made inside ends where it would have ended anyway.
    test("a value the effect provides to its own region holds there, as with Effect.provideService", () =>
      Effect.gen(function*() {
        const other = Context.Reference<string>("test/locally/other", { defaultValue: () => "before" })
        const seen = yield* inner(Effect.provideService(Effect.all([other, level]), other, "set inside"))
        expect(seen).toStrictEqual(["set inside", "inner"])
        expect(yield* other).toBe("before")
      }))

    test("puts the values back when the effect is interrupted", () =>
      Effect.gen(function*() {
        const running = yield* Deferred.make<void>()
        const after = yield* Deferred.make<readonly [string, number]>()
        const fiber = yield* Effect.forkChild(
          Effect.ensuring(
            inner(Effect.andThen(Deferred.succeed(running, undefined), Effect.never)),
            // What a finalizer of the caller sees: the values from before.
            Effect.flatMap(Effect.all([level, count]), (values) => Deferred.succeed(after, values))
          )
        )
        yield* Deferred.await(running)
        yield* Fiber.interrupt(fiber)
        expect(yield* Deferred.await(after)).toEqual(["outer", 0])
      }))
  })
}

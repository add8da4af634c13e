/**
 * `Effect.locally` for several `FiberRef`s at once. Not public API.
 */
import { Effect, Exit, type Fiber, type FiberId, type FiberRef, FiberRefs } from "effect"

/** A `FiberRef` and the value it takes while the effect runs. */
export type Entry = readonly [FiberRef.FiberRef<any>, unknown]

type Stacked = readonly [FiberRef.FiberRef<any>, readonly [readonly [FiberId.Single, unknown]]]
type Entries = readonly [Stacked, ...Array<Stacked>]

/**
 * The one method of Effect's fiber runtime this needs. Every fiber Effect 3
 * runs has it, but the public `RuntimeFiber` type does not list it; the
 * public `Effect.setFiberRefs` sets each ref of the whole collection one by
 * one, which costs more than what it would save here.
 */
interface Settable {
  setFiberRefs(fiberRefs: FiberRefs.FiberRefs): void
}

const isSettable = (
  fiber: Fiber.RuntimeFiber<unknown, unknown>
): fiber is Fiber.RuntimeFiber<unknown, unknown> & Settable =>
  typeof (fiber as Partial<Settable>).setFiberRefs === "function"

/** Sets `values` on `fiber` as its own, with one copy of its refs. */
const put = (fiber: Fiber.RuntimeFiber<unknown, unknown> & Settable, values: ReadonlyArray<Entry>): void => {
  const id = fiber.id()
  fiber.setFiberRefs(FiberRefs.updateManyAs(fiber.getFiberRefs(), {
    entries: values.map(([ref, value]): Stacked => [ref, [[id, value]]]) as unknown as Entries
  }))
}

/** The same as nested `Effect.locally` calls, for a fiber runtime without `setFiberRefs`. */
const nested = <A, E, R>(self: Effect.Effect<A, E, R>, values: ReadonlyArray<Entry>): Effect.Effect<A, E, R> =>
  values.reduce((effect, [ref, value]) => Effect.locally(effect, ref, value), self)

/**
 * Runs `self` with each `FiberRef` of `entries` set to its value, and puts
 * the values back when `self` ends, however it ends: what nested
 * `Effect.locally` calls do, with one copy of the fiber's refs to set them
 * and one to put them back, instead of a copy and an acquire-release per ref
 * and per direction.
 *
 * `entries` is called on the running fiber, so a value can depend on the
 * current one (a context with one service added, a predicate that defers to
 * the user's).
 */
export const locallyAll = <A, E, R>(
  self: Effect.Effect<A, E, R>,
  entries: (fiber: Fiber.RuntimeFiber<unknown, unknown>) => readonly [Entry, ...Array<Entry>]
): Effect.Effect<A, E, R> =>
  Effect.withFiberRuntime<A, E, R>((fiber) => {
    const set = entries(fiber)
    if (!isSettable(fiber)) return nested(self, set)
    const saved = set.map(([ref]): Entry => [ref, fiber.getFiberRef(ref)])
    // Puts the values back on the fiber that ends (the same one).
    const end = (exit: Exit.Exit<A, E>) =>
      Effect.withFiberRuntime<A, E>((current) => {
        if (isSettable(current)) put(current, saved)
        return exit
      })
    return Effect.uninterruptibleMask((unmask) => {
      put(fiber, set)
      return Effect.matchCauseEffect(unmask(self), {
        onFailure: (cause) => end(Exit.failCause(cause)),
        onSuccess: (a) => end(Exit.succeed(a))
      })
    })
  })

/**
 * Sets each `FiberRef` of `entries` for the rest of the running fiber, then
 * runs `self`: for a fiber that ends with `self` (a child forked to run it),
 * where putting the values back would be wasted work. Anywhere else, use
 * {@link locallyAll}.
 */
export const setForRest = <A, E, R>(
  self: Effect.Effect<A, E, R>,
  entries: (fiber: Fiber.RuntimeFiber<unknown, unknown>) => readonly [Entry, ...Array<Entry>]
): Effect.Effect<A, E, R> =>
  Effect.withFiberRuntime<A, E, R>((fiber) => {
    const set = entries(fiber)
    if (!isSettable(fiber)) return nested(self, set)
    put(fiber, set)
    return self
  })

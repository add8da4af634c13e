// Managers that share one store, in one process, under TestClock: what each
// sees of the other's writes through the store's change feed and its fenced
// writes. (Other processes, tabs and replicas: the Node, browser and Redis
// stores' own tests.)
import { describe, expect, it } from "@effect/vitest"
import { Context, Duration, Effect, Layer, Option, Redacted, Stream } from "effect"
import { TestClock } from "effect/testing"
import { RefreshError, SessionManager, SessionStore } from "moon-refresh"
import { MockRefreshClient } from "moon-refresh/testing"

/**
 * Lets every fiber run until it waits on something, without moving the
 * TestClock: what Effect 3's `TestClock.adjust(Duration.zero)` did (it waited
 * real timer turns, in which every fiber ran until suspended). Effect 4's
 * `adjust(0)` yields to the fiber scheduler once, so a chain of forks and
 * wake-ups may still be running after it, and a check that something did not
 * happen would prove nothing. Ten turns, each a real `setTimeout(0)` and
 * `TestClock.adjust(0)`: nothing here waits on real I/O, so that does not
 * depend on the machine's load.
 */
const settle = Effect.repeat(
  Effect.andThen(
    Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, 0))),
    TestClock.adjust(Duration.zero)
  ),
  { times: 9 }
)

/** A mock, a store holding a session it issued, and a way to build managers over both. */
const world = (
  options: {
    readonly store?: (memory: SessionStore.Service, mock: MockRefreshClient.Service) => SessionStore.Service
  } = {}
) =>
  Effect.gen(function*() {
    const mockContext = yield* Layer.build(MockRefreshClient.layer())
    const mock = Context.get(mockContext, MockRefreshClient.MockRefreshClient)
    const seeded = yield* mock.issueSession({ lifetime: "10 minutes" })
    const memory = yield* SessionStore.makeMemory(seeded)
    const store = options.store?.(memory, mock) ?? memory
    const manager = (managerOptions?: SessionManager.Options) =>
      Effect.gen(function*() {
        const context = yield* Layer.build(
          SessionManager.layer({ autoRefresh: false, ...managerOptions }).pipe(
            Layer.provide(Layer.succeedContext(mockContext)),
            Layer.provide(Layer.succeed(SessionStore.SessionStore, store))
          )
        )
        const service = Context.get(context, SessionManager.SessionManager)
        const events: Array<SessionManager.SessionEvent> = []
        yield* Effect.forkScoped(
          Stream.runForEach(service.events.pipe(Stream.drop(1)), (event) => Effect.sync(() => events.push(event)))
        )
        yield* settle
        return { manager: service, events }
      })
    return { mock, seeded, store, memory, manager }
  })

/**
 * A store where another holder writes a session of its own just before the
 * first write that `when` picks (as after a lease takeover between the
 * manager's read and its write); every write after that goes through.
 */
const writesFirst = (
  memory: SessionStore.Service,
  mock: MockRefreshClient.Service,
  when: (session: Option.Option<unknown>) => boolean
): SessionStore.Service => {
  let armed = true
  return SessionStore.make({
    read: memory.read,
    write: (session, expected) =>
      Effect.gen(function*() {
        if (armed && when(session)) {
          armed = false
          const other = yield* mock.issueSession({ name: "other", lifetime: "1 hour" })
          yield* memory.write(Option.some(other), expected)
        }
        return yield* memory.write(session, expected)
      }),
    changes: Stream.never,
    shared: false
  })
}

const tokenOf = (manager: SessionManager.Service) =>
  Effect.map(manager.current, Option.match({ onNone: () => "none", onSome: (s) => Redacted.value(s.accessToken) }))

describe("managers sharing one store", () => {
  it.effect("one refreshes; the other takes the new session from the change feed, with no request", () =>
    Effect.gen(function*() {
      const { manager, mock } = yield* world()
      const a = yield* manager()
      const b = yield* manager()
      yield* a.manager.refresh
      yield* settle
      expect(yield* tokenOf(b.manager)).toBe(yield* tokenOf(a.manager))
      expect(b.events.map((event) => event._tag)).toStrictEqual(["Refreshed"])
      expect((yield* mock.stats).calls).toBe(1)
      // B's own refresh now spends the newest token: no reuse.
      yield* b.manager.refresh
      expect(yield* mock.stats).toMatchObject({ calls: 2, rotations: 2, reuseRejections: 0 })
    }))

  it.effect("a sign-out in one signs the other out, and nobody writes the session back", () =>
    Effect.gen(function*() {
      const { manager, mock, store } = yield* world()
      const a = yield* manager()
      const b = yield* manager({ autoRefresh: true })
      yield* a.manager.signOut
      yield* settle
      const signedOut = b.events.find((event) => event._tag === "SignedOut")
      expect(signedOut?._tag === "SignedOut" && signedOut.reason._tag).toBe("SignedOutElsewhere")
      expect((yield* Effect.flip(b.manager.accessToken))._tag).toBe("NoSessionError")
      // Hours later: still a sign-out in the store, no refresh was attempted.
      yield* TestClock.adjust(Duration.hours(2))
      const stored = yield* store.read
      expect(Option.isNone(stored.session)).toBe(true)
      expect((yield* mock.stats).calls).toBe(0)
    }))

  it.effect("a save refused by the fence (another holder wrote first) takes what the store holds", () =>
    Effect.gen(function*() {
      const { manager, memory } = yield* world({
        // Between the manager's read and its write, another holder writes (as after a lease takeover).
        store: (memory, mock) => writesFirst(memory, mock, Option.isSome)
      })
      const a = yield* manager()
      const session = yield* a.manager.refresh
      expect(Redacted.value(session.accessToken)).toBe("mock-access-token-other")
      expect(yield* tokenOf(a.manager)).toBe("mock-access-token-other")
      expect(Option.map((yield* memory.read).session, (s) => Redacted.value(s.accessToken))).toStrictEqual(
        Option.some("mock-access-token-other")
      )
    }))

  it.effect("a rejected token does not sign out over a newer session another holder wrote", () =>
    Effect.gen(function*() {
      const { manager, memory, mock } = yield* world({
        store: (memory, mock) => writesFirst(memory, mock, Option.isNone)
      })
      yield* mock.script(
        MockRefreshClient.fail(new RefreshError.TokenRejectedError({ status: 500, message: "Invalid Refresh Token" }))
      )
      const a = yield* manager()
      yield* Effect.result(a.manager.refresh)
      expect(yield* tokenOf(a.manager)).toBe("mock-access-token-other")
      expect(a.events.map((event) => event._tag)).toStrictEqual(["Refreshed"])
      expect(Option.isSome((yield* memory.read).session)).toBe(true)
    }))
})

describe("signInWithRefreshToken", () => {
  it.effect("refreshes the given token, saves the new session, signs in and emits SignedIn", () =>
    Effect.gen(function*() {
      const { manager, mock, store } = yield* world()
      const a = yield* manager()
      yield* a.manager.signOut
      const outside = yield* mock.issueSession({ name: "from-login" })
      const session = yield* a.manager.signInWithRefreshToken(outside.refreshToken)
      expect(yield* mock.isLive(session.refreshToken)).toBe(true)
      expect(yield* mock.isLive(outside.refreshToken)).toBe(false)
      expect(yield* tokenOf(a.manager)).toBe(Redacted.value(session.accessToken))
      const stored = yield* store.read
      expect(Option.map(stored.session, (s) => Redacted.value(s.refreshToken))).toStrictEqual(
        Option.some(Redacted.value(session.refreshToken))
      )
      expect(a.events.map((event) => event._tag)).toStrictEqual(["SignedOut", "SignedIn"])
    }))

  it.effect("a rejected token fails with TokenRejectedError and changes nothing", () =>
    Effect.gen(function*() {
      const { manager, seeded } = yield* world()
      const a = yield* manager()
      const error = yield* Effect.flip(a.manager.signInWithRefreshToken("never-issued"))
      expect(error._tag).toBe("TokenRejectedError")
      expect(yield* tokenOf(a.manager)).toBe(Redacted.value(seeded.accessToken))
      expect(a.events).toStrictEqual([])
    }))

  it.effect("when another holder signed in meanwhile, its session is taken and the token is not sent", () =>
    Effect.gen(function*() {
      const { manager, mock } = yield* world()
      const a = yield* manager()
      const b = yield* manager()
      yield* a.manager.signOut
      yield* settle
      const login = yield* mock.issueSession({ name: "login" })
      // Both start from the same token (say, from the environment), at once: one POSTs, the other takes its session.
      const [fromA, fromB] = yield* Effect.all([
        a.manager.signInWithRefreshToken(login.refreshToken),
        b.manager.signInWithRefreshToken(login.refreshToken)
      ], { concurrency: "unbounded" })
      expect((yield* mock.stats).calls).toBe(1)
      expect(Redacted.value(fromA.accessToken)).toBe(Redacted.value(fromB.accessToken))
      expect(yield* tokenOf(a.manager)).toBe(yield* tokenOf(b.manager))
      expect((yield* mock.stats).reuseRejections).toBe(0)
    }))
})

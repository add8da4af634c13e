/**
 * Regression case: a refresh whose answer spent a token is never thrown
 * away because the session changed while the request was out. Found by the
 * Redis replicas test under load; reproduced here in one process. One case
 * per bug, named by what broke; add one per bug fixed.
 */
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Fiber, Layer, Stream } from "effect"
import { SessionManager, SessionStore } from "moon-refresh"
import { MockRefreshClient } from "moon-refresh/testing"
import { adjust, settle } from "./harness.js"

describe("a change arriving during a refresh", () => {
  it.effect("a refresh planned from the record the feed brings during its POST keeps and writes its answer", () =>
    Effect.gen(function*() {
      const mockContext = yield* Layer.build(MockRefreshClient.layer())
      const mock = Context.get(mockContext, MockRefreshClient.MockRefreshClient)
      const seeded = yield* mock.issueSession({ lifetime: "2 minutes" })
      const memory = yield* SessionStore.makeMemory(seeded)
      // X hears of writes 65.5 s late (a slow subscriber); its store is otherwise the same.
      const late: SessionStore.Service = {
        ...memory,
        changes: Stream.mapEffect(memory.changes, (stored) => Effect.as(Effect.sleep("65500 millis"), stored))
      }
      const build = (store: SessionStore.Service) =>
        Effect.map(
          Layer.build(
            SessionManager.layer({ autoRefresh: false, margin: "60 seconds", minInterval: 0 }).pipe(
              Layer.provide(Layer.succeedContext(mockContext)),
              Layer.provide(Layer.succeed(SessionStore.SessionStore, store))
            )
          ),
          (context) => Context.get(context, SessionManager.SessionManager)
        )
      const a = yield* build(memory)
      const x = yield* build(late)
      yield* settle
      yield* mock.script(MockRefreshClient.succeed({ lifetime: "2 minutes" }))
      yield* a.refresh // t=0: A refreshes; the store holds A's session (revision 2), expiring at 120 s.
      yield* adjust("65 seconds")
      // t=65: that session has 55 s left, inside X's margin: X refreshes it; its POST
      // takes a second, and at 65.5 s X's feed brings revision 2.
      yield* mock.script(MockRefreshClient.succeed({ lifetime: "2 minutes", delay: "1 second" }))
      const xRefresh = yield* Effect.forkChild(x.refresh)
      yield* adjust("2 seconds")
      yield* Fiber.await(xRefresh)
      // Before: X discarded its answer (the feed had changed its session), so the store kept the spent token.
      expect((yield* memory.read).revision).toBe(3)
      // A refreshes what the store holds: the live token, no reuse.
      const aRefresh = yield* Effect.forkChild(Effect.result(a.refresh))
      yield* adjust("2 seconds")
      yield* Fiber.await(aRefresh)
      expect(yield* mock.stats).toMatchObject({ reuseRejections: 0 })
    }))
})

import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Option, Redacted, Result } from "effect"
import { FetchHttpClient } from "effect/http"
import { RefreshClient, RefreshPolicy, Session, SessionManager, SessionStore } from "moon-refresh"
import { MockMoonServer } from "moon-refresh/testing"

// The library over real HTTP against a MockMoonServer that forgives reuses as
// Supabase's auth server (GoTrue) does: the parent of the active refresh token
// always, an older one only within the reuse interval (10 s), anything else
// revokes the whole session. The server's clock is moved by hand, so nothing
// here waits for the interval or depends on how fast the machine is.

const quickRetries = RefreshPolicy.exponential({
  base: "10 millis",
  maxRetries: 3,
  maxDelay: "50 millis",
  maxElapsed: "5 seconds"
})

/** A server on a clock the test moves: `advance("1 hour")` jumps it ahead. */
const gotrueServer = (options: MockMoonServer.Options = {}) =>
  Effect.gen(function*() {
    let ahead = 0
    const server = yield* MockMoonServer.make({ reuse: "gotrue", now: () => Date.now() + ahead, ...options })
    const advance = (millis: number) =>
      Effect.sync(() => {
        ahead += millis
      })
    return { server, advance }
  })

/** One holder of the session: a manager that refreshes only when asked, over its own memory store. */
const holder = (server: MockMoonServer.Service, initial: Session.Session, policy = quickRetries) =>
  Layer.build(
    SessionManager.layer({ autoRefresh: false }).pipe(
      Layer.provide(SessionStore.layerMemory(initial)),
      Layer.provide(RefreshClient.layer({ baseUrl: server.url, policy })),
      Layer.provide(FetchHttpClient.layer)
    )
  )

const hour = 3_600_000

describe("the library against MockMoonServer's gotrue mode", () => {
  it.live("RefreshClient: an answer lost after the rotation is recovered by the same token, an hour later", () =>
    Effect.gen(function*() {
      const { advance, server } = yield* gotrueServer()
      const seeded = yield* server.issueSession()
      const client = yield* RefreshClient.make({ baseUrl: server.url, policy: RefreshPolicy.none })

      // The server rotates, then the connection drops: the client never sees the new token.
      yield* server.script(MockMoonServer.Fault.ResetAfterRotate())
      const lost = yield* Effect.flip(client.refresh(seeded.refreshToken))
      expect(lost._tag).toBe("TransportError")
      expect(yield* server.isLive(seeded.refreshToken)).toBe(false)

      // Far past the 10 s interval, the spent token is still the parent of the
      // active one: answered with the active session, without a new rotation.
      yield* advance(hour)
      const recovered = yield* client.refresh(seeded.refreshToken)
      expect(yield* server.isLive(recovered.refreshToken)).toBe(true)
      expect(yield* server.stats).toMatchObject({
        refreshRequests: 2,
        rotations: 1,
        reusesTolerated: 1,
        reuseRejections: 0
      })

      // The recovered token rotates normally.
      const next = yield* client.refresh(recovered.refreshToken)
      expect(yield* server.isLive(next.refreshToken)).toBe(true)
      expect((yield* server.stats).rotations).toBe(2)
    }).pipe(Effect.provide(FetchHttpClient.layer)))

  it.live("SessionManager: the retry after a lost answer keeps the user signed in, where a strict server signs out", () =>
    Effect.gen(function*() {
      const outcome = (reuse: "gotrue" | "window") =>
        Effect.gen(function*() {
          const { server } = yield* gotrueServer({ reuse })
          const seeded = Session.unsafeMake(yield* server.issueSession())
          const context = yield* holder(server, seeded)
          yield* server.script(MockMoonServer.Fault.ResetAfterRotate())
          // One refresh: the first attempt's answer is lost, the client's retry sends the same token.
          const refreshed = yield* Effect.result(Effect.provide(SessionManager.refresh, context))
          const held = yield* Effect.provide(SessionManager.current, context)
          return {
            refreshed: Result.isSuccess(refreshed) ? "Success" : refreshed.failure._tag,
            live: Option.isSome(held) && (yield* server.isLive(held.value.refreshToken)),
            stats: yield* server.stats
          }
        })

      const gotrue = yield* outcome("gotrue")
      expect(gotrue.refreshed).toBe("Success")
      expect(gotrue.live).toBe(true)
      expect(gotrue.stats).toMatchObject({ refreshRequests: 2, rotations: 1, reusesTolerated: 1, reuseRejections: 0 })

      // The same lost answer against the strict default: the retry is a reuse, and the session is over.
      const strict = yield* outcome("window")
      expect(strict.refreshed).toBe("TokenRejectedError")
      expect(strict.live).toBe(false)
      expect(strict.stats).toMatchObject({ refreshRequests: 2, rotations: 1, reusesTolerated: 0, reuseRejections: 1 })
    }))

  it.live("a second reuse revokes the family: a holder left two rotations behind signs every holder out", () =>
    Effect.gen(function*() {
      const { advance, server } = yield* gotrueServer()
      const seeded = Session.unsafeMake(yield* server.issueSession())
      // Two holders that do not share a store (two machines, say), both starting from the seeded session.
      const active = yield* holder(server, seeded)
      const stale = yield* holder(server, seeded, RefreshPolicy.none)

      // The active holder refreshes twice: the seeded token is now two rotations back.
      yield* Effect.provide(SessionManager.refresh, active)
      const second = yield* Effect.provide(SessionManager.refresh, active)
      expect(yield* server.isLive(second.refreshToken)).toBe(true)

      // Past the reuse interval, the stale holder presents the seeded token: not
      // the active token's parent, too old to be forgiven. The whole family goes.
      yield* advance(11_000)
      const staleError = yield* Effect.flip(Effect.provide(SessionManager.refresh, stale))
      expect(staleError._tag).toBe("TokenRejectedError")
      expect(staleError.message).toContain("Already Used")
      expect(yield* server.isLive(second.refreshToken)).toBe(false)

      // The active holder's own, newest token is dead too: its next refresh signs it out.
      const activeError = yield* Effect.flip(Effect.provide(SessionManager.refresh, active))
      expect(activeError._tag).toBe("TokenRejectedError")
      expect(Option.isNone(yield* Effect.provide(SessionManager.current, active))).toBe(true)
      expect(yield* server.stats).toMatchObject({ rotations: 2, reusesTolerated: 0, reuseRejections: 2 })
      // The refresh tokens the holders sent were never in what the server kept.
      const recorded = JSON.stringify(yield* server.requests)
      expect(recorded).not.toContain(Redacted.value(seeded.refreshToken))
    }))
})

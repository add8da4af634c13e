// The whole stack over real sockets on 127.0.0.1, in real time (`npm run
// test:system`): MockMoonServer issues access tokens that live seconds and
// one-time refresh tokens, and with `reuseWindow: 0` any second use of a
// refresh token is a reuse rejection that revokes the session. Each test
// sends requests until the server has seen what the test is about (so many
// rotations, the scripted outage and its recovery), then counts outcomes. On a
// busy machine it runs longer; what it counts does not change.
import { describe, expect, it } from "@effect/vitest"
import { Effect, References } from "effect"
import { FetchHttpClient } from "effect/http"
import { RefreshPolicy, Session, SessionManager } from "moon-refresh"
import { MockMoonServer } from "moon-refresh/testing"
import {
  emptyTally,
  expectStoreHoldsTheLiveToken,
  programLayer,
  recordEvents,
  stacks,
  tags,
  trafficUntil
} from "../support/SessionStack.js"

/** The refresh requests the server has answered so far, with their statuses. */
const refreshStatuses = (server: MockMoonServer.Service) =>
  Effect.map(
    server.requests,
    (all) => all.filter((request) => request.path === "/auth/refresh").map((request) => request.status)
  )

describe("SessionManager + AuthHttpClient against MockMoonServer (real HTTP, real time)", () => {
  for (const [name, httpLayer] of stacks) {
    it.live(
      `over ${name}: keeps a session alive across 3 expiries of 2 s tokens with no 401 and no reuse`,
      () =>
        Effect.gen(function*() {
          // Tokens live 2 s (1 to 2 s in fact: `expires_at` is whole seconds), refreshed 1 s ahead.
          const server = yield* MockMoonServer.make({ accessTokenLifetime: 2, reuseWindow: 0 })
          const initial = Session.unsafeMake(yield* server.issueSession())
          const tally = emptyTally()

          yield* Effect.gen(function*() {
            const events = yield* recordEvents
            // Until the first access token and 3 of its successors have each been answered 200
            // (the manager refreshed ahead of 3 expiries while the requests ran), or a reuse.
            yield* trafficUntil(server, tally, {
              loops: 4,
              done: Effect.map(
                server.stats,
                (stats) => stats.reuseRejections > 0 || (stats.rotations >= 3 && tally.served.size >= 4)
              )
            })
            yield* expectStoreHoldsTheLiveToken(server)
            expect(tags(events).filter((tag) => tag !== "Refreshed")).toEqual([])
          }).pipe(Effect.provide(programLayer(server, initial, httpLayer)))

          const stats = yield* server.stats
          console.log(
            `over ${name}: ${stats.rotations} rotations, ${tally.ok} requests answered 200 with ${tally.served.size} ` +
              `access tokens`
          )
          expect(stats.reuseRejections).toBe(0)
          expect(tally.unauthorized).toBe(0)
          expect(tally.other).toEqual([])
          expect(stats.unknownTokens).toBe(0)
          // Every POST rotated: none was a second, concurrent refresh of a spent token.
          expect(stats.refreshRequests).toBe(stats.rotations)
        })
    )
  }

  it.live("rides out an outage of three 503s inside one refresh (the client's retry policy)", () =>
    Effect.gen(function*() {
      const server = yield* MockMoonServer.make({ accessTokenLifetime: 2, reuseWindow: 0 })
      const initial = Session.unsafeMake(yield* server.issueSession())
      const outage = MockMoonServer.Fault.Status({ status: 503, body: { message: "Service Unavailable" } })
      yield* server.script(outage, outage, outage)
      const tally = emptyTally()

      yield* Effect.gen(function*() {
        const events = yield* recordEvents
        // The default policy waits about 0.2 + 0.4 + 0.8 s: longer than the 1 s margin, so the token
        // expires mid-refresh and requests wait for the new one. Until the fourth POST rotated and
        // requests were answered with the new token.
        yield* trafficUntil(server, tally, {
          loops: 4,
          done: Effect.map(refreshStatuses(server), (statuses) => statuses[3] === 200 && tally.served.size >= 2)
        })
        yield* expectStoreHoldsTheLiveToken(server)
        expect(tags(events).filter((tag) => tag !== "Refreshed")).toEqual([])
      }).pipe(Effect.provide(programLayer(server, initial, FetchHttpClient.layer)))

      expect((yield* refreshStatuses(server)).slice(0, 4)).toEqual([503, 503, 503, 200])
      expect(tally.unauthorized).toBe(0)
      expect(tally.other).toEqual([])
      expect(yield* server.stats).toMatchObject({ faults: 3, reuseRejections: 0 })
    }))

  it.live(
    "rides out an outage the client gives up on: the session is kept and the manager retries after its cooldown",
    () =>
      Effect.gen(function*() {
        // Tokens live a minute and are refreshed 59 s before expiry, that is at once: the two failed
        // refreshes and their cooldowns (100 ms, then 200 ms) come long before the token expires,
        // however slow the machine.
        const server = yield* MockMoonServer.make({ accessTokenLifetime: 60, reuseWindow: 0 })
        const outage = MockMoonServer.Fault.Status({ status: 503, body: { message: "Service Unavailable" } })
        yield* server.script(outage, outage)
        const tally = emptyTally()

        yield* Effect.gen(function*() {
          // Signed in once the events are recorded, so that none is missed.
          const events = yield* recordEvents
          yield* SessionManager.signIn(Session.unsafeMake(yield* server.issueSession()))
          yield* trafficUntil(server, tally, {
            loops: 4,
            done: Effect.map(refreshStatuses(server), (statuses) => statuses[2] === 200 && tally.served.size >= 2)
          })
          yield* expectStoreHoldsTheLiveToken(server)

          const failed = events.filter(SessionManager.SessionEvent.$is("RefreshFailed"))
          expect(failed.map(({ error, willRetry }) => [error._tag, willRetry])).toEqual([
            ["ServerError", true],
            ["ServerError", true]
          ])
          expect(tags(events).slice(0, 4)).toEqual(["SignedIn", "RefreshFailed", "RefreshFailed", "Refreshed"])
          expect(tags(events)).not.toContain("SignedOut")
        }).pipe(
          Effect.provide(
            programLayer(server, undefined, FetchHttpClient.layer, {
              manager: { margin: "59 seconds", cooldown: "100 millis" },
              client: { policy: RefreshPolicy.none }
            })
          )
        )

        expect((yield* refreshStatuses(server)).slice(0, 3)).toEqual([503, 503, 200])
        expect(tally.unauthorized).toBe(0)
        expect(tally.other).toEqual([])
        expect(yield* server.stats).toMatchObject({ faults: 2, reuseRejections: 0 })
      }).pipe(
        // The manager logs each failed refresh as a warning: expected here.
        Effect.provideService(References.MinimumLogLevel, "Error")
      )
  )
})

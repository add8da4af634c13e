import { describe, expect, it } from "@effect/vitest"
import { Clock, DateTime, Effect } from "effect"
import { FetchHttpClient } from "effect/http"
import { Session } from "moon-refresh"
import { MockMoonServer } from "moon-refresh/testing"
import { counts, emptyTally, getProtected, programLayer } from "./support/SessionStack.js"

// The whole stack over real sockets on 127.0.0.1 (`it.live`): 100
// requests at once on a session that needs a refresh. Counts only: the new
// token lives a minute, so however slow the machine, no request outlives it.
// The refresh POST's timeout is a hang guard here (`hangGuard`): with the
// default 10 s, a machine loaded 20 deep timed the POST out after the server
// had rotated, and the retry was (rightly) refused as a reuse.
// The tests that pace themselves on seconds-long tokens run in `npm run
// test:system` (test/system/session-integration.test.ts).

const hangGuard = { client: { timeout: "10 minutes" }, manager: { autoRefresh: false } } as const

describe("SessionManager + AuthHttpClient against MockMoonServer (real HTTP)", () => {
  it.live("100 concurrent requests on an expired session cause exactly 1 refresh POST", () =>
    Effect.gen(function*() {
      // Issued with the server's clock a minute behind: the token is already expired,
      // for the server (once its clock is set right) and for the manager alike. The
      // new token lives a minute, so however slow the 100 requests are, none outlives it.
      let skew = -60_000
      const server = yield* MockMoonServer.make({
        accessTokenLifetime: 60,
        reuseWindow: 0,
        now: () => Date.now() + skew
      })
      const issued = Session.unsafeMake(yield* server.issueSession())
      skew = 0
      expect(DateTime.toEpochMillis(issued.expiresAt)).toBeLessThanOrEqual(yield* Clock.currentTimeMillis)
      const tally = emptyTally()

      yield* Effect.all(Array.from({ length: 100 }, () => getProtected(server, tally)), {
        concurrency: "unbounded",
        discard: true
      }).pipe(
        Effect.provide(programLayer(server, issued, FetchHttpClient.layer, hangGuard))
      )

      expect(counts(tally)).toEqual({ ok: 100, unauthorized: 0, other: [] })
      // The manager saw the expiry: no request went out with the dead token.
      expect(yield* server.stats).toMatchObject({ refreshRequests: 1, rotations: 1, unauthorized: 0 })
    }))

  it.live("100 concurrent requests answered 401 cause exactly 1 refresh POST and 100 replays", () =>
    Effect.gen(function*() {
      // The server's clock jumps a minute ahead: it rejects a token the client still
      // counts as valid. The new token lives a minute by the server's clock.
      let skew = 0
      const server = yield* MockMoonServer.make({
        accessTokenLifetime: 60,
        reuseWindow: 0,
        now: () => Date.now() + skew
      })
      const issued = yield* server.issueSession()
      skew = 60_000
      const tally = emptyTally()

      yield* Effect.all(Array.from({ length: 100 }, () => getProtected(server, tally)), {
        concurrency: "unbounded",
        discard: true
      }).pipe(
        Effect.provide(
          programLayer(server, Session.unsafeMake(issued), FetchHttpClient.layer, hangGuard)
        )
      )

      expect(counts(tally)).toEqual({ ok: 100, unauthorized: 0, other: [] })
      expect(yield* server.stats).toMatchObject({
        refreshRequests: 1,
        rotations: 1,
        reuseRejections: 0,
        protectedRequests: 200,
        unauthorized: 100
      })
    }))
})

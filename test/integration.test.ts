import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import { describe, expect, it } from "@effect/vitest"
import { DateTime, Effect, Fiber, type Layer, Redacted, Result } from "effect"
import { FetchHttpClient, type HttpClient } from "effect/http"
import { TestClock } from "effect/testing"
import { RefreshClient, RefreshPolicy } from "moon-refresh"
import { MockMoonServer } from "moon-refresh/testing"
import { waitUntil } from "./support/RealTime.js"

// Real sockets on 127.0.0.1, so real time (`it.live`): every outcome is
// decided by the script, not by a race. The timeouts are on the TestClock
// (`it.effect`), moved once the server holds the request.

// Retries quickly, so a retry costs milliseconds instead of the default's 200 ms.
const quickRetries = RefreshPolicy.exponential({
  base: "10 millis",
  maxRetries: 3,
  maxDelay: "20 millis",
  // A hang guard, not a budget under test: retries must not stop because the machine is busy.
  maxElapsed: "1 minute",
  jitter: false
})

const stacks: ReadonlyArray<readonly [string, Layer.Layer<HttpClient.HttpClient>]> = [
  ["FetchHttpClient", FetchHttpClient.layer],
  // `@effect/platform-node`'s client over `node:http` (what its `layer` was in Effect 3).
  ["NodeHttpClient (node:http)", NodeHttpClient.layerNodeHttp],
  ["NodeHttpClient (undici)", NodeHttpClient.layerUndici]
]

for (const [name, httpLayer] of stacks) {
  describe(`RefreshClient over ${name} against MockMoonServer`, () => {
    const clientFor = (server: MockMoonServer.Service, options: Omit<RefreshClient.Options, "baseUrl"> = {}) =>
      RefreshClient.make({ baseUrl: server.url, policy: quickRetries, ...options })

    for (const bodyShape of ["bare", "wrapped"] as const) {
      it.live(`refreshes a session from a ${bodyShape} body`, () =>
        Effect.gen(function*() {
          const server = yield* MockMoonServer.make({ bodyShape, accessTokenLifetime: 600 })
          const seeded = yield* server.issueSession({ user: { email: "ada@example.com" } })
          const client = yield* clientFor(server)

          const before = Date.now()
          const session = yield* client.refresh(seeded.refreshToken)
          const after = Date.now()
          expect(session.user).toMatchObject({ id: "mock-user-1", email: "ada@example.com" })
          expect(session.tokenType).toBe("bearer")
          // Ten minutes from the moment the answer came, which lies between `before` and `after`.
          expect(DateTime.toEpochMillis(session.expiresAt)).toBeGreaterThanOrEqual(before + 600_000)
          expect(DateTime.toEpochMillis(session.expiresAt)).toBeLessThanOrEqual(after + 600_000)
          expect(yield* server.isLive(session.refreshToken)).toBe(true)
          expect(yield* server.isLive(seeded.refreshToken)).toBe(false)
          expect(yield* server.stats).toMatchObject({ refreshRequests: 1, rotations: 1 })

          // The new session works, and its refresh token is the one to use next.
          yield* Effect.promise(() =>
            fetch(`${server.url}/protected`, {
              headers: { authorization: `Bearer ${Redacted.value(session.accessToken)}` }
            }).then((response) => expect(response.status).toBe(200))
          )
          const next = yield* client.refresh(session.refreshToken)
          expect(yield* server.isLive(next.refreshToken)).toBe(true)
        }).pipe(Effect.provide(httpLayer)))
    }

    it.live("rides out a 500 with the retry policy (2 requests)", () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.make()
        const seeded = yield* server.issueSession()
        yield* server.script({ _tag: "Status", status: 500, body: { message: "Internal server error" } })
        const client = yield* clientFor(server)

        const session = yield* client.refresh(seeded.refreshToken)
        expect(yield* server.isLive(session.refreshToken)).toBe(true)
        expect((yield* server.requests).map((r) => r.status)).toEqual([500, 200])
      }).pipe(Effect.provide(httpLayer)))

    it.live("reports a connection reset as a TransportError", () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.make()
        const seeded = yield* server.issueSession()
        yield* server.script(MockMoonServer.Fault.Reset())
        const client = yield* clientFor(server, { policy: RefreshPolicy.none })

        const error = yield* Effect.flip(client.refresh(seeded.refreshToken))
        expect(error._tag).toBe("TransportError")
        expect(error._tag === "TransportError" && error.reason).toBe("Network")
        expect(error.message).not.toContain(Redacted.value(seeded.refreshToken))
        expect(yield* server.isLive(seeded.refreshToken)).toBe(true)
      }).pipe(Effect.provide(httpLayer)))

    it.live("retries after a connection reset and succeeds (2 requests)", () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.make()
        const seeded = yield* server.issueSession()
        yield* server.script(MockMoonServer.Fault.Reset())
        const client = yield* clientFor(server)

        const session = yield* client.refresh(seeded.refreshToken)
        expect(yield* server.isLive(session.refreshToken)).toBe(true)
        expect((yield* server.requests).map((r) => [r.status, r.fault])).toEqual([[undefined, "Reset"], [
          200,
          undefined
        ]])
      }).pipe(Effect.provide(httpLayer)))

    it.live("loses the session when the server rotates and dies before answering, without a reuse window", () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.make()
        const seeded = yield* server.issueSession()
        yield* server.script(MockMoonServer.Fault.ResetAfterRotate())
        const client = yield* clientFor(server)

        // The retry presents the spent token: Supabase's reuse detection ends the session.
        const error = yield* Effect.flip(client.refresh(seeded.refreshToken))
        expect(error._tag).toBe("TokenRejectedError")
        expect(yield* server.stats).toMatchObject({ refreshRequests: 2, rotations: 1, reuseRejections: 1 })
      }).pipe(Effect.provide(httpLayer)))

    it.live("recovers the rotated session on retry when the server has a reuse window", () =>
      Effect.gen(function*() {
        // A minute's window (Supabase's default is 10 s): the retry comes milliseconds later, on any machine.
        const server = yield* MockMoonServer.make({ reuseWindow: "1 minute" })
        const seeded = yield* server.issueSession()
        yield* server.script(MockMoonServer.Fault.ResetAfterRotate())
        const client = yield* clientFor(server)

        const session = yield* client.refresh(seeded.refreshToken)
        expect(yield* server.isLive(session.refreshToken)).toBe(true)
        expect(yield* server.stats).toMatchObject({ refreshRequests: 2, rotations: 1, reusesTolerated: 1 })
      }).pipe(Effect.provide(httpLayer)))

    // The timeouts run on the TestClock: the server holds the request (for longer than the test may run)
    // and the test moves the clock past the timeout once the server has it. No race with real time.
    it.effect("gives up on a response slower than the timeout (TransportError Timeout), and does not retry", () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.make()
        const seeded = yield* server.issueSession()
        yield* server.script(MockMoonServer.Fault.Delay({ millis: 60_000 }))
        const client = yield* clientFor(server, { policy: RefreshPolicy.none, timeout: "200 millis" })

        const fiber = yield* Effect.forkChild(Effect.flip(client.refresh(seeded.refreshToken)))
        yield* waitUntil("the request arrive", Effect.map(server.requests, (all) => all.length === 1))
        yield* TestClock.adjust("199 millis")
        expect(fiber.pollUnsafe()).toBeUndefined()
        yield* TestClock.adjust("1 millis")
        const error = yield* Fiber.join(fiber)
        expect(error._tag === "TransportError" && error.reason).toBe("Timeout")
        // The client hung up during the delay: the server did not rotate, and nothing was retried.
        yield* waitUntil("the hang-up", Effect.map(server.requests, ([r]) => r?.outcome === "client-gone"))
        expect(yield* server.isLive(seeded.refreshToken)).toBe(true)
        expect((yield* server.stats).refreshRequests).toBe(1)
      }).pipe(Effect.provide(httpLayer)))

    it.effect("counts a body that trickles in past the timeout as a timeout too", () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.make()
        const seeded = yield* server.issueSession()
        yield* server.script(MockMoonServer.Fault.SlowBody({ millis: 60_000 }))
        const client = yield* clientFor(server, { policy: RefreshPolicy.none, timeout: "500 millis" })

        const fiber = yield* Effect.forkChild(Effect.flip(client.refresh(seeded.refreshToken)))
        // The server rotated and sent the headers and half the body; the rest never comes in time.
        yield* waitUntil("the headers sent", Effect.map(server.requests, ([r]) => r?.status === 200))
        yield* TestClock.adjust("500 millis")
        const error = yield* Fiber.join(fiber)
        expect(error._tag === "TransportError" && error.reason).toBe("Timeout")
        // The server rotated before the body stalled: the old token is spent.
        expect(yield* server.isLive(seeded.refreshToken)).toBe(false)
      }).pipe(Effect.provide(httpLayer)))

    it.live("rejects a dead token without retrying (1 request)", () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.make()
        const client = yield* clientFor(server)

        const error = yield* Effect.flip(client.refresh(Redacted.make("never-issued")))
        expect(error._tag).toBe("TokenRejectedError")
        expect(error.message).toBe("Invalid Refresh Token: Refresh Token Not Found")
        expect((yield* server.stats).refreshRequests).toBe(1)
      }).pipe(Effect.provide(httpLayer)))

    it.live("rejects a reused token without retrying (1 request for the reuse)", () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.make()
        const seeded = yield* server.issueSession()
        const client = yield* clientFor(server)
        yield* client.refresh(seeded.refreshToken)

        const reuse = yield* Effect.result(client.refresh(seeded.refreshToken))
        expect(Result.isFailure(reuse) && reuse.failure._tag).toBe("TokenRejectedError")
        expect(Result.isFailure(reuse) && reuse.failure.message).toBe("Invalid Refresh Token: Already Used")
        expect(yield* server.stats).toMatchObject({ refreshRequests: 2, reuseRejections: 1 })
      }).pipe(Effect.provide(httpLayer)))
  })
}

describe("MockMoonServer.layerRefreshClient", () => {
  it.live("points a RefreshClient at the server in context", () =>
    Effect.gen(function*() {
      const server = yield* MockMoonServer.MockMoonServer
      const seeded = yield* server.issueSession()
      const session = yield* RefreshClient.refresh(seeded.refreshToken)
      expect(yield* server.isLive(session.refreshToken)).toBe(true)
    }).pipe(
      Effect.provide(MockMoonServer.layerRefreshClient({ policy: RefreshPolicy.none })),
      Effect.provide(MockMoonServer.layer()),
      Effect.provide(FetchHttpClient.layer)
    ))
})

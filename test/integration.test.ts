import { FetchHttpClient, type HttpClient } from "@effect/platform"
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import { describe, expect, it } from "@effect/vitest"
import { DateTime, Effect, Either, type Layer, Redacted } from "effect"
import { RefreshClient, RefreshPolicy } from "moon-refresh"
import { MockMoonServer } from "moon-refresh/testing"

// Real sockets on 127.0.0.1, so real time (`it.scopedLive`): the delays below
// are tens of milliseconds and every outcome is decided by the script, not by a race.

// Retries quickly, so a retry costs milliseconds instead of the default's 200 ms.
const quickRetries = RefreshPolicy.exponential({
  base: "10 millis",
  maxRetries: 3,
  maxDelay: "20 millis",
  maxElapsed: "2 seconds",
  jitter: false
})

const stacks: ReadonlyArray<readonly [string, Layer.Layer<HttpClient.HttpClient>]> = [
  ["FetchHttpClient", FetchHttpClient.layer],
  ["NodeHttpClient (node:http)", NodeHttpClient.layer],
  ["NodeHttpClient (undici)", NodeHttpClient.layerUndici]
]

for (const [name, httpLayer] of stacks) {
  describe(`RefreshClient over ${name} against MockMoonServer`, () => {
    const clientFor = (server: MockMoonServer.Service, options: Omit<RefreshClient.Options, "baseUrl"> = {}) =>
      RefreshClient.make({ baseUrl: server.url, policy: quickRetries, ...options })

    for (const bodyShape of ["bare", "wrapped"] as const) {
      it.scopedLive(`refreshes a session from a ${bodyShape} body`, () =>
        Effect.gen(function*() {
          const server = yield* MockMoonServer.make({ bodyShape, accessTokenLifetime: 600 })
          const seeded = yield* server.issueSession({ user: { email: "ada@example.com" } })
          const client = yield* clientFor(server)

          const session = yield* client.refresh(seeded.refreshToken)
          expect(session.user).toMatchObject({ id: "mock-user-1", email: "ada@example.com" })
          expect(session.tokenType).toBe("bearer")
          const lifetime = DateTime.toEpochMillis(session.expiresAt) - Date.now()
          expect(lifetime).toBeGreaterThan(598_000)
          expect(lifetime).toBeLessThanOrEqual(600_000)
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

    it.scopedLive("rides out a 500 with the retry policy (2 requests)", () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.make()
        const seeded = yield* server.issueSession()
        yield* server.script({ _tag: "Status", status: 500, body: { message: "Internal server error" } })
        const client = yield* clientFor(server)

        const session = yield* client.refresh(seeded.refreshToken)
        expect(yield* server.isLive(session.refreshToken)).toBe(true)
        expect((yield* server.requests).map((r) => r.status)).toEqual([500, 200])
      }).pipe(Effect.provide(httpLayer)))

    it.scopedLive("reports a connection reset as a TransportError", () =>
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

    it.scopedLive("retries after a connection reset and succeeds (2 requests)", () =>
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

    it.scopedLive("loses the session when the server rotates and dies before answering, without a reuse window", () =>
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

    it.scopedLive("recovers the rotated session on retry when the server has a reuse window", () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.make({ reuseWindow: "10 seconds" })
        const seeded = yield* server.issueSession()
        yield* server.script(MockMoonServer.Fault.ResetAfterRotate())
        const client = yield* clientFor(server)

        const session = yield* client.refresh(seeded.refreshToken)
        expect(yield* server.isLive(session.refreshToken)).toBe(true)
        expect(yield* server.stats).toMatchObject({ refreshRequests: 2, rotations: 1, reusesTolerated: 1 })
      }).pipe(Effect.provide(httpLayer)))

    it.scopedLive("gives up on a response slower than the timeout (TransportError Timeout)", () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.make()
        const seeded = yield* server.issueSession()
        yield* server.script(MockMoonServer.Fault.Delay({ millis: 5_000 }))
        const client = yield* clientFor(server, { policy: RefreshPolicy.none, timeout: "200 millis" })

        const started = performance.now()
        const error = yield* Effect.flip(client.refresh(seeded.refreshToken))
        const elapsed = performance.now() - started
        expect(error._tag === "TransportError" && error.reason).toBe("Timeout")
        expect(elapsed).toBeGreaterThanOrEqual(190)
        expect(elapsed).toBeLessThan(2_000)
        // Not retried. (At most one: on a very busy machine the request may not even reach the server in time.)
        expect((yield* server.stats).refreshRequests).toBeLessThanOrEqual(1)
      }).pipe(Effect.provide(httpLayer)))

    it.scopedLive("counts a body that trickles in past the timeout as a timeout too", () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.make()
        const seeded = yield* server.issueSession()
        yield* server.script(MockMoonServer.Fault.SlowBody({ millis: 5_000 }))
        // Longer than the test above: the request must reach the server (and rotate) before it times out.
        const client = yield* clientFor(server, { policy: RefreshPolicy.none, timeout: "500 millis" })

        const error = yield* Effect.flip(client.refresh(seeded.refreshToken))
        expect(error._tag === "TransportError" && error.reason).toBe("Timeout")
        // The server rotated before the body stalled: the old token is spent.
        expect(yield* server.isLive(seeded.refreshToken)).toBe(false)
      }).pipe(Effect.provide(httpLayer)))

    it.scopedLive("rejects a dead token without retrying (1 request)", () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.make()
        const client = yield* clientFor(server)

        const error = yield* Effect.flip(client.refresh(Redacted.make("never-issued")))
        expect(error._tag).toBe("TokenRejectedError")
        expect(error.message).toBe("Invalid Refresh Token: Refresh Token Not Found")
        expect((yield* server.stats).refreshRequests).toBe(1)
      }).pipe(Effect.provide(httpLayer)))

    it.scopedLive("rejects a reused token without retrying (1 request for the reuse)", () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.make()
        const seeded = yield* server.issueSession()
        const client = yield* clientFor(server)
        yield* client.refresh(seeded.refreshToken)

        const reuse = yield* Effect.either(client.refresh(seeded.refreshToken))
        expect(Either.isLeft(reuse) && reuse.left._tag).toBe("TokenRejectedError")
        expect(Either.isLeft(reuse) && reuse.left.message).toBe("Invalid Refresh Token: Already Used")
        expect(yield* server.stats).toMatchObject({ refreshRequests: 2, reuseRejections: 1 })
      }).pipe(Effect.provide(httpLayer)))
  })
}

describe("MockMoonServer.layerRefreshClient", () => {
  it.scopedLive("points a RefreshClient at the server in context", () =>
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

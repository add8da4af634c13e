/**
 * Regressions: requests signed by AuthHttpClient.
 *
 * One case per bug that was found and fixed, named by what broke, with the
 * commit that fixed it. Each case fails if its bug comes back. When you fix
 * a bug, add its case to the file of its area (test/regressions/*.test.ts).
 */
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Layer, Redacted, Stream } from "effect"
import { HttpClient, HttpClientRequest, HttpClientResponse } from "effect/http"
import { AuthHttpClient } from "moon-refresh"
import { seed } from "./harness.js"

describe("a 401", () => {
  // 7e0b1b3: every 401 was drained to free the connection, the one that could
  // not be replayed too: the caller got it back with its body already read.
  it.effect("a 401 to a request whose body is a stream is returned unread, so the caller can read why", () =>
    Effect.gen(function*() {
      const { managerLayer, mock, seeded } = yield* seed()
      const refusedHeader = `Bearer ${Redacted.value(seeded.accessToken)}`
      const api = HttpClient.make((request) =>
        Effect.sync(() => {
          const refused = request.headers["authorization"] === refusedHeader
          return HttpClientResponse.fromWeb(
            request,
            new Response(refused ? "{\"error\":\"invalid JWT\"}" : "{\"id\":\"user-1\"}", {
              status: refused ? 401 : 200
            })
          )
        })
      )
      const context = yield* Layer.build(
        AuthHttpClient.layer().pipe(
          Layer.provide(managerLayer({ autoRefresh: false })),
          Layer.provide(Layer.succeed(HttpClient.HttpClient, api))
        )
      )
      const http = Context.get(context, AuthHttpClient.AuthHttpClient)
      const upload = HttpClientRequest.post("https://api.example.com/upload").pipe(
        HttpClientRequest.bodyStream(Stream.make(new TextEncoder().encode("{\"a\":1}")))
      )
      const response = yield* http.execute(upload)
      expect(response.status).toBe(401)
      expect(yield* response.text).toBe("{\"error\":\"invalid JWT\"}")
      // Not replayed, but the session was refreshed for the next request.
      expect((yield* mock.stats).rotations).toBe(1)
    }))
})

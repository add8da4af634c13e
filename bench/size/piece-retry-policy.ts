// Bundle-size entry (section 5, attribution): effect-platform.ts retried with RefreshPolicy.defaultPolicy.
import { FetchHttpClient, HttpClient, HttpClientRequest } from "@effect/platform"
import { Effect } from "effect"
import * as RefreshError from "../../src/RefreshError.js"
import * as RefreshPolicy from "../../src/RefreshPolicy.js"

const program = Effect.gen(function*() {
  const client = yield* HttpClient.HttpClient
  const response = yield* client.execute(
    HttpClientRequest.post("https://beta.usemoon.ai/auth/refresh").pipe(
      HttpClientRequest.acceptJson,
      HttpClientRequest.bodyUnsafeJson({ refresh_token: "refresh-token" })
    )
  )
  return yield* response.json
}).pipe(
  Effect.mapError((error) => new RefreshError.TransportError({ reason: "Network", message: error.message })),
  Effect.retry({ schedule: RefreshPolicy.defaultPolicy, while: RefreshError.isRetryable })
)

Effect.runPromise(program.pipe(Effect.provide(FetchHttpClient.layer))).then(console.log, console.error)

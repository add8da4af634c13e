// Bundle-size entry (section 5, attribution): effect-http.ts retried with RefreshPolicy.defaultPolicy.
import { Effect } from "effect"
import { FetchHttpClient, HttpClient, HttpClientRequest } from "effect/http"
import * as RefreshError from "../../src/RefreshError.js"
import * as RefreshPolicy from "../../src/RefreshPolicy.js"

const program = Effect.gen(function*() {
  const client = yield* HttpClient.HttpClient
  const response = yield* client.execute(
    HttpClientRequest.post("https://beta.usemoon.ai/auth/refresh").pipe(
      HttpClientRequest.acceptJson,
      HttpClientRequest.bodyJsonUnsafe({ refresh_token: "refresh-token" })
    )
  )
  return yield* response.json
}).pipe(
  Effect.mapError((error) => new RefreshError.TransportError({ reason: "Network", message: error.message })),
  Effect.retry({ schedule: RefreshPolicy.defaultPolicy, while: RefreshError.isRetryable })
)

Effect.runPromise(program.pipe(Effect.provide(FetchHttpClient.layer))).then(console.log, console.error)

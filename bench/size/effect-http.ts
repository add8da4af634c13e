// Bundle-size entry (section 5): the same POST with effect and its HTTP client (effect/http) alone.
import { Effect } from "effect"
import { FetchHttpClient, HttpClient, HttpClientRequest } from "effect/http"

export const program = Effect.gen(function*() {
  const client = yield* HttpClient.HttpClient
  const response = yield* client.execute(
    HttpClientRequest.post("https://beta.usemoon.ai/auth/refresh").pipe(
      HttpClientRequest.acceptJson,
      HttpClientRequest.bodyJsonUnsafe({ refresh_token: "refresh-token" })
    )
  )
  const body = (yield* response.json) as { readonly access_token: string }
  return body.access_token
}).pipe(Effect.provide(FetchHttpClient.layer))

Effect.runPromise(program).then(console.log, console.error)

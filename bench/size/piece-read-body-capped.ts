// Bundle-size entry (section 5, attribution): effect-http.ts with the body read by readBodyCapped.
import { Effect } from "effect"
import { FetchHttpClient, HttpClient, HttpClientRequest } from "effect/http"
import { readBodyCapped } from "../../src/internal/http.js"

const program = Effect.gen(function*() {
  const client = yield* HttpClient.HttpClient
  const response = yield* client.execute(
    HttpClientRequest.post("https://beta.usemoon.ai/auth/refresh").pipe(
      HttpClientRequest.acceptJson,
      HttpClientRequest.bodyJsonUnsafe({ refresh_token: "refresh-token" })
    )
  )
  return yield* readBodyCapped(response)
})

Effect.runPromise(program.pipe(Effect.provide(FetchHttpClient.layer))).then(console.log, console.error)

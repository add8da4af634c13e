// Bundle-size entry (section 5): the same POST decoded with effect's Schema, as
// most Effect programs already do; the difference to moon-refresh.ts is then
// what only this library adds.
import { Effect, Schema } from "effect"
import { FetchHttpClient, HttpClient, HttpClientRequest, HttpClientResponse } from "effect/http"

const Body = Schema.Struct({
  access_token: Schema.String,
  refresh_token: Schema.String,
  expires_at: Schema.Number,
  user: Schema.Struct({ id: Schema.String })
})

export const program = Effect.gen(function*() {
  const client = yield* HttpClient.HttpClient
  const response = yield* client.execute(
    HttpClientRequest.post("https://beta.usemoon.ai/auth/refresh").pipe(
      HttpClientRequest.acceptJson,
      HttpClientRequest.bodyJsonUnsafe({ refresh_token: "refresh-token" })
    )
  )
  const body = yield* HttpClientResponse.schemaBodyJson(Body)(response)
  return body.access_token
}).pipe(Effect.provide(FetchHttpClient.layer))

Effect.runPromise(program).then(console.log, console.error)

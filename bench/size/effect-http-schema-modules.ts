// Bundle-size entry (section 5): effect-http-schema.ts written as Effect's own
// packages write their imports, one module path each ("effect/Schema") rather
// than the barrel ("effect"). esbuild cannot shake a namespace taken from the
// barrel, so this page is the smaller one, and our share over it the larger.
import * as Effect from "effect/Effect"
import * as FetchHttpClient from "effect/http/FetchHttpClient"
import * as HttpClient from "effect/http/HttpClient"
import * as HttpClientRequest from "effect/http/HttpClientRequest"
import * as HttpClientResponse from "effect/http/HttpClientResponse"
import * as Schema from "effect/Schema"

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

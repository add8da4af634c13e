// Bundle-size entry (section 5): the whole client side of the library, a
// SessionManager with a memory store and an AuthHttpClient over FetchHttpClient.
import { Effect, Layer } from "effect"
import { FetchHttpClient } from "effect/http"
import * as AuthHttpClient from "../../src/AuthHttpClient.js"
import * as RefreshClient from "../../src/RefreshClient.js"
import * as SessionManager from "../../src/SessionManager.js"
import * as SessionStore from "../../src/SessionStore.js"

const layer = AuthHttpClient.layer().pipe(
  Layer.provideMerge(SessionManager.layer()),
  Layer.provide(SessionStore.layerMemory()),
  Layer.provide(RefreshClient.layer()),
  Layer.provideMerge(FetchHttpClient.layer)
)

Effect.runPromise(
  Effect.gen(function*() {
    const client = yield* AuthHttpClient.AuthHttpClient
    const response = yield* client.get("https://beta.usemoon.ai/protected")
    return response.status
  }).pipe(Effect.scoped, Effect.provide(layer))
).then(console.log, console.error)

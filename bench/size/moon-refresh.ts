// Bundle-size entry (section 5): one refresh with RefreshClient over FetchHttpClient.
import { Effect, Layer, Redacted } from "effect"
import { FetchHttpClient } from "effect/http"
import * as RefreshClient from "../../src/RefreshClient.js"

const program = Effect.map(RefreshClient.refresh("refresh-token"), (session) => Redacted.value(session.accessToken))

Effect.runPromise(
  program.pipe(Effect.provide(RefreshClient.layer().pipe(Layer.provide(FetchHttpClient.layer))))
).then(console.log, console.error)

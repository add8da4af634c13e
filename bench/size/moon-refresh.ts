// Bundle-size entry (section 5): one refresh with RefreshClient over FetchHttpClient.
// Module imports, as Effect's own packages write them: on a page that imports
// from the barrel ("effect") they add nothing, and on a page of module imports
// a barrel import here would be counted as ours.
import * as Effect from "effect/Effect"
import * as FetchHttpClient from "effect/http/FetchHttpClient"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as RefreshClient from "../../src/RefreshClient.js"

export const program = Effect.map(
  RefreshClient.refresh("refresh-token"),
  (session) => Redacted.value(session.accessToken)
)
  .pipe(Effect.provide(RefreshClient.layer().pipe(Layer.provide(FetchHttpClient.layer))))

Effect.runPromise(program).then(console.log, console.error)

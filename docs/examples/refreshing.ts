// docs/01-refreshing.md: layers, options, the accessor and the service.
import { NodeHttpClient } from "@effect/platform-node"
import { Config, Duration, Effect, Layer, Redacted, References } from "effect"
import { FetchHttpClient } from "effect/http"
import { RefreshClient, RefreshPolicy } from "moon-refresh"
import { runMain } from "./run-main.js"

// [layer]
// Every option, set to its default.
export const RefreshLive = RefreshClient.layer({
  baseUrl: "https://beta.usemoon.ai",
  path: "/auth/refresh",
  policy: RefreshPolicy.defaultPolicy,
  timeout: "10 seconds"
}).pipe(Layer.provide(FetchHttpClient.layer))

// The same defaults, over Node's own HTTP stack (from @effect/platform-node),
// keeping connections alive: `NodeHttpClient.layerNodeHttp` opens one per request.
export const RefreshLiveNode = RefreshClient.layer().pipe(
  Layer.provide(NodeHttpClient.layerNodeHttpOptions({ keepAlive: true }))
)
// [/layer]

// [layerConfig]
// Each option from the Config this program names: the base URL from
// MOON_BASE_URL (else https://beta.usemoon.ai), the timeout from
// MOON_REFRESH_TIMEOUT. An option not named keeps its default.
export const RefreshFromConfig = RefreshClient.layerConfig({
  baseUrl: Config.String("MOON_BASE_URL").pipe(Config.withDefault(RefreshClient.defaultBaseUrl)),
  timeout: Config.Duration("MOON_REFRESH_TIMEOUT").pipe(Config.withDefault(Duration.seconds(10)))
}).pipe(Layer.provide(FetchHttpClient.layer))

// MOON_BASE_URL alone: the layer named for the variable it reads.
export const RefreshFromEnv = RefreshClient.layerFromEnv().pipe(Layer.provide(FetchHttpClient.layer))
// [/layerConfig]

// [accessor]
// The accessor uses the RefreshClient in context. It takes a Redacted or a
// string (wrapped in a Redacted at once).
export const refreshFromEnv = Effect.flatMap(Config.Redacted("MOON_REFRESH_TOKEN"), RefreshClient.refresh)

// The service itself takes a Redacted only.
export const viaService = (refreshToken: string) =>
  Effect.gen(function*() {
    const client = yield* RefreshClient.RefreshClient
    return yield* client.refresh(Redacted.make(refreshToken))
  })
// [/accessor]

// [run]
const program = Effect.gen(function*() {
  const session = yield* refreshFromEnv
  // Both tokens print as <redacted>.
  yield* Effect.log(session)
})

program.pipe(
  Effect.provide(RefreshFromConfig),
  // Shows the debug line logged for each failed attempt.
  Effect.provideService(References.MinimumLogLevel, "Debug"),
  runMain
)
// [/run]

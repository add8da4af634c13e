// docs/12-observability.md, "Prometheus": an Effect HTTP server whose
// GET /metrics serves the process's metrics, moon_refresh_* among them, in
// Prometheus' text format, beside the SessionManager that records them.
import { NodeHttpServer } from "@effect/platform-node"
import { Config, Console, Effect, Layer } from "effect"
import { FetchHttpClient, HttpClient, HttpRouter, HttpServer } from "effect/http"
import { PrometheusMetrics } from "effect/observability"
import { RefreshClient, SessionManager, SessionStore } from "moon-refresh"
import { createServer } from "node:http"
import { runMain } from "./run-main.js"

// [server]
// GET /metrics: every metric of the default registry (the one the library
// records into unless you provide a `Metric.MetricRegistry` of your own).
// A real server adds its own routes to the same router. Each scrape is not
// worth a log line: `disableLogger`.
export const MetricsServer = HttpRouter.serve(PrometheusMetrics.layerHttp({ path: "/metrics" }), {
  disableLogger: true
}).pipe(
  Layer.provideMerge(NodeHttpServer.layerConfig(createServer, {
    host: Config.String("HOST").pipe(Config.withDefault("127.0.0.1")),
    // 9464 is the port OpenTelemetry's Prometheus exporter uses; PORT=0 picks a free one.
    port: Config.Int("PORT").pipe(Config.withDefault(9464))
  }))
)
// [/server]

// [session]
// The session the metrics are about: a manager with its store and client, as in guide 4.
export const SessionLive = SessionManager.layer().pipe(
  Layer.provide(RefreshClient.layerFromEnv()),
  Layer.provide(SessionStore.layerMemory()),
  Layer.provide(FetchHttpClient.layer)
)
// [/session]

// Run as an example (`PORT=0 npx tsx docs/examples/prometheus.ts`), it signs in
// (one refresh), scrapes itself once as Prometheus would, prints the
// moon_refresh_* lines of the scrape (the histograms' _bucket lines left out)
// and stops. A real server keeps serving: `Layer.launch(MetricsServer)`.
const program = Effect.gen(function*() {
  yield* SessionManager.signInWithRefreshToken(yield* Config.Redacted("MOON_REFRESH_TOKEN"))
  const url = yield* HttpServer.addressFormattedWith((address) => Effect.succeed(`${address}/metrics`))
  const response = yield* HttpClient.get(url)
  const lines = (yield* response.text).split("\n").filter((line) => line.startsWith("moon_refresh_"))
  yield* Console.log(`GET /metrics: ${response.status} ${response.headers["content-type"]}`)
  for (const line of lines.filter((line) => !/^\w+_bucket\{/.test(line))) yield* Console.log(line)
  yield* Console.log(`(${lines.filter((line) => /^\w+_bucket\{/.test(line)).length} _bucket lines left out)`)
})

program.pipe(
  Effect.provide(Layer.mergeAll(SessionLive, MetricsServer, FetchHttpClient.layer)),
  runMain
)

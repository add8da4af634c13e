// docs/12-observability.md, "OpenTelemetry (OTLP)": the library's spans and
// metrics sent to an OpenTelemetry collector over OTLP/HTTP, through
// @effect/opentelemetry and the OpenTelemetry SDK.
import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import { OTLPMetricExporter } from "@opentelemetry/exporter-metrics-otlp-http"
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http"
import { PeriodicExportingMetricReader } from "@opentelemetry/sdk-metrics"
import { BatchSpanProcessor } from "@opentelemetry/sdk-trace-base"
import { Config, DateTime, Effect } from "effect"
import { FetchHttpClient } from "effect/http"
import { RefreshClient } from "moon-refresh"
import { runMain } from "./run-main.js"

// [telemetry]
// The exporters post OTLP/HTTP JSON to $OTEL_EXPORTER_OTLP_ENDPOINT/v1/traces
// and /v1/metrics (default http://localhost:4318, a collector on this host).
// Metrics go out every 10 s, and once more when the layer is released; spans
// in batches, flushed on release too.
export const TelemetryLive = NodeSdk.layer(() => ({
  resource: { serviceName: "my-app" },
  spanProcessor: new BatchSpanProcessor(new OTLPTraceExporter()),
  metricReader: new PeriodicExportingMetricReader({
    exporter: new OTLPMetricExporter(),
    exportIntervalMillis: 10_000
  })
}))
// [/telemetry]

// [run]
const program = Effect.gen(function*() {
  const session = yield* RefreshClient.refresh(yield* Config.Redacted("MOON_REFRESH_TOKEN"))
  yield* Effect.log(`refreshed: the access token is good until ${DateTime.formatIso(session.expiresAt)}`)
})

program.pipe(
  Effect.provide(RefreshClient.layerFromEnv()),
  Effect.provide(FetchHttpClient.layer),
  // Provided around everything else: released last, so what the program
  // recorded is exported before the process ends.
  Effect.provide(TelemetryLive),
  runMain
)
// [/run]

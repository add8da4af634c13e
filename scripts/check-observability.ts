/**
 * What `npm run check:examples` asserts about the observability examples of
 * docs/12-observability.md, beyond their exit codes:
 *
 * - docs/examples/otlp.ts posts OTLP/HTTP JSON to a receiver of this module on
 *   127.0.0.1 (`OTEL_EXPORTER_OTLP_ENDPOINT`): the `moon-refresh/refresh` span
 *   and the moon_refresh_* metrics of its run must arrive, with no token in them.
 * - docs/examples/prometheus.ts serves /metrics on 127.0.0.1 (`PORT=0`), scrapes
 *   itself and prints the moon_refresh_* lines: they must be there, with no token.
 *
 * The metric assertions are by name and label only (docs/12-observability.md's
 * catalog); each says which one failed.
 */
import * as Http from "node:http"
import type { AddressInfo } from "node:net"
import * as Zlib from "node:zlib"

// ---------------------------------------------------------------------------
// An OTLP/HTTP JSON receiver: what a collector would get, kept in memory
// ---------------------------------------------------------------------------

interface OtlpAttribute {
  readonly key: string
  readonly value: { readonly stringValue?: string; readonly intValue?: number | string; readonly boolValue?: boolean }
}

interface OtlpSpan {
  readonly name: string
  readonly kind?: number
  readonly attributes?: ReadonlyArray<OtlpAttribute>
}

interface OtlpPoint {
  readonly attributes?: ReadonlyArray<OtlpAttribute>
  readonly asInt?: number | string
  readonly asDouble?: number
  readonly count?: number | string
  readonly sum?: number
}

interface OtlpMetric {
  readonly name: string
  readonly sum?: { readonly dataPoints: ReadonlyArray<OtlpPoint> }
  readonly gauge?: { readonly dataPoints: ReadonlyArray<OtlpPoint> }
  readonly histogram?: { readonly dataPoints: ReadonlyArray<OtlpPoint> }
}

export interface OtlpReceiver {
  readonly url: string
  /** Every request body received since the last `reset`, as text. */
  readonly bodies: Array<string>
  readonly spans: () => ReadonlyArray<OtlpSpan>
  readonly metrics: () => ReadonlyArray<OtlpMetric>
  readonly reset: () => void
  readonly close: () => Promise<void>
}

export const otlpReceiver = async (): Promise<OtlpReceiver> => {
  const bodies: Array<string> = []
  const traces: Array<{ resourceSpans?: Array<{ scopeSpans?: Array<{ spans?: Array<OtlpSpan> }> }> }> = []
  const metrics: Array<{ resourceMetrics?: Array<{ scopeMetrics?: Array<{ metrics?: Array<OtlpMetric> }> }> }> = []
  const server = Http.createServer((req, res) => {
    const chunks: Array<Buffer> = []
    req.on("data", (chunk: Buffer) => chunks.push(chunk))
    req.on("end", () => {
      const raw = Buffer.concat(chunks)
      const body = (req.headers["content-encoding"] === "gzip" ? Zlib.gunzipSync(raw) : raw).toString("utf8")
      bodies.push(body)
      // JSON only: the examples' exporters send JSON (a protobuf body would fail the assertions, as it should).
      try {
        if (req.url === "/v1/traces") traces.push(JSON.parse(body))
        if (req.url === "/v1/metrics") metrics.push(JSON.parse(body))
      } catch {
        // kept in `bodies`; the assertions say what is missing
      }
      res.writeHead(200, { "content-type": "application/json" }).end("{}")
    })
  })
  await new Promise<void>((listening) => server.listen(0, "127.0.0.1", listening))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    bodies,
    spans: () =>
      traces.flatMap((t) => t.resourceSpans ?? []).flatMap((r) => r.scopeSpans ?? []).flatMap((s) => s.spans ?? []),
    metrics: () =>
      metrics.flatMap((m) => m.resourceMetrics ?? []).flatMap((r) => r.scopeMetrics ?? []).flatMap((s) =>
        s.metrics ?? []
      ),
    reset: () => {
      bodies.length = 0
      traces.length = 0
      metrics.length = 0
    },
    close: () => new Promise<void>((closed) => server.close(() => closed()))
  }
}

const attributes = (list: ReadonlyArray<OtlpAttribute> | undefined): Record<string, string> =>
  Object.fromEntries(
    (list ?? []).map(({ key, value }) => [key, String(value.stringValue ?? value.intValue ?? value.boolValue)])
  )

const sameLabels = (found: Record<string, string>, wanted: Record<string, string>) =>
  Object.entries(wanted).every(([key, value]) => found[key] === value)

// ---------------------------------------------------------------------------
// Assertions
// ---------------------------------------------------------------------------

/** Where a missing series is defined, for whoever reads the failure. */
const needsMetrics = " (see src/internal/metrics.ts)"

// The mock server's access tokens are JWTs: every one starts with this header.
const jwtHeader = Buffer.from(JSON.stringify({ alg: "HS256", typ: "JWT" })).toString("base64url")

const noToken = (text: string, refreshToken: string, where: string): Array<string> =>
  [refreshToken, jwtHeader].filter((token) => text.includes(token)).map(() => `a token in ${where}`)

interface Run {
  readonly stdout: string
  readonly refreshToken: string
  readonly otlp: OtlpReceiver
  /** Run again with the token the first run spent: the refresh is rejected. */
  readonly spent: boolean
}

const otlpPoints = (otlp: OtlpReceiver, name: string) =>
  otlp.metrics().filter((metric) => metric.name === name).flatMap((metric) =>
    (metric.sum ?? metric.gauge ?? metric.histogram)?.dataPoints ?? []
  ).map((point) => ({
    labels: attributes(point.attributes),
    value: Number(point.asInt ?? point.asDouble ?? point.count)
  }))

const otlpMetric = (otlp: OtlpReceiver, name: string, labels: Record<string, string>, value: number) =>
  otlpPoints(otlp, name).some((point) => sameLabels(point.labels, labels) && point.value === value)
    ? []
    : [`no OTLP data point ${name} ${JSON.stringify(labels)} = ${value}${needsMetrics}`]

const otlp = ({ otlp, refreshToken, spent }: Run): Array<string> => {
  const refresh = otlp.spans().filter((span) => span.name === "moon-refresh/refresh")
  const outcome = spent ? "TokenRejectedError" : "success"
  return [
    ...(refresh.some((span) => span.kind === 3 && attributes(span.attributes)["moon.refresh.outcome"] === outcome)
      ? []
      : [`no moon-refresh/refresh span (kind client, moon.refresh.outcome ${outcome}) received over OTLP`]),
    ...noToken(otlp.bodies.join("\n"), refreshToken, "what the OTLP receiver got"),
    ...(spent
      ? [
        ...otlpMetric(otlp, "moon_refresh_refreshes_total", { outcome: "rejected" }, 1),
        ...otlpMetric(otlp, "moon_refresh_reuse_rejections_total", {}, 1)
      ]
      : [
        ...otlpMetric(otlp, "moon_refresh_refreshes_total", { outcome: "succeeded" }, 1),
        ...otlpMetric(otlp, "moon_refresh_refresh_attempts_total", { outcome: "succeeded" }, 1),
        // A histogram's point: its count.
        ...otlpMetric(otlp, "moon_refresh_refresh_duration_seconds", { outcome: "succeeded" }, 1)
      ])
  ]
}

// A line of the Prometheus text: name, labels in any order, value.
const promLine = (stdout: string, name: string, labels: Record<string, string>, value: string) => {
  const found = stdout.split("\n").some((line) => {
    const match = line.match(/^(\w+)(?:\{(.*)\})? (\S+)$/)
    if (match === null || match[1] !== name || match[3] !== value) return false
    const present = Object.fromEntries([...(match[2] ?? "").matchAll(/(\w+)="([^"]*)"/g)].map(([, k, v]) => [k, v]))
    return sameLabels(present, labels)
  })
  return found ? [] : [`no /metrics line ${name} ${JSON.stringify(labels)} ${value}${needsMetrics}`]
}

const prometheus = ({ refreshToken, spent, stdout }: Run): Array<string> =>
  spent ? [] : [
    ...(/^GET \/metrics: 200 text\/plain; version=0\.0\.4/m.test(stdout)
      ? []
      : ["GET /metrics did not answer 200 with Prometheus' text format"]),
    ...noToken(stdout, refreshToken, "the /metrics scrape"),
    ...promLine(stdout, "moon_refresh_refreshes_total", { outcome: "succeeded" }, "1"),
    ...promLine(stdout, "moon_refresh_refresh_attempts_total", { outcome: "succeeded" }, "1"),
    ...promLine(stdout, "moon_refresh_refresh_duration_seconds_count", { outcome: "succeeded" }, "1"),
    // The sign-in took the memory store's lock and wrote the session: the
    // label values are the spec's, the counts left to the engine.
    ...(/^moon_refresh_store_operations_total\{[^}]*store="memory"/m.test(stdout)
      ? []
      : [`no /metrics line moon_refresh_store_operations_total {"store":"memory"}${needsMetrics}`])
  ]

/** The examples with assertions of their own, by file name in docs/examples/. */
export const expectations: Record<string, (run: Run) => Array<string>> = {
  "otlp.ts": otlp,
  "prometheus.ts": prometheus
}

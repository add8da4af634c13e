/**
 * The moon_refresh_* metrics of the current registry as a compact table, one
 * line per series: name, labels, and the value (a counter's count, a gauge's
 * value, a histogram's count and sum). `npm run demo` ends with it and the
 * soak writes it into its report, so the metrics of docs/12-observability.md
 * are seen with the numbers of a real run.
 *
 * It reads `Metric.snapshot` and keeps the ids by their prefix: whatever
 * metrics the library records show up, with no list of names to keep in step.
 */
import { Effect, Metric } from "effect"

const prefix = "moon_refresh_"

const labels = (attributes: Metric.Metric.AttributeSet | undefined): string =>
  Object.entries(attributes ?? {}).map(([key, value]) => `${key}=${value}`).join(" ")

// Seconds to the millisecond; counts as they are.
const number = (n: number | bigint) => typeof n === "bigint" || Number.isInteger(n) ? `${n}` : n.toFixed(3)

const value = (snapshot: Metric.Metric.Snapshot): string => {
  switch (snapshot.type) {
    case "Counter":
      return number(snapshot.state.count)
    case "Gauge":
      return number(snapshot.state.value)
    case "Histogram":
    case "Summary":
      return `count ${snapshot.state.count}, sum ${number(snapshot.state.sum)}`
    case "Frequency":
      return [...snapshot.state.occurrences].map(([key, n]) => `${key} ${n}`).join(", ")
  }
}

/**
 * The table's lines, without a heading; one line saying so when no
 * moon_refresh_* metric has been recorded.
 */
export const metricsTable: Effect.Effect<ReadonlyArray<string>> = Effect.map(Metric.snapshot, (snapshot) => {
  const rows = snapshot
    .filter((metric) => metric.id.startsWith(prefix))
    .map((metric) => [metric.id, labels(metric.attributes), value(metric)] as const)
    .sort(([a, x], [b, y]) => a.localeCompare(b) || x.localeCompare(y))
  if (rows.length === 0) return [`(no ${prefix}* metric recorded)`]
  const name = Math.max(...rows.map(([id]) => id.length))
  const label = Math.max(...rows.map(([, text]) => text.length))
  return rows.map(([id, text, shown]) => `${id.padEnd(name)}  ${text.padEnd(label)}  ${shown}`.trimEnd())
})

/**
 * The metrics of the library (`Effect`'s `Metric`), named `moon_refresh_*`,
 * and the one place that records them. The public `Metrics` module documents
 * each; this one defines them and what moves them.
 *
 * Every label is one of a few fixed words: a series per key, per token or per
 * URL would grow without bound (and leak what a label must never carry).
 *
 * Each labelled series is its own metric value, built once with its labels
 * (`Metric.counter(name, { attributes })`): recording it is a registry lookup,
 * where `Metric.withAttributes` would add the labels to a new context at each
 * update. Both name the same series: `Metric.withAttributes(refreshes, { outcome:
 * "succeeded" })` reads what {@link refreshOutcome} wrote.
 *
 * What a service records goes to the metric registry of the context it was
 * built in (its layer's), captured then: its refreshes and writes run in
 * fibers of its own, and its callers may run in contexts of their own.
 *
 * Not public API: the package's exports keep `internal/` private.
 */
import * as Cause from "effect/Cause"
import type * as Context from "effect/Context"
import * as Exit from "effect/Exit"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import type * as RefreshError from "../RefreshError.js"
import type * as SessionStore from "../SessionStore.js"

/** Histogram boundaries of every duration, in seconds. */
export const durationBoundaries: ReadonlyArray<number> = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

type Labels = Metric.Metric.AttributeSet

const counterOf = (name: string, description: string) => (attributes?: Labels) =>
  Metric.counter(name, { description, incremental: true, ...(attributes === undefined ? {} : { attributes }) })

const histogramOf = (name: string, description: string) => (attributes?: Labels) =>
  Metric.histogram(name, {
    description,
    boundaries: durationBoundaries,
    ...(attributes === undefined ? {} : { attributes })
  })

const gaugeOf = (name: string, description: string) => (attributes?: Labels) =>
  Metric.gauge(name, { description, ...(attributes === undefined ? {} : { attributes }) })

/** One metric per value of one label, built once. */
const byLabel = <const L extends string, M>(
  make: (attributes: Labels) => M,
  label: string,
  values: ReadonlyArray<L>
): Record<L, M> => Object.fromEntries(values.map((value) => [value, make({ [label]: value })])) as Record<L, M>

// ---------------------------------------------------------------------------
// Refreshes (RefreshClient)
// ---------------------------------------------------------------------------

/** How a refresh, or one of its POSTs, ended. */
export type RefreshOutcome = "succeeded" | "rejected" | "transient" | "malformed"

export const refreshOutcomes: ReadonlyArray<RefreshOutcome> = ["succeeded", "rejected", "transient", "malformed"]

const refreshesOf = counterOf(
  "moon_refresh_refreshes_total",
  "RefreshClient.refresh calls by final outcome, after their retries"
)
const attemptsOf = counterOf("moon_refresh_refresh_attempts_total", "POSTs to /auth/refresh by outcome")
const refreshDurationOf = histogramOf(
  "moon_refresh_refresh_duration_seconds",
  "One POST to /auth/refresh, from sending it to the decoded session or the error, in seconds"
)

export const refreshes = refreshesOf()
export const refreshAttempts = attemptsOf()
export const refreshDuration = refreshDurationOf()
export const reuseRejections = counterOf(
  "moon_refresh_reuse_rejections_total",
  "Refreshes rejected because the refresh token was already used or its session revoked"
)()

const refreshesBy = byLabel(refreshesOf, "outcome", refreshOutcomes)
const attemptsBy = byLabel(attemptsOf, "outcome", refreshOutcomes)
const refreshDurationBy = byLabel(refreshDurationOf, "outcome", refreshOutcomes)

/**
 * A rejection that says the token was spent already, or its session revoked
 * for a reuse: GoTrue's `refresh_token_already_used` ("Invalid Refresh Token:
 * Already Used"), and the revocation that follows it.
 */
export const isReuse = (error: RefreshError.TokenRejectedError): boolean => reuse.test(error.message)

// "Already Used" (GoTrue, Moon) or a word of reuse; not "revoked", which GoTrue also says of a token
// revoked by a newer login or an expired session, which are no reuse.
const reuse = /already[_ -]used|reuse/i

/** The outcome of a refresh's error; `undefined` for an interruption or a defect, which are not counted. */
export const refreshOutcomeOf = (exit: Exit.Exit<unknown, RefreshError.RefreshError>): RefreshOutcome | undefined => {
  if (Exit.isSuccess(exit)) return "succeeded"
  const error = Option.getOrUndefined(Cause.findErrorOption(exit.cause))
  switch (error?._tag) {
    case undefined:
      return undefined
    case "TokenRejectedError":
      return "rejected"
    case "MalformedResponseError":
      return "malformed"
    default:
      return "transient"
  }
}

/** A refresh call ended (after its retries). */
export const refreshEnded = (
  exit: Exit.Exit<unknown, RefreshError.RefreshError>,
  context: Context.Context<never>
): void => {
  const outcome = refreshOutcomeOf(exit)
  if (outcome === undefined) return
  refreshesBy[outcome].updateUnsafe(1, context)
  if (outcome === "rejected" && Exit.isFailure(exit)) {
    const error = Option.getOrUndefined(Cause.findErrorOption(exit.cause))
    if (error?._tag === "TokenRejectedError" && isReuse(error)) reuseRejections.updateUnsafe(1, context)
  }
}

/** One POST ended, `seconds` after it was sent. */
export const attemptEnded = (
  exit: Exit.Exit<unknown, RefreshError.RefreshError>,
  seconds: number,
  context: Context.Context<never>
): void => {
  const outcome = refreshOutcomeOf(exit)
  if (outcome === undefined) return
  attemptsBy[outcome].updateUnsafe(1, context)
  refreshDurationBy[outcome].updateUnsafe(seconds, context)
}

// ---------------------------------------------------------------------------
// Sign-outs (the session engine)
// ---------------------------------------------------------------------------

/** Why a session ended, as the engine's `SignOutReason` says it. */
export type SignOutReason = "user" | "rejected" | "reused" | "elsewhere"

export const signOutReasons: ReadonlyArray<SignOutReason> = ["user", "rejected", "reused", "elsewhere"]

const signOutsOf = counterOf("moon_refresh_sign_outs_total", "Sign-outs the session engine committed, by reason")
export const signOuts = signOutsOf()
const signOutsBy = byLabel(signOutsOf, "reason", signOutReasons)

export const signedOut = (reason: SignOutReason, context: Context.Context<never>): void =>
  signOutsBy[reason].updateUnsafe(1, context)

// ---------------------------------------------------------------------------
// Stores (the engine's operations on them)
// ---------------------------------------------------------------------------

/** The kind of a store, from the constructor that built it; `custom` for any other. */
export type StoreKind = "memory" | "key_value" | "file" | "redis" | "browser" | "custom"

export const storeKinds: ReadonlyArray<StoreKind> = ["memory", "key_value", "file", "redis", "browser", "custom"]

export type StoreOperation = "read" | "write" | "clear" | "lock"

export const storeOperations: ReadonlyArray<StoreOperation> = ["read", "write", "clear", "lock"]

/**
 * `conflict`: a fenced write refused because the record moved on (another
 * holder wrote first): the store answered, and said no.
 */
export type StoreOutcome = "ok" | "error" | "timeout" | "conflict"

export const storeOutcomes: ReadonlyArray<StoreOutcome> = ["ok", "error", "timeout", "conflict"]

const kinds = new WeakMap<SessionStore.Service, StoreKind>()

/** Notes which of the package's constructors built `store` (a store spread into another is `custom`). */
export const markStore = <S extends SessionStore.Service>(store: S, kind: StoreKind): S => {
  kinds.set(store, kind)
  return store
}

export const storeKindOf = (store: SessionStore.Service): StoreKind => kinds.get(store) ?? "custom"

const storeOperationsOf = counterOf(
  "moon_refresh_store_operations_total",
  "Store operations the session engine made, by store kind, operation and outcome"
)
const storeDurationOf = histogramOf(
  "moon_refresh_store_operation_duration_seconds",
  "One store operation of the session engine, from asking to its outcome, in seconds"
)
const lockWaitOf = histogramOf(
  "moon_refresh_lock_wait_seconds",
  "From asking for the store's lock to holding it (or giving up), in seconds"
)

export const storeOperationsTotal = storeOperationsOf()
export const storeOperationDuration = storeDurationOf()
export const lockWait = lockWaitOf()

// Built on first use: 6 kinds x 4 operations x 4 outcomes is more than a
// program ever records.
const series = new Map<
  string,
  { readonly count: Metric.Counter<number>; readonly duration: Metric.Histogram<number> }
>()
const lockWaits = new Map<StoreKind, Metric.Histogram<number>>()

/** A store operation ended, `seconds` after it was asked for. */
export const storeOperationEnded = (
  kind: StoreKind,
  operation: StoreOperation,
  outcome: StoreOutcome,
  seconds: number,
  context: Context.Context<never>
): void => {
  const id = `${kind}/${operation}/${outcome}`
  let found = series.get(id)
  if (found === undefined) {
    found = {
      count: storeOperationsOf({ store: kind, operation, outcome }),
      duration: storeDurationOf({ store: kind, operation })
    }
    series.set(id, found)
  }
  found.count.updateUnsafe(1, context)
  found.duration.updateUnsafe(seconds, context)
  if (operation === "lock") {
    let wait = lockWaits.get(kind)
    if (wait === undefined) {
      wait = lockWaitOf({ store: kind })
      lockWaits.set(kind, wait)
    }
    wait.updateUnsafe(seconds, context)
  }
}

// ---------------------------------------------------------------------------
// AuthHttpClient
// ---------------------------------------------------------------------------

export const requestsSigned = counterOf(
  "moon_refresh_http_requests_signed_total",
  "AuthHttpClient requests sent with the access token"
)()

export type ReplayOutcome = "succeeded" | "failed"

export const replayOutcomes: ReadonlyArray<ReplayOutcome> = ["succeeded", "failed"]

const replaysOf = counterOf(
  "moon_refresh_http_replays_total",
  "AuthHttpClient 401s answered by a refresh and one replay, by outcome"
)
export const replays = replaysOf()
const replaysBy = byLabel(replaysOf, "outcome", replayOutcomes)

export const replayed = (outcome: ReplayOutcome, context: Context.Context<never>): void =>
  replaysBy[outcome].updateUnsafe(1, context)

const unsignedOf = counterOf(
  "moon_refresh_http_requests_unsigned_total",
  "AuthHttpClient requests sent without the access token, by reason"
)
export const requestsUnsigned = unsignedOf()
export const requestsUnsignedNotAllowed = unsignedOf({ reason: "origin_not_allowed" })

// ---------------------------------------------------------------------------
// SessionPool (gauges read when the registry is read: nothing is recorded as the pool works)
// ---------------------------------------------------------------------------

export const poolSessions = gaugeOf(
  "moon_refresh_pool_sessions",
  "SessionPool sessions in memory (live), and of those the idle ones"
)()
export const poolRefreshesInFlight = gaugeOf(
  "moon_refresh_pool_refreshes_in_flight",
  "SessionPool refreshes (whole refresh calls, retries included) running under the pool's cap"
)()
export const poolRefreshesQueued = gaugeOf(
  "moon_refresh_pool_refreshes_queued",
  "SessionPool refreshes waiting for a place under the pool's cap"
)()
export const poolCircuitState = gaugeOf(
  "moon_refresh_pool_circuit_state",
  "SessionPool circuit: 0 closed, 1 half-open (the pause is over, no refresh has succeeded since), 2 open"
)()
const tripsOf = counterOf("moon_refresh_pool_circuit_trips_total", "Times a SessionPool's circuit opened")
export const poolCircuitTrips = tripsOf()

/** What a pool shows: read at each read of the registry. */
export interface PoolReadings {
  readonly live: () => number
  readonly idle: () => number
  readonly inFlight: () => number
  readonly queued: () => number
  /** 0 closed, 1 half-open, 2 open. */
  readonly circuit: () => number
}

/**
 * Registers the gauges of the pool `name` in the registry of `context`, read
 * from `readings` whenever the registry is read (`Metric.value`,
 * `Metric.snapshot`, an exporter): the pool records nothing as it works.
 * Returns what removes them (when the pool closes). A second pool of the same
 * name in one registry replaces the first one's gauges.
 */
export const registerPool = (
  name: string,
  readings: PoolReadings,
  context: Context.Context<never>
): () => void => {
  const gauge = (metric: Metric.Gauge<number>, labels: Labels, read: () => number) =>
    Metric.registerUnsafe(Metric.withAttributes(metric, { pool: name, ...labels }), context, {
      get: () => ({ value: read() }),
      update: () => {},
      modify: () => {}
    })
  const registrations = [
    gauge(poolSessions, { state: "live" }, readings.live),
    gauge(poolSessions, { state: "idle" }, readings.idle),
    gauge(poolRefreshesInFlight, {}, readings.inFlight),
    gauge(poolRefreshesQueued, {}, readings.queued),
    gauge(poolCircuitState, {}, readings.circuit)
  ]
  return () => registrations.forEach((registration) => registration.remove())
}

/** The circuit of the pool `name` opened. */
export const poolTripped = (name: string, context: Context.Context<never>): void =>
  tripsOf({ pool: name }).updateUnsafe(1, context)

/** Every metric of the library, unlabelled (each label set is a series of one of these). */
export const all: ReadonlyArray<Metric.Metric<never, unknown>> = [
  refreshes,
  refreshAttempts,
  refreshDuration,
  reuseRejections,
  signOuts,
  storeOperationsTotal,
  storeOperationDuration,
  lockWait,
  requestsSigned,
  replays,
  requestsUnsigned,
  poolSessions,
  poolRefreshesInFlight,
  poolRefreshesQueued,
  poolCircuitState,
  poolCircuitTrips
]

export const names: ReadonlyArray<string> = all.map((metric) => metric.id)

const prefix = "moon_refresh_"

/** The library's series in `snapshot`. */
export const ours = (snapshot: ReadonlyArray<Metric.Metric.Snapshot>): ReadonlyArray<Metric.Metric.Snapshot> =>
  snapshot.filter((entry) => entry.id.startsWith(prefix))

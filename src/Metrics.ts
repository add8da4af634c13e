/**
 * The library's metrics, as Effect `Metric`s named `moon_refresh_*`: what its
 * refreshes, stores, `AuthHttpClient`s and `SessionPool`s did. Export them
 * with whatever reads Effect's metric registry (an OpenTelemetry metrics
 * layer, a Prometheus endpoint of your own over `Metric.snapshot`).
 *
 * Where they go: to the `Metric.MetricRegistry` of the context each service
 * was built in (its layer's), whichever fiber records them: a manager's
 * refreshes and writes run in fibers of its own. Provide a registry around the
 * layers (`Effect.provideService(Metric.MetricRegistry, registry)`), or leave
 * Effect's default one.
 *
 * Labels are a few fixed words each (an outcome, a store kind, an operation,
 * a reason, a pool's name): never a user's key, a token, a URL or an error
 * message. Durations are histograms in seconds, on the `Clock` of the
 * service's context, with the buckets {@link durationBoundaries}.
 *
 * Reading a fresh token (`accessToken`, `session` of a token that needs no
 * refresh) records nothing: the metrics move on refreshes, store operations
 * and requests, never on reads.
 *
 * Each export below is the metric without labels; a labelled series is read
 * with `Metric.withAttributes` (the labels the TSDoc names):
 *
 * @example
 * ```ts
 * import { Effect, Metric } from "effect"
 * import { Metrics } from "moon-refresh"
 *
 * const program = Effect.gen(function*() {
 *   // The refreshes that succeeded, so far.
 *   const succeeded = yield* Metric.value(Metric.withAttributes(Metrics.refreshes, { outcome: "succeeded" }))
 *   // Every series of the library, labels included.
 *   const all = yield* Metrics.snapshot
 *   return { succeeded: succeeded.count, series: all.length }
 * })
 * ```
 *
 * The spans the library opens are listed in `docs/12-observability.md#spans`.
 *
 * @since 1.1.0
 */
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as internal from "./internal/metrics.js"

/**
 * The buckets of every duration histogram, in seconds: 0.005, 0.01, 0.025,
 * 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 and 30 (and above).
 *
 * @since 1.1.0
 * @category constants
 */
export const durationBoundaries: ReadonlyArray<number> = internal.durationBoundaries

/**
 * How a refresh (or one POST of it) ended: `succeeded`; `rejected` (the
 * server refused the refresh token: `TokenRejectedError`); `transient` (the
 * network, a timeout, a 5xx, a 429 or any other answer that is not a verdict
 * on the token: `TransportError`, `ServerError`, `RateLimitedError`);
 * `malformed` (a 2xx whose body is not a session: `MalformedResponseError`).
 *
 * @since 1.1.0
 * @category models
 */
export type RefreshOutcome = internal.RefreshOutcome

/**
 * Why a session ended: `user` (`signOut`), `rejected` (the server rejected
 * the refresh token), `reused` (rejected as already used, or its session
 * revoked for a reuse), `elsewhere` (another holder of the store signed out,
 * or had the token rejected).
 *
 * @since 1.1.0
 * @category models
 */
export type SignOutReason = internal.SignOutReason

/**
 * The store a metric is about, by the constructor that built it: `memory`
 * (`SessionStore.makeMemory`, `layerMemoryKeyed`), `key_value`
 * (`SessionStore.makeKeyValueStore`, `PrivateKeyValueStore`), `file`
 * (`NodeSessionStore`), `redis` (`RedisSessionStore`), `browser`
 * (`BrowserSessionStore`); `custom` for any other (`SessionStore.make`, or a
 * store of the package spread into a new object).
 *
 * @since 1.1.0
 * @category models
 */
export type StoreKind = internal.StoreKind

/**
 * A store operation of the session engine: `read` (the record), `write` (a
 * session), `clear` (a sign-out), `lock` (waiting for the store's lock).
 *
 * @since 1.1.0
 * @category models
 */
export type StoreOperation = internal.StoreOperation

/**
 * How a store operation ended: `ok`; `error` (the store failed);
 * `timeout` (no answer within `storeTimeout`, or the lock not granted within
 * `lockTimeout`); `conflict` (a fenced write refused: another holder wrote
 * first).
 *
 * @since 1.1.0
 * @category models
 */
export type StoreOutcome = internal.StoreOutcome

/**
 * `moon_refresh_refreshes_total`: a counter of refreshes. Labels:
 * `outcome` ({@link RefreshOutcome}). Moves by one at the end of each
 * `RefreshClient.refresh` call, after its retries, by its final outcome (a
 * blank token refused before any POST counts as `rejected`). An interrupted
 * refresh is not counted.
 *
 * @since 1.1.0
 * @category metrics
 */
export const refreshes: Metric.Counter<number> = internal.refreshes

/**
 * `moon_refresh_refresh_attempts_total`: a counter of POSTs. Labels:
 * `outcome` ({@link RefreshOutcome}). Moves by one for each POST to
 * `/auth/refresh`, each retry included: a 503 ridden out is a `transient`
 * attempt then a `succeeded` one.
 *
 * @since 1.1.0
 * @category metrics
 */
export const refreshAttempts: Metric.Counter<number> = internal.refreshAttempts

/**
 * `moon_refresh_refresh_duration_seconds`: a histogram, in seconds. Labels:
 * `outcome` ({@link RefreshOutcome}). One observation per POST: from sending
 * it to the decoded session (or the error, a timeout's included).
 *
 * @since 1.1.0
 * @category metrics
 */
export const refreshDuration: Metric.Histogram<number> = internal.refreshDuration

/**
 * `moon_refresh_reuse_rejections_total`: a counter of rejections. No
 * labels. Moves by one for each refresh rejected because its refresh token was
 * already used, or its session revoked for a reuse (GoTrue's
 * `refresh_token_already_used`): a sign that two holders spent one token.
 * Such a refresh also counts in {@link refreshes} as `rejected`.
 *
 * @since 1.1.0
 * @category metrics
 */
export const reuseRejections: Metric.Counter<number> = internal.reuseRejections

/**
 * `moon_refresh_sign_outs_total`: a counter of sign-outs. Labels: `reason`
 * ({@link SignOutReason}). Moves by one for each sign-out a `SessionManager`
 * or a `SessionPool`'s session takes (each `SignedOut` event).
 *
 * @since 1.1.0
 * @category metrics
 */
export const signOuts: Metric.Counter<number> = internal.signOuts

/**
 * `moon_refresh_store_operations_total`: a counter of operations. Labels:
 * `store` ({@link StoreKind}), `operation` ({@link StoreOperation}),
 * `outcome` ({@link StoreOutcome}). Moves by one for each store operation a
 * `SessionManager` or `SessionPool` makes (a write retried counts each try).
 *
 * @since 1.1.0
 * @category metrics
 */
export const storeOperations: Metric.Counter<number> = internal.storeOperationsTotal

/**
 * `moon_refresh_store_operation_duration_seconds`: a histogram, in seconds.
 * Labels: `store`, `operation`. One observation per store operation, from
 * asking to its outcome (for `lock`, the wait for the lock).
 *
 * @since 1.1.0
 * @category metrics
 */
export const storeOperationDuration: Metric.Histogram<number> = internal.storeOperationDuration

/**
 * `moon_refresh_lock_wait_seconds`: a histogram, in seconds. Labels:
 * `store`. One observation each time a refresh asks for the store's lock:
 * from asking to holding it, or to giving up (`lockTimeout`). Long waits mean
 * other holders (processes, tabs, managers) refresh under it.
 *
 * @since 1.1.0
 * @category metrics
 */
export const lockWait: Metric.Histogram<number> = internal.lockWait

/**
 * `moon_refresh_http_requests_signed_total`: a counter of requests. No
 * labels. Moves by one for each request an `AuthHttpClient` sends with the
 * access token (a replay is counted by {@link replays}, not here).
 *
 * @since 1.1.0
 * @category metrics
 */
export const requestsSigned: Metric.Counter<number> = internal.requestsSigned

/**
 * `moon_refresh_http_replays_total`: a counter of requests. Labels:
 * `outcome`: `succeeded` (the replayed request got an answer other than
 * 401) or `failed` (the refresh failed, the replay failed, or it got a 401
 * again). Moves by one for each 401 an `AuthHttpClient` answers with a
 * refresh and one replay (a request with a stream body is not replayed, and
 * not counted).
 *
 * @since 1.1.0
 * @category metrics
 */
export const replays: Metric.Counter<number> = internal.replays

/**
 * `moon_refresh_http_requests_unsigned_total`: a counter of requests.
 * Labels: `reason`: `origin_not_allowed`. Moves by one for each request an
 * `AuthHttpClient` sends without the token because its origin is not in
 * `origins`.
 *
 * @since 1.1.0
 * @category metrics
 */
export const requestsUnsigned: Metric.Counter<number> = internal.requestsUnsigned

/**
 * `moon_refresh_pool_sessions`: a gauge of sessions. Labels: `pool` (the
 * pool's `name`), `state`: `live` (sessions in memory) or `idle` (of those,
 * the ones with nothing in progress, which the pool may drop; a subset of
 * `live`, not to be added to it). Read from the pool when the registry is
 * read: the pool records nothing as it works.
 *
 * @since 1.1.0
 * @category metrics
 */
export const poolSessions: Metric.Gauge<number> = internal.poolSessions

/**
 * `moon_refresh_pool_refreshes_in_flight`: a gauge of refreshes. Labels:
 * `pool`. The refreshes (whole `RefreshClient.refresh` calls, retries and waits included) running now under the pool's
 * `maxConcurrentRefreshes`. Read when the registry is read.
 *
 * @since 1.1.0
 * @category metrics
 */
export const poolRefreshesInFlight: Metric.Gauge<number> = internal.poolRefreshesInFlight

/**
 * `moon_refresh_pool_refreshes_queued`: a gauge of refreshes. Labels:
 * `pool`. The refreshes waiting for a place under the pool's cap. Read when
 * the registry is read.
 *
 * @since 1.1.0
 * @category metrics
 */
export const poolRefreshesQueued: Metric.Gauge<number> = internal.poolRefreshesQueued

/**
 * `moon_refresh_pool_circuit_state`: a gauge, a state. Labels: `pool`. 0
 * closed; 1 half-open (the pause after a trip is over and no refresh has
 * succeeded since); 2 open (refreshes are refused without a POST). Read when
 * the registry is read.
 *
 * @since 1.1.0
 * @category metrics
 */
export const poolCircuitState: Metric.Gauge<number> = internal.poolCircuitState

/**
 * `moon_refresh_pool_circuit_trips_total`: a counter of trips. Labels:
 * `pool`. Moves by one each time a pool's circuit opens (after 5 transient
 * failures in a row, across keys).
 *
 * @since 1.1.0
 * @category metrics
 */
export const poolCircuitTrips: Metric.Counter<number> = internal.poolCircuitTrips

/**
 * Every metric above, unlabelled.
 *
 * @since 1.1.0
 * @category metrics
 */
export const all: ReadonlyArray<Metric.Metric<never, unknown>> = internal.all

/**
 * The names of the metrics (`moon_refresh_*`).
 *
 * @since 1.1.0
 * @category constants
 */
export const names: ReadonlyArray<string> = internal.names

/**
 * The library's series in the registry of the current context
 * (`Metric.snapshot`, filtered to `moon_refresh_*`), labels included.
 *
 * @since 1.1.0
 * @category accessors
 */
export const snapshot: Effect.Effect<ReadonlyArray<Metric.Metric.Snapshot>> = Effect.map(
  Metric.snapshot,
  internal.ours
)

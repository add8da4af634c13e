/**
 * moon-refresh: keep a Moon (usemoon.ai) session alive from an Effect program.
 *
 * @since 0.1.0
 */

/**
 * Sessions, and the schema that decodes Moon's refresh response.
 *
 * @since 0.1.0
 */
export * as Session from "./Session.js"

/**
 * The typed errors of a refresh.
 *
 * @since 0.1.0
 */
export * as RefreshError from "./RefreshError.js"

/**
 * Retry schedules for refreshes.
 *
 * @since 0.1.0
 */
export * as RefreshPolicy from "./RefreshPolicy.js"

/**
 * The refresh call as an Effect service.
 *
 * @since 0.1.0
 */
export * as RefreshClient from "./RefreshClient.js"

/**
 * Where sessions are persisted.
 *
 * @since 0.1.0
 */
export * as SessionStore from "./SessionStore.js"

/**
 * A session that refreshes itself.
 *
 * @since 0.1.0
 */
export * as SessionManager from "./SessionManager.js"

/**
 * An HttpClient that signs requests and replays a 401 once.
 *
 * @since 0.1.0
 */
export * as AuthHttpClient from "./AuthHttpClient.js"

/**
 * Many sessions, one per key (a user id), for servers acting for many users.
 *
 * @since 0.2.0
 */
export * as SessionPool from "./SessionPool.js"

/**
 * The library's metrics (`moon_refresh_*`), as Effect `Metric`s.
 *
 * @since 1.1.0
 */
export * as Metrics from "./Metrics.js"

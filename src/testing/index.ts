/**
 * moon-refresh/testing: tools for testing programs that refresh Moon sessions.
 *
 * @since 0.1.0
 */

/**
 * A Moon-compatible HTTP server on 127.0.0.1 with one-time refresh tokens,
 * reuse detection and scriptable faults.
 *
 * @since 0.1.0
 */
export * as MockMoonServer from "./MockMoonServer.js"

/**
 * A scripted `RefreshClient` without HTTP, with one-time refresh tokens, for
 * fast unit tests driven by `TestClock`.
 *
 * @since 0.1.0
 */
export * as MockRefreshClient from "./MockRefreshClient.js"

/**
 * moon-refresh/browser: one session shared by the tabs of a web app.
 *
 * @since 0.2.0
 */

/**
 * A `SessionStore` for the browser: the record in IndexedDB, a Web Lock with
 * a bounded hold, and a `BroadcastChannel` change feed.
 *
 * @since 0.2.0
 */
export * as BrowserSessionStore from "./BrowserSessionStore.js"

/**
 * A `SessionStore` shared by every tab of one origin, so that a web app open
 * in several tabs refreshes its Moon session once per expiry, not once per
 * tab (each extra refresh would present a spent refresh token and sign the
 * user out everywhere).
 *
 * - The record (`{ revision, session }`) lives in IndexedDB. A fenced write
 *   is one `readwrite` transaction that compares the revision and writes,
 *   and the browser runs those one at a time for the origin, so it is a
 *   real compare-and-set across tabs. (`localStorage` cannot be one: it has
 *   no compare-and-set, and a tab can read an old value for a moment after
 *   another tab wrote.)
 * - The lock is a Web Lock (`navigator.locks`): released when its tab
 *   closes or crashes, and withdrawn when the waiting fiber is interrupted.
 *   A holder keeps it for at most `maxHold`; a holder that cannot let go (a
 *   frozen tab, a lock orphaned by a torn-down page) has it taken over by a
 *   waiter after `maxHold` and a second, and its writes are refused from
 *   then on.
 * - The change feed is a `BroadcastChannel`: each write is announced after
 *   it commits, and every other tab (and every other store on the same key
 *   in this tab) reads the record again, so a manager adopts another tab's
 *   refresh without a request, and a sign-out in one tab reaches them all.
 *   A page that comes back (shown again, restored from the back/forward
 *   cache) reads it again too.
 *
 * The tokens are stored in clear: any script running on the origin can read
 * them, as it could from `localStorage`. See the guide "Many tabs".
 *
 * @since 0.2.0
 */
import type * as Config from "effect/Config"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Options_ from "../internal/options.js"
import * as SessionStore from "../SessionStore.js"
import * as Internal from "./internal/browserStore.js"

/**
 * The browser lacks a piece the store needs, so there is no store: Web Locks
 * (missing outside secure contexts: serve the app over `https://`, or from
 * `localhost`), IndexedDB, or `BroadcastChannel`. Also what `make` fails
 * with in Node.
 *
 * @since 0.2.0
 * @category errors
 */
export class BrowserStoreUnavailableError extends Schema.TaggedError<BrowserStoreUnavailableError>(
  "moon-refresh/BrowserStoreUnavailableError"
)("BrowserStoreUnavailableError", {
  missing: Schema.Literals(["navigator.locks", "indexedDB", "BroadcastChannel"]),
  message: Schema.String
}) {}

/**
 * @since 0.2.0
 * @category models
 */
export interface Options {
  /**
   * The name of the session: its record's key in IndexedDB, and the name of
   * its lock and channel. Tabs that use the same key share the session.
   */
  readonly key: string
  /**
   * The longest a tab may hold the lock. A refresh still running then is
   * interrupted (its request aborted) and fails; a tab that holds the lock
   * this long plus a second without letting go has it taken over. Keep it
   * above the `RefreshClient`'s per-attempt timeout (10 seconds by default).
   * Default 15 seconds.
   */
  readonly maxHold?: Duration.Input | undefined
  /** The IndexedDB database. Default `"moon-refresh"`. */
  readonly database?: string | undefined
}

/**
 * The store, its database connection and channel closed with the scope.
 * Fails with {@link BrowserStoreUnavailableError} where the browser lacks
 * Web Locks, IndexedDB or `BroadcastChannel` (and in Node); dies when an
 * option is invalid (an empty `key`, a `maxHold` that is not a positive
 * duration). Touches no browser API before it runs.
 *
 * @example
 * ```ts
 * import { Layer } from "effect"
 * import { FetchHttpClient } from "effect/http"
 * import { RefreshClient, SessionManager } from "moon-refresh"
 * import { BrowserSessionStore } from "moon-refresh/browser"
 *
 * // Every tab of the app builds the same layer; they share one session.
 * export const SessionLive = SessionManager.layer().pipe(
 *   Layer.provide(RefreshClient.layer()),
 *   Layer.provide(BrowserSessionStore.layer({ key: "moon-session" })),
 *   Layer.provide(FetchHttpClient.layer)
 * )
 * ```
 *
 * @since 0.2.0
 * @category constructors
 */
export const make = (
  options: Options
): Effect.Effect<SessionStore.Service, BrowserStoreUnavailableError, Scope.Scope> =>
  Effect.flatMap(Options_.orDie(Internal.settings(options)), build)

const build = (
  settings: Internal.Settings
): Effect.Effect<SessionStore.Service, BrowserStoreUnavailableError, Scope.Scope> =>
  Result.match(Internal.fromGlobals(), {
    onFailure: (missing) => Effect.fail(new BrowserStoreUnavailableError(missing)),
    onSuccess: (platform) => Internal.make(platform, settings)
  })

/**
 * {@link make} as the `SessionStore` layer.
 *
 * @since 0.2.0
 * @category layers
 */
export const layer = (options: Options): Layer.Layer<SessionStore.SessionStore, BrowserStoreUnavailableError> =>
  Layer.effect(SessionStore.SessionStore, make(options))

/**
 * {@link layer} with the options read from `Config` (a `ConfigProvider` the
 * page sets up, say `ConfigProvider.fromUnknown` over settings the server
 * rendered): one `Config` of them, or a `Config` per option. An invalid
 * value is a `Config.ConfigError` naming the option, where {@link layer}
 * would die.
 *
 * @since 1.0.0
 * @category layers
 */
export const layerConfig = (
  config: Config.Wrap<Options>
): Layer.Layer<SessionStore.SessionStore, BrowserStoreUnavailableError | Config.ConfigError> =>
  Layer.effect(SessionStore.SessionStore, Effect.flatMap(Options_.fromConfig(config, Internal.settings), build))

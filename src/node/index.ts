/**
 * moon-refresh/node: stores that need Node's file system, kept out of the
 * main entry so that it runs in browsers and other runtimes.
 *
 * @since 0.2.0
 */

/**
 * A session file several Node processes share: atomic, fenced writes, a
 * cross-process lock that survives a crash, and a change feed.
 *
 * @since 0.2.0
 */
export * as NodeSessionStore from "./NodeSessionStore.js"

/**
 * A `KeyValueStore` on files only their owner can read (directory `0700`,
 * files `0600`, atomic writes): `KeyValueStore.layerFileSystem` for values
 * that hold tokens.
 *
 * @since 0.3.0
 */
export * as PrivateKeyValueStore from "./PrivateKeyValueStore.js"

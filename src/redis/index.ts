/**
 * moon-refresh/redis: a `SessionStore` on Redis, for replicas and workers
 * sharing one session. Needs `ioredis`.
 *
 * @since 0.2.0
 */

/**
 * One session shared through Redis: a fenced record, a lease lock and a
 * change feed.
 *
 * @since 0.2.0
 */
export * as RedisSessionStore from "./RedisSessionStore.js"

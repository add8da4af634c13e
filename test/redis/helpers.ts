/**
 * What the Redis tests share: stores on their own clients (as separate
 * replicas would have), a raw client to look at and tamper with Redis, and
 * fresh keys so that tests sharing one server never see each other.
 */
import type { Scope } from "effect"
import { Effect, Option, Redacted } from "effect"
import type { SessionStore } from "moon-refresh"
import { RedisSessionStore } from "moon-refresh/redis"
import { type RedisServer, startRedisServer } from "../support/RedisServer.js"

export { session } from "../support/StoreContract.js"

let keys = 0

/** A key no other test uses. */
export const freshKey = (name = "test"): string => `moon-refresh-test:${name}:${process.pid}:${Date.now()}:${++keys}`

/** A store on a client of its own, as one replica. */
export const openStore = (
  url: string,
  options: RedisSessionStore.Options
): Effect.Effect<SessionStore.Service, never, Scope.Scope> =>
  Effect.flatMap(
    RedisSessionStore.makeClient(url),
    (client) => Effect.provideService(RedisSessionStore.make(options), RedisSessionStore.RedisClient, client)
  )

/** A client on which the tests look at and change Redis directly (its commands wait for the connection). */
export const rawClient = (url: string) => RedisSessionStore.makeClient(url, { enableOfflineQueue: true })

/** The refresh token of a record, or "none" for a sign-out. */
export const tokenOf = (stored: SessionStore.Stored): string =>
  Option.match(stored.session, { onNone: () => "none", onSome: (s) => Redacted.value(s.refreshToken) })

/** A redis-server of the test's own (to kill, freeze or restart), stopped with the scope. */
export const ownRedisServer: Effect.Effect<RedisServer, never, Scope.Scope> = Effect.acquireRelease(
  Effect.promise(() => startRedisServer()),
  (server) => Effect.promise(() => server.stop())
)

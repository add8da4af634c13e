// docs/10-redis.md: one session shared by replicas through Redis.
import { Effect, Layer, Stream } from "effect"
import { FetchHttpClient } from "effect/http"
import { Redis } from "ioredis"
import { AuthHttpClient, RefreshClient, SessionManager, SessionPool } from "moon-refresh"
import { RedisSessionStore } from "moon-refresh/redis"

// [setup]
// Every replica acting for this Moon account uses the same key. The client
// comes from REDIS_URL (redis://… or rediss://…) and is closed with the layer.
export const SessionLive = SessionManager.layer().pipe(
  Layer.provide(RefreshClient.layer()),
  Layer.provide(RedisSessionStore.layerFromEnv({ key: "moon-session:ada" })),
  Layer.provide(FetchHttpClient.layer)
)

export const AppHttpLive = AuthHttpClient.layer().pipe(
  Layer.provideMerge(SessionLive),
  Layer.provide(FetchHttpClient.layer)
)
// [/setup]

// [own-client]
// A client your program already has: the layer uses it and does not close
// it. The store's settings make a command fail at once while Redis is down
// instead of waiting in ioredis's queue (see "Client settings").
export const makeStoreOn = (client: Redis) =>
  RedisSessionStore.layer({ key: "moon-session:ada", lease: "15 seconds", timeout: "2 seconds" }).pipe(
    Layer.provide(RedisSessionStore.layerClient(client))
  )

export const makeClient = (url: string) => new Redis(url, { ...RedisSessionStore.clientOptions })
// [/own-client]

// [watch]
// What every replica sees: its own refreshes, and the sessions it takes from
// the others' (Refreshed too, without a request), or a sign-out anywhere.
export const logSessionEvents = Stream.runForEach(
  SessionManager.SessionManager.pipe(Effect.map((manager) => manager.events), Stream.unwrap),
  (event) => Effect.log(`session: ${event._tag}`)
)
// [/watch]

// [keyed]
// One session per user of your server (a SessionPool), shared by every replica:
// each user key has its own record, lock and channel under the prefix.
export const PoolLive = SessionPool.layer({ idleTimeToLive: "15 minutes" }).pipe(
  Layer.provide(RefreshClient.layer()),
  Layer.provide(RedisSessionStore.layerKeyedFromEnv({ prefix: "moon-session:" })),
  Layer.provide(FetchHttpClient.layer)
)

// Where a user's record is, to look at it with redis-cli: moon-session:{ada%40example.com}
export const recordOfUser = (userId: string) => RedisSessionStore.recordKey("moon-session:", userId)
// [/keyed]

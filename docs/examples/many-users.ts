// docs/11-many-users.md: one Moon session per user of a server, kept alive by
// a SessionPool over one session file per user.
import { Config, DateTime, Effect, Fiber, Layer, Stream } from "effect"
import type { Redacted } from "effect"
import { FetchHttpClient } from "effect/http"
import type { SessionManager } from "moon-refresh"
import { RefreshClient, SessionPool } from "moon-refresh"
import { NodeSessionStore } from "moon-refresh/node"
import { runMain } from "./run-main.js"

// [layers]
export const PoolLive = SessionPool.layer({
  idleTimeToLive: "15 minutes", // a user unseen this long leaves memory (not the store)
  capacity: 50_000, // at most this many in memory; the least recently used leave first
  maxConcurrentRefreshes: 16, // refresh POSTs in flight, all users together
  session: { margin: "60 seconds" } // each user's session: a SessionManager's options
}).pipe(
  Layer.provide(RefreshClient.layerFromEnv()),
  // One file per user, named by a hash of the key; the directory is created 0700.
  Layer.provide(NodeSessionStore.layerKeyed({ directory: ".moon-sessions" })),
  Layer.provide(FetchHttpClient.layer)
)
// [/layers]

// [connect]
// A user connects their Moon account: your app got a refresh token for them.
// The pool spends it once, stores the session under the user's id, and from
// then on keeps it alive.
export const connect = (userId: string, refreshToken: Redacted.Redacted<string>) =>
  SessionPool.signInWithRefreshToken(userId, refreshToken)
// [/connect]

// [request]
// In a request handler: an HttpClient that signs with this user's session,
// only towards Moon's API (a redirect elsewhere loses the header), and
// replays a 401 once after a refresh.
export const moonApiFor = (userId: string) =>
  SessionPool.httpClient(userId, { origins: ["https://beta.usemoon.ai"] }).pipe(
    Effect.provide(FetchHttpClient.layer)
  )
// [/request]

// [watch]
// Every user's events in one stream, each tagged with its key: a sign-out
// here is the user's to act on (ask them to connect again).
export const watchSignOuts = SessionPool.events.pipe(
  Stream.runForEach(({ event, key }) =>
    event._tag === "SignedOut"
      ? Effect.log(`user ${key} signed out: ${describeSignOut(event.reason)}`)
      : Effect.void
  )
)

// UserSignedOut, TokenRejected (the server's answer says why) or SignedOutElsewhere.
const describeSignOut = (reason: SessionManager.SignOutReason) =>
  reason._tag === "TokenRejected" ? `TokenRejected (${reason.error.message})` : reason._tag
// [/watch]

const main = Effect.gen(function*() {
  const watching = yield* Effect.forkChild(watchSignOuts)
  const session = yield* connect("ada", yield* Config.Redacted("MOON_REFRESH_TOKEN"))
  const token = yield* SessionPool.accessToken("ada")
  const stats = yield* SessionPool.stats
  yield* Effect.log(
    `ada is Moon user ${session.user.id}; access token ${token}, valid until ${
      DateTime.formatIso(session.expiresAt)
    }; sessions in memory: ${stats.live}`
  )
  yield* Fiber.interrupt(watching)
})

main.pipe(
  Effect.provide(PoolLive),
  runMain
)

// docs/00-first-session.md: a Moon app's first session comes from a refresh
// token; the store keeps it, so later runs start from the stored session.
import { Config, DateTime, Effect, Layer, Option } from "effect"
import { FetchHttpClient } from "effect/http"
import { RefreshClient, SessionManager } from "moon-refresh"
import { NodeSessionStore } from "moon-refresh/node"
import { runMain } from "./run-main.js"

// [start]
export const start = Effect.gen(function*() {
  // Later runs: the stored session. The first: the refresh token you were given.
  if (Option.isNone(yield* SessionManager.current)) {
    yield* SessionManager.signInWithRefreshToken(yield* Config.Redacted("MOON_REFRESH_TOKEN"))
  }
  const session = yield* SessionManager.session
  yield* Effect.log(
    `signed in as ${session.user.id}; access token valid until ${DateTime.formatIso(session.expiresAt)}`
  )
})
// [/start]

// [layers]
// MOON_BASE_URL, when set, replaces https://beta.usemoon.ai. The session file
// holds both tokens in clear: NodeSessionStore creates its directory 0700 and
// the file 0600 whatever the umask, and refuses ones other users can read.
export const SessionLive = SessionManager.layer().pipe(
  Layer.provide(RefreshClient.layerFromEnv()),
  Layer.provide(NodeSessionStore.layer({ path: ".moon/session.json" })),
  Layer.provide(FetchHttpClient.layer)
)
// [/layers]

start.pipe(
  Effect.provide(SessionLive),
  runMain
)

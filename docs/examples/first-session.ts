// docs/00-first-session.md: a Moon app's first session comes from a refresh
// token; the store keeps it, so later runs start from the stored session.
import { FetchHttpClient } from "@effect/platform"
import { NodeKeyValueStore } from "@effect/platform-node"
import { Config, DateTime, Effect, Layer, Option } from "effect"
import { RefreshClient, SessionManager, SessionStore } from "moon-refresh"
import { runMain } from "./run-main.js"

// [start]
export const start = Effect.gen(function*() {
  // Later runs: the stored session. The first: the refresh token you were given.
  if (Option.isNone(yield* SessionManager.current)) {
    yield* SessionManager.signInWithRefreshToken(yield* Config.redacted("MOON_REFRESH_TOKEN"))
  }
  const session = yield* SessionManager.session
  yield* Effect.log(
    `signed in as ${session.user.id}; access token valid until ${DateTime.formatIso(session.expiresAt)}`
  )
})
// [/start]

// [layers]
// MOON_BASE_URL, when set, replaces https://beta.usemoon.ai. The store's
// directory holds both tokens in clear: keep it private.
export const SessionLive = SessionManager.layer().pipe(
  Layer.provide(RefreshClient.layerConfig()),
  Layer.provide(SessionStore.layerKeyValueStore({ key: "moon-session" })),
  Layer.provide(NodeKeyValueStore.layerFileSystem(".moon-first-session")),
  Layer.provide(FetchHttpClient.layer)
)
// [/layers]

start.pipe(
  Effect.provide(SessionLive),
  runMain
)

// docs/01-refreshing.md: a refresh token is spent by the refresh, so the new
// session is stored before anything uses it.
import { NodeHttpClient } from "@effect/platform-node"
import { Config, DateTime, Effect, Layer, Option } from "effect"
import { KeyValueStore } from "effect/persistence"
import { RefreshClient, Session } from "moon-refresh"
import { PrivateKeyValueStore } from "moon-refresh/node"
import { runMain } from "./run-main.js"

// [rotate]
export const rotate = Effect.gen(function*() {
  const sessions = KeyValueStore.toSchemaStore(yield* KeyValueStore.KeyValueStore, Session.Session)
  const stored = yield* sessions.get("moon-session")
  // First run: start from MOON_REFRESH_TOKEN; later runs: from the stored session.
  const refreshToken = Option.isSome(stored)
    ? stored.value.refreshToken
    : yield* Config.Redacted("MOON_REFRESH_TOKEN")
  const session = yield* RefreshClient.refresh(refreshToken)
  // The old refresh token died when the server answered: save the new session
  // first. If this fails, the program fails before anything uses the session.
  yield* sessions.set("moon-session", session)
  return session
})
// [/rotate]

// [run]
// The file holds both tokens in clear: PrivateKeyValueStore makes the
// directory 0700 and the file 0600, whatever the umask.
const MainLive = Layer.mergeAll(
  RefreshClient.layerFromEnv().pipe(Layer.provide(NodeHttpClient.layerNodeHttp)),
  PrivateKeyValueStore.layerFileSystem(".moon-session")
)

rotate.pipe(
  Effect.tap((session) => Effect.log(`stored; access token valid until ${DateTime.formatIso(session.expiresAt)}`)),
  Effect.provide(MainLive),
  runMain
)
// [/run]

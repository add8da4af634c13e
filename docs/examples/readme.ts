// The README's example: refresh once, with the token from MOON_REFRESH_TOKEN.
import { Config, DateTime, Effect, Layer } from "effect"
import { FetchHttpClient } from "effect/http"
import { RefreshClient } from "moon-refresh"

const program = Effect.gen(function*() {
  const refreshToken = yield* Config.Redacted("MOON_REFRESH_TOKEN")
  const session = yield* RefreshClient.refresh(refreshToken)
  // The old refresh token is spent now: store `session` before you use it.
  yield* Effect.log(`user ${session.user.id}, valid until ${DateTime.formatIso(session.expiresAt)}`)
})

// MOON_BASE_URL, when set, replaces https://beta.usemoon.ai.
const MainLive = RefreshClient.layerFromEnv().pipe(Layer.provide(FetchHttpClient.layer))

program.pipe(
  Effect.provide(MainLive),
  // A spent token, no network: one line and exit code 1, not a stack trace.
  Effect.catch((error) =>
    Effect.sync(() => {
      console.error(String(error))
      process.exitCode = 1
    })
  ),
  Effect.runPromise
)

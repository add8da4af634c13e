// docs/02-errors.md: turning refresh errors into decisions.
import { Config, Data, Duration, Effect, Layer, Option, type Redacted } from "effect"
import { FetchHttpClient } from "effect/http"
import { RefreshClient, RefreshError, type Session } from "moon-refresh"
import { runMain } from "./run-main.js"

// [catchTags]
// What the application does next, decided from the error.
export type Outcome = Data.TaggedEnum<{
  Refreshed: { readonly session: Session.Session }
  // The refresh token is dead: show the sign-in screen.
  SignedOut: { readonly reason: string }
  // Keep the current session (its access token may still be valid) and try later.
  TryLater: { readonly after: Duration.Duration; readonly reason: string }
}>
export const Outcome = Data.taggedEnum<Outcome>()

export const refreshOrDecide = (refreshToken: Redacted.Redacted<string>) =>
  RefreshClient.refresh(refreshToken).pipe(
    Effect.map((session) => Outcome.Refreshed({ session })),
    Effect.catchTags({
      TokenRejectedError: (error) => Effect.succeed(Outcome.SignedOut({ reason: error.message })),
      RateLimitedError: (error) =>
        Effect.succeed(Outcome.TryLater({
          after: Option.getOrElse(error.retryAfter, () => Duration.minutes(1)),
          reason: error.message
        })),
      TransportError: (error) =>
        Effect.succeed(Outcome.TryLater({ after: Duration.seconds(30), reason: `${error.reason}: ${error.message}` })),
      // A 5xx is worth another try later; a 404 means a wrong baseUrl or path.
      ServerError: (error) =>
        RefreshError.isRetryable(error)
          ? Effect.succeed(Outcome.TryLater({ after: Duration.seconds(30), reason: error.message }))
          : Effect.fail(error)
    })
    // MalformedResponseError and a non-retryable ServerError stay in the error channel.
  )
// [/catchTags]

// [run]
const program = Effect.gen(function*() {
  const outcome = yield* refreshOrDecide(yield* Config.Redacted("MOON_REFRESH_TOKEN"))
  yield* Outcome.$match(outcome, {
    Refreshed: ({ session }) => Effect.log(`refreshed for user ${session.user.id}`),
    SignedOut: ({ reason }) => Effect.logWarning(`signed out: ${reason}`),
    TryLater: ({ after, reason }) => Effect.logWarning(`try again in ${Duration.format(after)}: ${reason}`)
  })
})

program.pipe(
  Effect.provide(RefreshClient.layerFromEnv().pipe(Layer.provide(FetchHttpClient.layer))),
  runMain
)
// [/run]

// docs/03-retry-policies.md: choosing and writing retry policies.
import { Config, Effect, Layer, Schedule } from "effect"
import { FetchHttpClient } from "effect/http"
import { RefreshClient, type RefreshError, RefreshPolicy } from "moon-refresh"
import { runMain } from "./run-main.js"

// [default]
// RefreshPolicy.defaultPolicy, spelled out.
export const sameAsDefault = RefreshPolicy.exponential({
  base: "200 millis",
  factor: 2,
  maxRetries: 5,
  maxDelay: "10 seconds",
  maxElapsed: "30 seconds",
  jitter: true
})
// [/default]

// [exponential]
// A background job that can afford to wait out a longer outage.
export const patient = RefreshPolicy.exponential({
  base: "1 second",
  maxRetries: 10,
  maxDelay: "1 minute",
  maxElapsed: "10 minutes"
})
// [/exponential]

// [none]
// A sign-in screen that shows the first failure at once.
export const RefreshOnce = RefreshClient.layer({ policy: RefreshPolicy.none }).pipe(
  Layer.provide(FetchHttpClient.layer)
)
// [/none]

// [custom]
// Every 2 seconds, at most 3 retries. withRetryAfter adds the Retry-After
// stretching and a budget: no retry starts more than 20 s after the first failure.
export const everyTwoSeconds = RefreshPolicy.withRetryAfter(
  Schedule.spaced("2 seconds").pipe(Schedule.upTo({ times: 3 })),
  "20 seconds"
)

// The schedule's input is the RefreshError that just happened: this one
// gives up at once when an attempt timed out, and uses the default otherwise.
export const noRetryAfterTimeout: RefreshPolicy.RefreshPolicy = RefreshPolicy.defaultPolicy.pipe(
  Schedule.while(({ input: error }: Schedule.Metadata<unknown, RefreshError.RefreshError>) =>
    !(error._tag === "TransportError" && error.reason === "Timeout")
  )
)
// [/custom]

// [run]
const program = Effect.gen(function*() {
  const session = yield* RefreshClient.refresh(yield* Config.Redacted("MOON_REFRESH_TOKEN"))
  yield* Effect.log(`refreshed for user ${session.user.id}`)
})

program.pipe(
  Effect.provide(RefreshClient.layerFromEnv({ policy: patient }).pipe(Layer.provide(FetchHttpClient.layer))),
  runMain
)
// [/run]

// docs/04-automatic-refresh.md: a session that refreshes itself, and an
// HttpClient that signs requests with it.
import { Effect, Layer, Option, Stream } from "effect"
import { FetchHttpClient, type HttpClient, type HttpClientError } from "effect/http"
import { AuthHttpClient, RefreshClient, SessionManager } from "moon-refresh"
import { NodeSessionStore } from "moon-refresh/node"

// [layers]
// The manager needs a RefreshClient and a SessionStore; both are layers you choose.
export const SessionLive = SessionManager.layer({
  margin: "60 seconds", // refresh when less than this is left
  autoRefresh: true, // ...without waiting for a caller
  cooldown: "10 seconds", // pause after a failed refresh, doubling to...
  maxCooldown: "5 minutes" // ...at most this
}).pipe(
  Layer.provide(RefreshClient.layer()),
  // The session file: directory 0700, file 0600, shared safely by every process.
  Layer.provide(NodeSessionStore.layer({ path: ".moon/session.json" })),
  Layer.provide(FetchHttpClient.layer)
)

// AuthHttpClient signs every request and replays a 401 once.
export const AppHttpLive = AuthHttpClient.layer().pipe(
  Layer.provideMerge(SessionLive),
  Layer.provide(FetchHttpClient.layer)
)
// [/layers]

// [use]
export const getProfile = Effect.gen(function*() {
  const http = yield* AuthHttpClient.AuthHttpClient
  const response = yield* http.get("https://api.example.com/me")
  return yield* response.json
}).pipe(
  // Typed: the session's errors beside the transport's.
  Effect.catchTags({
    NoSessionError: () => Effect.succeed({ signedIn: false }),
    TokenRejectedError: () => Effect.succeed({ signedIn: false })
  })
)

// Or take the token yourself, for a client that is not an HttpClient.
export const withToken = Effect.gen(function*() {
  const token = yield* SessionManager.accessToken
  return token // Redacted<string>: Redacted.value(token) where it is sent
})
// [/use]

// [events]
export const logEvents = SessionManager.events.pipe(
  Stream.runForEach(
    SessionManager.SessionEvent.$match({
      // Always first: what is held at the moment of subscribing; every change follows.
      Initial: ({ session }) => Effect.log(Option.isSome(session) ? "signed in already" : "not signed in yet"),
      SignedIn: () => Effect.log("signed in"),
      Refreshed: ({ session }) => Effect.log(`refreshed; expires ${session.expiresAt}`),
      RefreshFailed: ({ error, willRetry }) => Effect.logWarning(`refresh failed: ${error._tag}`, { willRetry }),
      SaveFailed: ({ error }) => Effect.logError(`could not save the session: ${error.message}`),
      SignedOut: ({ reason }) => Effect.log(`signed out: ${reason._tag}`)
    })
  )
)
// [/events]

export const program = Effect.gen(function*() {
  yield* Effect.forkScoped(logEvents)
  return yield* getProfile
}).pipe(Effect.scoped, Effect.provide(AppHttpLive))

// Only to show that AuthHttpClient is an HttpClient with the session's errors.
export const asHttpClient = (
  client: AuthHttpClient.Service
): HttpClient.HttpClient.With<HttpClientError.HttpClientError | SessionManager.SessionError> => client

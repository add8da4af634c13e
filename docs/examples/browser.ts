// docs/examples/browser.ts: a web app whose tabs share one Moon session.
// Every tab builds the same runtime; `BrowserSessionStore` makes them one
// holder: one refresh per expiry, and a sign-out in one tab signs out all.
import { Effect, Layer, ManagedRuntime, Stream } from "effect"
import { FetchHttpClient } from "effect/http"
import { AuthHttpClient, RefreshClient, type Session, SessionManager } from "moon-refresh"
import { BrowserSessionStore } from "moon-refresh/browser"

const moon = "https://beta.usemoon.ai"

export const SessionLive = SessionManager.layer().pipe(
  Layer.provide(RefreshClient.layer({ baseUrl: moon })),
  // The same key in every tab: IndexedDB record, Web Lock and channel all follow it.
  Layer.provide(BrowserSessionStore.layer({ key: "moon-session" })),
  Layer.provide(FetchHttpClient.layer)
)

// Only requests to your API carry the token.
const api = "https://api.example.com"
export const AppLive = AuthHttpClient.layer({ origins: [api] }).pipe(
  Layer.provideMerge(SessionLive),
  Layer.provide(FetchHttpClient.layer)
)

// One runtime per page, for the page's life: when the tab closes, the browser
// releases the lock it held. (A framework component that builds its own runtime
// disposes it on unmount: a refresh waiting for the lock then withdraws.)
export const runtime = ManagedRuntime.make(AppLive)

// After your sign-in flow: the session is stored and every tab takes it up.
export const onSignedIn = (session: Session.Session) => runtime.runPromise(SessionManager.signIn(session))

// Any tab may sign out: the others see the sign-out within milliseconds.
export const signOut = () => runtime.runPromise(SessionManager.signOut)

// Follow the session in your UI; `SignedOut` arrives here from every tab.
export const watch = (render: (signedIn: boolean) => void) =>
  runtime.runFork(Stream.runForEach(SessionManager.events, (event) =>
    Effect.sync(() => {
      if (event._tag === "SignedIn" || event._tag === "Refreshed") render(true)
      if (event._tag === "SignedOut") render(false)
      if (event._tag === "Initial") render(event.session._tag === "Some")
    })))

// Your API calls, signed with the current access token.
export const profile = () =>
  runtime.runPromise(
    Effect.gen(function*() {
      const http = yield* AuthHttpClient.AuthHttpClient
      const response = yield* http.get(`${api}/me`)
      return yield* response.json
    }).pipe(Effect.catchTag("NoSessionError", () => Effect.succeed(null)))
  )

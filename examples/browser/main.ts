/**
 * The example web page (`npm run demo:browser`): a `SessionManager` per tab,
 * all tabs sharing one session through `BrowserSessionStore`, against the
 * Moon-compatible mock server. Each tab shows the session's state, when its
 * access token expires, and a live log: which tab refreshed (one POST per
 * expiry, whichever tab gets the lock first), which took the new session
 * from another tab, and sign-outs that reach every tab.
 *
 * Plain DOM, bundled by esbuild (see server.ts).
 */
import { DateTime, Duration, Effect, Layer, ManagedRuntime, Option, Schedule, Schema, Stream } from "effect"
import { FetchHttpClient, HttpClient, HttpClientRequest } from "effect/http"
import { AuthHttpClient, RefreshClient, Session, SessionManager, SessionStore } from "moon-refresh"
import { BrowserSessionStore } from "moon-refresh/browser"

/** What the page's server says about the mock server (`/config.json`). */
interface Config {
  readonly moonUrl: string
  /** Access tokens live this many seconds. */
  readonly lifetime: number
}

const tabId = Math.random().toString(36).slice(2, 6).toUpperCase()

// ---------------------------------------------------------------------------
// The view
// ---------------------------------------------------------------------------

const element = <K extends keyof HTMLElementTagNameMap>(id: string, _tag: K) =>
  document.getElementById(id) as HTMLElementTagNameMap[K]

const view = {
  tab: element("tab", "span"),
  state: element("state", "span"),
  user: element("user", "span"),
  expires: element("expires", "span"),
  countdown: element("countdown", "span"),
  ownRefreshes: element("own-refreshes", "span"),
  adopted: element("adopted", "span"),
  requests: element("requests", "span"),
  log: element("log", "ol"),
  signIn: element("sign-in", "button"),
  refresh: element("refresh", "button"),
  signOut: element("sign-out", "button")
}

const counts = { ownRefreshes: 0, adopted: 0, ok: 0, unauthorized: 0, failed: 0 }
let expiresAt: number | undefined
// Set just before this tab's own POST succeeds, so its Refreshed event is told apart from an adopted one.
let refreshedHere = false

const time = (millis: number) => new Date(millis).toLocaleTimeString(undefined, { hour12: false })

const log = (kind: string, text: string) => {
  const item = document.createElement("li")
  item.className = kind
  const at = new Date()
  item.innerHTML = `<time>${time(at.getTime())}.${String(at.getMilliseconds()).padStart(3, "0")}</time>`
  item.append(text)
  view.log.prepend(item)
  while (view.log.children.length > 40) view.log.lastElementChild?.remove()
}

const render = () => {
  view.tab.textContent = tabId
  view.ownRefreshes.textContent = String(counts.ownRefreshes)
  view.adopted.textContent = String(counts.adopted)
  view.requests.textContent = `${counts.ok} answered 200, ${counts.unauthorized} answered 401, ${counts.failed} failed`
  if (expiresAt === undefined) {
    view.expires.textContent = "none"
    view.countdown.textContent = ""
  } else {
    const left = (expiresAt - Date.now()) / 1000
    view.expires.textContent = time(expiresAt)
    view.countdown.textContent = left > 0 ? `(in ${left.toFixed(1)} s)` : "(expired)"
  }
}

const showSession = (session: Option.Option<Session.Session>) => {
  const held = Option.getOrUndefined(session)
  expiresAt = held === undefined ? undefined : DateTime.toEpochMillis(held.expiresAt)
  view.state.textContent = held === undefined ? "Signed out" : "Signed in"
  view.state.className = held === undefined ? "signed-out" : "signed-in"
  view.user.textContent = held?.user.email ?? held?.user.id ?? "nobody"
  view.signIn.disabled = held !== undefined
  view.refresh.disabled = held === undefined
  view.signOut.disabled = held === undefined
  render()
}

// ---------------------------------------------------------------------------
// The session
// ---------------------------------------------------------------------------

const main = async () => {
  const config = (await (await fetch("/config.json")).json()) as Config

  // The RefreshClient, with a line in the log for each POST this tab makes.
  const RefreshLive = Layer.effect(
    RefreshClient.RefreshClient,
    Effect.map(RefreshClient.make({ baseUrl: config.moonUrl }), (client) => ({
      ...client,
      refresh: (token) =>
        Effect.tap(client.refresh(token), () =>
          Effect.sync(() => {
            refreshedHere = true
          }))
    }))
  )
  const SessionLive = SessionManager.layer({
    // Refresh in the last third of a token's life, not in a loop.
    margin: Duration.seconds(Math.max(1, config.lifetime / 3)),
    minInterval: "1 second",
    cooldown: "500 millis"
  }).pipe(
    Layer.provide(RefreshLive),
    Layer.provideMerge(BrowserSessionStore.layer({ key: "moon-demo-session" })),
    Layer.provide(FetchHttpClient.layer)
  )
  const AppLive = AuthHttpClient.layer({ origins: [config.moonUrl] }).pipe(
    Layer.provideMerge(SessionLive),
    Layer.provideMerge(FetchHttpClient.layer)
  )
  // For the page's life: when the tab closes, the browser releases a lock it held.
  const runtime = ManagedRuntime.make(AppLive)

  const describeError = (error: { readonly _tag: string; readonly message?: string }) =>
    `${error._tag}${error.message === undefined ? "" : `: ${error.message}`}`

  // Every event of the manager, as a line in the log.
  const followEvents = Stream.runForEach(SessionManager.events, (event) =>
    Effect.sync(() => {
      switch (event._tag) {
        case "Initial":
          showSession(event.session)
          return log("info", Option.isSome(event.session) ? "started from the stored session" : "no stored session")
        case "SignedIn":
          showSession(Option.some(event.session))
          return log("signed-in", "signed in")
        case "Refreshed": {
          showSession(Option.some(event.session))
          const until = `valid until ${time(DateTime.toEpochMillis(event.session.expiresAt))}`
          if (refreshedHere) {
            counts.ownRefreshes++
            refreshedHere = false
            return log("refreshed", `this tab refreshed (POST /auth/refresh): ${until}`)
          }
          counts.adopted++
          return log("adopted", `took the session another tab refreshed, without a request: ${until}`)
        }
        case "RefreshFailed":
          return log("failed", `refresh failed (${describeError(event.error)})${event.willRetry ? ", will retry" : ""}`)
        case "SaveFailed":
          return log("failed", `could not save (${describeError(event.error)})`)
        case "SignedOut":
          showSession(Option.none())
          return log("signed-out", `signed out: ${event.reason._tag}`)
      }
    }))

  // Requests to the API, signed by AuthHttpClient, twice a second.
  const requests = Effect.gen(function*() {
    const http = yield* AuthHttpClient.AuthHttpClient
    const response = yield* http.get(`${config.moonUrl}/protected`)
    yield* response.text
    if (response.status === 200) counts.ok++
    else if (response.status === 401) counts.unauthorized++
    else counts.failed++
  }).pipe(
    Effect.catchTag("NoSessionError", () => Effect.void),
    Effect.catch(() =>
      Effect.sync(() => {
        counts.failed++
      })
    ),
    Effect.repeat(Schedule.spaced("500 millis"))
  )

  // A new session from the page's server, standing in for the app's sign-in.
  const signIn = Effect.gen(function*() {
    const response = yield* HttpClient.execute(HttpClientRequest.post("/sign-in"))
    const session = yield* Schema.decodeUnknownEffect(Session.MoonResponse)(yield* response.json)
    yield* SessionManager.signIn(session)
  })

  const act = (
    what: string,
    effect: Effect.Effect<unknown, unknown, SessionManager.SessionManager | HttpClient.HttpClient>
  ) => runtime.runPromise(effect).catch((error: unknown) => log("failed", `${what} failed: ${String(error)}`))
  view.signIn.onclick = () => void act("sign-in", signIn)
  view.refresh.onclick = () => void act("refresh", SessionManager.refresh)
  view.signOut.onclick = () => void act("sign-out", SessionManager.signOut)

  runtime.runFork(followEvents)
  runtime.runFork(requests)
  setInterval(render, 100)

  // The first tab on a fresh profile signs in by itself; after a sign-out, the button does.
  const stored = await runtime.runPromise(Effect.flatMap(SessionStore.SessionStore, (store) => store.read))
  if (stored.revision === 0) await act("sign-in", signIn)
}

main().catch((error: unknown) => log("failed", `the page could not start: ${String(error)}`))

/**
 * The page the browser tests open in each tab (bundled by esbuild at test
 * time): a `SessionManager` on `BrowserSessionStore`, loops of requests
 * through `AuthHttpClient`, and `window.harness` for the test to start, stop
 * and steer the tab and read what happened in it.
 */
import { Duration, Effect, Layer, ManagedRuntime, Option, Schedule, Schema, Stream } from "effect"
import { FetchHttpClient, HttpClient, HttpClientRequest } from "effect/http"
import { AuthHttpClient, RefreshClient, Session, SessionManager, SessionStore } from "moon-refresh"
import { BrowserSessionStore } from "moon-refresh/browser"

export interface StartOptions {
  readonly moonUrl: string
  readonly key: string
  readonly maxHoldMillis: number
  /** How many request loops to run (0: none). */
  readonly loops: number
  /** The manager's margin, in milliseconds. */
  readonly marginMillis: number
  /** Sign in (a new session from the page's server) before the loops start. */
  readonly signIn?: boolean | undefined
}

export interface Report {
  readonly events: ReadonlyArray<{ readonly tag: string; readonly at: number; readonly detail: string }>
  /** Answers to the request loops, by status; failures by error tag. */
  readonly statuses: Readonly<Record<string, number>>
  readonly failures: Readonly<Record<string, number>>
  /** Whether this tab is inside the store's lock right now. */
  readonly inLock: boolean
  readonly signedIn: boolean
  /** POSTs to /auth/refresh made by this tab. */
  readonly posts: number
  /** The stored record, as this tab reads it. */
  readonly stored: { readonly revision: number; readonly hasSession: boolean } | undefined
}

type Services = SessionManager.SessionManager | AuthHttpClient.AuthHttpClient | SessionStore.SessionStore

const report = {
  events: [] as Array<{ tag: string; at: number; detail: string }>,
  statuses: {} as Record<string, number>,
  failures: {} as Record<string, number>,
  inLock: false,
  signedIn: false,
  posts: 0
}
let runtime: ManagedRuntime.ManagedRuntime<Services, unknown> | undefined

const bump = (counts: Record<string, number>, key: string) => {
  counts[key] = (counts[key] ?? 0) + 1
}

// The store, with a flag raised while this tab is inside its lock (so a test can freeze the holder).
const store = (options: StartOptions) =>
  Layer.effect(
    SessionStore.SessionStore,
    Effect.map(
      BrowserSessionStore.make({ key: options.key, maxHold: Duration.millis(options.maxHoldMillis) }),
      (s) => ({
        ...s,
        // The manager takes the lock through withLease.
        withLease: <A, E, R>(use: (lease: SessionStore.Lease) => Effect.Effect<A, E, R>) =>
          s.withLease((lease) =>
            Effect.acquireUseRelease(
              Effect.sync(() => {
                report.inLock = true
              }),
              () => use(lease),
              () =>
                Effect.sync(() => {
                  report.inLock = false
                })
            )
          )
      })
    )
  )

// The RefreshClient, counting this tab's POSTs.
const refreshClient = (options: StartOptions) =>
  Layer.effect(
    RefreshClient.RefreshClient,
    Effect.map(RefreshClient.make({ baseUrl: options.moonUrl }), (client) => ({
      ...client,
      refresh: (token) =>
        Effect.suspend(() => {
          report.posts++
          return client.refresh(token)
        })
    }))
  )

const layer = (options: StartOptions) =>
  AuthHttpClient.layerWith({ origins: [options.moonUrl] }).pipe(
    Layer.provideMerge(
      SessionManager.layer({
        margin: Duration.millis(options.marginMillis),
        minInterval: "500 millis",
        cooldown: "200 millis"
      }).pipe(
        Layer.provide(refreshClient(options)),
        Layer.provideMerge(store(options))
      )
    ),
    Layer.provide(FetchHttpClient.layer)
  )

const followEvents = Stream.runForEach(SessionManager.events, (event) =>
  Effect.sync(() => {
    const detail = event._tag === "SignedOut"
      ? event.reason._tag
      : event._tag === "RefreshFailed" || event._tag === "SaveFailed"
      ? `${event.error._tag}: ${event.error.message}`
      : ""
    report.events.push({ tag: event._tag, at: Date.now(), detail })
    if (event._tag === "Initial") report.signedIn = Option.isSome(event.session)
    if (event._tag === "SignedIn" || event._tag === "Refreshed") report.signedIn = true
    if (event._tag === "SignedOut") report.signedIn = false
  }))

const requestLoop = (moonUrl: string) =>
  Effect.gen(function*() {
    const http = yield* AuthHttpClient.AuthHttpClient
    const response = yield* http.get(`${moonUrl}/protected`)
    yield* response.text
    bump(report.statuses, String(response.status))
  }).pipe(
    Effect.catch((error) => Effect.sync(() => bump(report.failures, error._tag))),
    Effect.repeat(Schedule.spaced("50 millis"))
  )

const run = <A, E>(effect: Effect.Effect<A, E, Services>): Promise<A> => {
  if (runtime === undefined) return Promise.reject(new Error("the harness is not started"))
  return runtime.runPromise(effect)
}

const harness: {
  readonly start: (options: StartOptions) => Promise<void>
  readonly mountAndUnmount: (options: StartOptions, unmountAfterMillis: number) => Promise<string>
  readonly stop: () => Promise<void>
  readonly signIn: () => Promise<void>
  readonly signOut: () => Promise<void>
  readonly refresh: () => Promise<string>
  readonly report: () => Promise<Report>
} = {
  start: async (options: StartOptions): Promise<void> => {
    runtime = ManagedRuntime.make(layer(options))
    await runtime.runPromise(Effect.void)
    runtime.runFork(followEvents)
    if (options.signIn === true) await harness.signIn()
    for (let i = 0; i < options.loops; i++) runtime.runFork(requestLoop(options.moonUrl))
  },
  /** Builds a manager and tears it down at once, while its first refresh waits for the lock. */
  mountAndUnmount: async (options: StartOptions, unmountAfterMillis: number): Promise<string> => {
    const mounted = ManagedRuntime.make(layer(options))
    const waiting = mounted.runPromise(SessionManager.refresh).then(() => "refreshed", (error) => String(error))
    await new Promise((resolve) => setTimeout(resolve, unmountAfterMillis))
    const inLock = report.inLock
    await mounted.dispose()
    return `${await waiting}${inLock ? " (was in the lock)" : ""}`
  },
  stop: async (): Promise<void> => {
    await runtime?.dispose()
    runtime = undefined
  },
  signIn: (): Promise<void> =>
    run(
      Effect.gen(function*() {
        const response = yield* HttpClient.execute(HttpClientRequest.post("/sign-in"))
        const session = yield* Schema.decodeUnknownEffect(Session.MoonResponse)(yield* response.json)
        yield* SessionManager.signIn(session)
      }).pipe(Effect.provide(FetchHttpClient.layer))
    ),
  signOut: (): Promise<void> => run(SessionManager.signOut),
  refresh: (): Promise<string> =>
    run(Effect.match(SessionManager.refresh, { onFailure: (error) => error._tag, onSuccess: () => "refreshed" })),
  report: async (): Promise<Report> => {
    const stored = runtime === undefined ?
      undefined :
      await run(Effect.flatMap(SessionStore.SessionStore, (s) => s.read)).then(
        (record) => ({ revision: record.revision, hasSession: Option.isSome(record.session) }),
        () => undefined
      )
    return { ...report, events: [...report.events], stored }
  }
}

export type Harness = typeof harness
;(globalThis as { harness?: Harness }).harness = harness

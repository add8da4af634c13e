/**
 * The whole stack over real sockets on 127.0.0.1: `AuthHttpClient` over an
 * `HttpClient`, a `SessionManager` on a memory store, a `RefreshClient` on a
 * `MockMoonServer`; what a program sent through it, and checks on the store.
 * Shared by test/session-integration.test.ts and test/system/.
 */
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import { expect } from "@effect/vitest"
import { Deferred, Effect, Layer, Option, Redacted, Schedule, Stream } from "effect"
import { FetchHttpClient, type HttpClient } from "effect/http"
import type { Session } from "moon-refresh"
import { AuthHttpClient, RefreshClient, SessionManager, SessionStore } from "moon-refresh"
import type { MockMoonServer } from "moon-refresh/testing"

/** What the program saw: every answer `AuthHttpClient` returned to it, and every failure. */
export interface Tally {
  ok: number
  unauthorized: number
  other: Array<string>
  /** The distinct `Authorization` headers of the requests answered 200 (kept, never printed). */
  readonly served: Set<string>
}

export const emptyTally = (): Tally => ({ ok: 0, unauthorized: 0, other: [], served: new Set() })

/** The outcome counts alone (no tokens), to compare with `toEqual`. */
export const counts = ({ ok, other, unauthorized }: Tally) => ({ ok, unauthorized, other })

export const stacks: ReadonlyArray<readonly [string, Layer.Layer<HttpClient.HttpClient>]> = [
  ["FetchHttpClient", FetchHttpClient.layer],
  // `@effect/platform-node`'s client over `node:http` (what its `layer` was in Effect 3).
  ["NodeHttpClient", NodeHttpClient.layerNodeHttp]
]

/** The program's services: AuthHttpClient over the given HttpClient, a manager, a memory store holding `initial`. */
export const programLayer = (
  server: MockMoonServer.Service,
  initial: Session.Session | undefined,
  httpLayer: Layer.Layer<HttpClient.HttpClient>,
  options: {
    readonly manager?: SessionManager.Options
    readonly client?: Omit<RefreshClient.Options, "baseUrl">
  } = {}
) =>
  AuthHttpClient.layer().pipe(
    Layer.provideMerge(SessionManager.layer({ margin: "1 second", ...options.manager })),
    Layer.provideMerge(SessionStore.layerMemory(initial)),
    Layer.provide(RefreshClient.layer({ baseUrl: server.url, ...options.client })),
    Layer.provide(httpLayer)
  )

/** One `GET /protected` through `AuthHttpClient`, its outcome added to `tally`. */
export const getProtected = (server: MockMoonServer.Service, tally: Tally) =>
  Effect.flatMap(AuthHttpClient.AuthHttpClient, (http) => http.get(`${server.url}/protected`)).pipe(
    // Read the body so the connection goes back to the pool.
    Effect.flatMap((response) => Effect.as(response.text, response)),
    Effect.match({
      onFailure: (error) => {
        tally.other.push(error._tag)
      },
      onSuccess: ({ request, status }) => {
        if (status === 200) {
          tally.ok++
          tally.served.add(request.headers["authorization"] ?? "")
        } else if (status === 401) tally.unauthorized++
        else tally.other.push(`HTTP ${status}`)
      }
    })
  )

/**
 * `loops` fibers each sending a request every 10 ms or so, until `done` holds
 * (checked after each request), within a hang guard.
 */
export const trafficUntil = (
  server: MockMoonServer.Service,
  tally: Tally,
  options: { readonly loops: number; readonly done: Effect.Effect<boolean, never, SessionManager.SessionManager> }
) =>
  Effect.all(
    Array.from({ length: options.loops }, () =>
      getProtected(server, tally).pipe(
        Effect.andThen(options.done),
        Effect.repeat({ schedule: Schedule.spaced("10 millis"), until: (done) => done })
      )),
    { concurrency: "unbounded", discard: true }
  ).pipe(Effect.timeoutOrElse({ duration: "120 seconds", orElse: () => Effect.fail("traffic: never done (a hang)") }))

/** Records every `SessionManager` event after `Initial`, in the test's scope. */
export const recordEvents = Effect.gen(function*() {
  const events: Array<SessionManager.SessionEvent> = []
  const subscribed = yield* Deferred.make<void>()
  yield* SessionManager.events.pipe(
    Stream.runForEach((event) =>
      event._tag === "Initial"
        ? Deferred.succeed(subscribed, undefined)
        : Effect.sync(() => {
          events.push(event)
        })
    ),
    Effect.forkScoped
  )
  // The stream opens with `Initial` once it is subscribed: nothing published after this is missed.
  yield* Deferred.await(subscribed)
  return events
})

/**
 * After one more refresh (joined if one is in flight), the store holds the
 * session the manager uses, and its refresh token is the newest live one of
 * the server's chain. Checked right after the refresh returns, before any
 * timer (so any proactive refresh) can run.
 */
export const expectStoreHoldsTheLiveToken = (server: MockMoonServer.Service) =>
  Effect.gen(function*() {
    const refreshed = yield* SessionManager.refresh
    const stored = yield* Effect.flatMap(SessionStore.SessionStore, (store) => store.load)
    const held = yield* SessionManager.current
    expect(Option.isSome(stored)).toBe(true)
    const storedToken = Option.getOrThrow(stored).refreshToken
    expect(Redacted.value(storedToken)).toBe(Redacted.value(refreshed.refreshToken))
    expect(Option.map(held, (session) => Redacted.value(session.refreshToken))).toEqual(
      Option.some(Redacted.value(storedToken))
    )
    expect(yield* server.isLive(storedToken)).toBe(true)
  })

export const tags = (events: ReadonlyArray<SessionManager.SessionEvent>) => events.map((event) => event._tag)

import { FetchHttpClient, type HttpClient } from "@effect/platform"
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import { describe, expect, it } from "@effect/vitest"
import {
  Clock,
  DateTime,
  Deferred,
  type Duration,
  Effect,
  Layer,
  Logger,
  LogLevel,
  Option,
  Redacted,
  Schedule,
  Stream
} from "effect"
import { AuthHttpClient, RefreshClient, RefreshPolicy, Session, SessionManager, SessionStore } from "moon-refresh"
import { MockMoonServer } from "moon-refresh/testing"

// The whole stack over real sockets on 127.0.0.1, in real time (`it.scopedLive`):
// MockMoonServer issues access tokens that live 2 s (1 to 2 s in fact: `expires_at`
// is whole seconds) and one-time refresh tokens, and with `reuseWindow: 0` any
// second use of a refresh token is a reuse rejection that revokes the session.
// Timing decides how many refreshes happen, not whether an assertion holds, as
// long as the event loop is never stalled for about as long as the 1 s margin.

/** What the program saw: every answer `AuthHttpClient` returned to it, and every failure. */
interface Tally {
  ok: number
  unauthorized: number
  other: Array<string>
  /** The distinct `Authorization` headers of the requests answered 200 (kept, never printed). */
  readonly served: Set<string>
}

const emptyTally = (): Tally => ({ ok: 0, unauthorized: 0, other: [], served: new Set() })

/** The outcome counts alone (no tokens), to compare with `toEqual`. */
const counts = ({ ok, other, unauthorized }: Tally) => ({ ok, unauthorized, other })

const stacks: ReadonlyArray<readonly [string, Layer.Layer<HttpClient.HttpClient>]> = [
  ["FetchHttpClient", FetchHttpClient.layer],
  ["NodeHttpClient", NodeHttpClient.layer]
]

/** The program's services: AuthHttpClient over the given HttpClient, a manager, a memory store holding `initial`. */
const programLayer = (
  server: MockMoonServer.Service,
  initial: Session.Session | undefined,
  httpLayer: Layer.Layer<HttpClient.HttpClient>,
  options: {
    readonly manager?: SessionManager.Options
    readonly client?: Omit<RefreshClient.Options, "baseUrl">
  } = {}
) =>
  AuthHttpClient.layer.pipe(
    Layer.provideMerge(SessionManager.layer({ margin: "1 second", ...options.manager })),
    Layer.provideMerge(SessionStore.layerMemory(initial)),
    Layer.provide(RefreshClient.layer({ baseUrl: server.url, ...options.client })),
    Layer.provide(httpLayer)
  )

/** One `GET /protected` through `AuthHttpClient`, its outcome added to `tally`. */
const getProtected = (server: MockMoonServer.Service, tally: Tally) =>
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

/** `loops` fibers each sending a request every 10 ms or so, for `duration`. */
const traffic = (
  server: MockMoonServer.Service,
  tally: Tally,
  options: { readonly loops: number; readonly duration: Duration.DurationInput }
) =>
  Effect.all(
    Array.from({ length: options.loops }, () =>
      Effect.repeat(
        getProtected(server, tally),
        Schedule.spaced("10 millis").pipe(Schedule.upTo(options.duration))
      )),
    { concurrency: "unbounded", discard: true }
  )

/** Records every `SessionManager` event after `Initial`, in the test's scope. */
const recordEvents = Effect.gen(function*() {
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
const expectStoreHoldsTheLiveToken = (server: MockMoonServer.Service) =>
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

const tags = (events: ReadonlyArray<SessionManager.SessionEvent>) => events.map((event) => event._tag)

describe("SessionManager + AuthHttpClient against MockMoonServer (real HTTP, real time)", () => {
  for (const [name, httpLayer] of stacks) {
    it.scopedLive(
      `over ${name}: keeps a session alive across 3+ expiries of 2 s tokens with no 401 and no reuse`,
      () =>
        Effect.gen(function*() {
          const server = yield* MockMoonServer.make({ accessTokenLifetime: 2, reuseWindow: 0 })
          const initial = Session.unsafeMake(yield* server.issueSession())
          const tally = emptyTally()

          yield* Effect.gen(function*() {
            const events = yield* recordEvents
            // 6.5 s spans more than three lifetimes of a 2 s token.
            yield* traffic(server, tally, { loops: 4, duration: "6500 millis" })
            // Refreshed by the manager alone, ahead of each expiry, while the requests ran.
            expect((yield* server.stats).rotations).toBeGreaterThanOrEqual(3)
            yield* expectStoreHoldsTheLiveToken(server)

            expect(tags(events).filter((tag) => tag !== "Refreshed")).toEqual([])
          }).pipe(Effect.provide(programLayer(server, initial, httpLayer)))

          const stats = yield* server.stats
          expect(tally.unauthorized).toBe(0)
          expect(tally.other).toEqual([])
          // Answered 200 with the first access token and at least 3 of its successors.
          expect(tally.served.size).toBeGreaterThanOrEqual(4)
          expect(stats.reuseRejections).toBe(0)
          expect(stats.unknownTokens).toBe(0)
          // Every POST rotated: none was a second, concurrent refresh of a spent token.
          expect(stats.refreshRequests).toBe(stats.rotations)
        }),
      15_000
    )
  }

  it.scopedLive("100 concurrent requests on an expired session cause exactly 1 refresh POST", () =>
    Effect.gen(function*() {
      // Issued with the server's clock a minute behind: the token is already expired,
      // for the server (once its clock is set right) and for the manager alike. The
      // new token lives a minute, so however slow the 100 requests are, none outlives it.
      let skew = -60_000
      const server = yield* MockMoonServer.make({
        accessTokenLifetime: 60,
        reuseWindow: 0,
        now: () => Date.now() + skew
      })
      const issued = Session.unsafeMake(yield* server.issueSession())
      skew = 0
      expect(DateTime.toEpochMillis(issued.expiresAt)).toBeLessThanOrEqual(yield* Clock.currentTimeMillis)
      const tally = emptyTally()

      yield* Effect.all(Array.from({ length: 100 }, () => getProtected(server, tally)), {
        concurrency: "unbounded",
        discard: true
      }).pipe(
        Effect.provide(programLayer(server, issued, FetchHttpClient.layer, { manager: { autoRefresh: false } }))
      )

      expect(counts(tally)).toEqual({ ok: 100, unauthorized: 0, other: [] })
      // The manager saw the expiry: no request went out with the dead token.
      expect(yield* server.stats).toMatchObject({ refreshRequests: 1, rotations: 1, unauthorized: 0 })
    }))

  it.scopedLive("100 concurrent requests answered 401 cause exactly 1 refresh POST and 100 replays", () =>
    Effect.gen(function*() {
      // The server's clock jumps a minute ahead: it rejects a token the client still
      // counts as valid. The new token lives a minute by the server's clock.
      let skew = 0
      const server = yield* MockMoonServer.make({
        accessTokenLifetime: 60,
        reuseWindow: 0,
        now: () => Date.now() + skew
      })
      const issued = yield* server.issueSession()
      skew = 60_000
      const tally = emptyTally()

      yield* Effect.all(Array.from({ length: 100 }, () => getProtected(server, tally)), {
        concurrency: "unbounded",
        discard: true
      }).pipe(
        Effect.provide(
          programLayer(server, Session.unsafeMake(issued), FetchHttpClient.layer, {
            manager: { autoRefresh: false }
          })
        )
      )

      expect(counts(tally)).toEqual({ ok: 100, unauthorized: 0, other: [] })
      expect(yield* server.stats).toMatchObject({
        refreshRequests: 1,
        rotations: 1,
        reuseRejections: 0,
        protectedRequests: 200,
        unauthorized: 100
      })
    }))

  it.scopedLive(
    "rides out an outage of three 503s inside one refresh (the client's retry policy)",
    () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.make({ accessTokenLifetime: 2, reuseWindow: 0 })
        const initial = Session.unsafeMake(yield* server.issueSession())
        const outage = MockMoonServer.Fault.Status({ status: 503, body: { message: "Service Unavailable" } })
        yield* server.script(outage, outage, outage)
        const tally = emptyTally()

        yield* Effect.gen(function*() {
          const events = yield* recordEvents
          // The default policy waits about 0.2 + 0.4 + 0.8 s: longer than the 1 s margin,
          // so the token expires mid-refresh and requests wait for the new one.
          yield* traffic(server, tally, { loops: 4, duration: "3 seconds" })
          yield* expectStoreHoldsTheLiveToken(server)

          expect(tags(events).filter((tag) => tag !== "Refreshed")).toEqual([])
        }).pipe(Effect.provide(programLayer(server, initial, FetchHttpClient.layer)))

        const refreshes = (yield* server.requests).filter((request) => request.path === "/auth/refresh")
        expect(refreshes.slice(0, 4).map((request) => request.status)).toEqual([503, 503, 503, 200])
        expect(tally.unauthorized).toBe(0)
        expect(tally.other).toEqual([])
        expect(tally.ok).toBeGreaterThan(0)
        expect(yield* server.stats).toMatchObject({ faults: 3, reuseRejections: 0 })
      }),
    15_000
  )

  it.scopedLive(
    "rides out an outage the client gives up on: the session is kept and the manager retries after its cooldown",
    () =>
      Effect.gen(function*() {
        // Tokens live 4 to 5 s and are refreshed 4 s before expiry: the two failed
        // refreshes and their cooldowns (100 ms, then 200 ms) fit well inside the margin,
        // even on a slow machine.
        const server = yield* MockMoonServer.make({ accessTokenLifetime: 5, reuseWindow: 0 })
        const outage = MockMoonServer.Fault.Status({ status: 503, body: { message: "Service Unavailable" } })
        yield* server.script(outage, outage)
        const tally = emptyTally()

        yield* Effect.gen(function*() {
          // Signed in once the events are recorded, so that none is missed.
          const events = yield* recordEvents
          yield* SessionManager.signIn(Session.unsafeMake(yield* server.issueSession()))
          yield* traffic(server, tally, { loops: 4, duration: "2 seconds" })
          yield* expectStoreHoldsTheLiveToken(server)

          const failed = events.filter(SessionManager.SessionEvent.$is("RefreshFailed"))
          expect(failed.map(({ error, willRetry }) => [error._tag, willRetry])).toEqual([
            ["ServerError", true],
            ["ServerError", true]
          ])
          expect(tags(events).slice(0, 4)).toEqual(["SignedIn", "RefreshFailed", "RefreshFailed", "Refreshed"])
          expect(tags(events)).not.toContain("SignedOut")
        }).pipe(
          Effect.provide(
            programLayer(server, undefined, FetchHttpClient.layer, {
              manager: { margin: "4 seconds", cooldown: "100 millis" },
              client: { policy: RefreshPolicy.none }
            })
          )
        )

        const refreshes = (yield* server.requests).filter((request) => request.path === "/auth/refresh")
        expect(refreshes.slice(0, 3).map((request) => request.status)).toEqual([503, 503, 200])
        expect(tally.unauthorized).toBe(0)
        expect(tally.other).toEqual([])
        expect(yield* server.stats).toMatchObject({ faults: 2, reuseRejections: 0 })
      }).pipe(
        // The manager logs each failed refresh as a warning: expected here.
        Logger.withMinimumLogLevel(LogLevel.Error)
      ),
    15_000
  )
})

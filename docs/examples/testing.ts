// docs/07-testing.md: testing your own program with MockRefreshClient (fast,
// TestClock) and MockMoonServer (real HTTP, faults). Each export is the body of
// an @effect/vitest test: `it.effect("…", () => refreshesAheadOfExpiry)`.
import { expect } from "@effect/vitest"
import { Duration, Effect, Fiber, Layer, Redacted } from "effect"
import { FetchHttpClient } from "effect/http"
import { TestClock } from "effect/testing"
import {
  AuthHttpClient,
  RefreshClient,
  RefreshError,
  RefreshPolicy,
  Session,
  SessionManager,
  SessionStore
} from "moon-refresh"
import { MockMoonServer, MockRefreshClient } from "moon-refresh/testing"

// [program]
// The program under test: a token for the next API call, or a request to sign
// in again. It only knows SessionManager; the tests decide what is behind it.
export type Access =
  | { readonly _tag: "Token"; readonly token: Redacted.Redacted<string> }
  | { readonly _tag: "SignInAgain" }

export const tokenForApi = SessionManager.accessToken.pipe(
  Effect.map((token): Access => ({ _tag: "Token", token })),
  Effect.catchTags({
    NoSessionError: () => Effect.succeed<Access>({ _tag: "SignInAgain" }),
    TokenRejectedError: () => Effect.succeed<Access>({ _tag: "SignInAgain" })
  })
)

const tokenOf = (access: Access) => (access._tag === "Token" ? Redacted.value(access.token) : access._tag)
// [/program]

// [mock-layer]
// The application's SessionManager, with the mock in place of the real
// RefreshClient. MockRefreshClient.layer provides both the RefreshClient the
// manager uses and the MockRefreshClient controls the test uses.
const MockSessionLayer = (options?: MockRefreshClient.Options) =>
  SessionManager.layer({ margin: "1 minute" }).pipe(
    Layer.provideMerge(MockRefreshClient.layer(options)),
    Layer.provide(SessionStore.layerMemory())
  )

// Signs in with a session the mock issued, so the mock knows its refresh token.
const signInWithMock = Effect.gen(function*() {
  const mock = yield* MockRefreshClient.MockRefreshClient
  yield* SessionManager.signIn(yield* mock.issueSession())
  return mock
})
// [/mock-layer]

// [mock-expiry]
// it.effect("refreshes once, ahead of expiry, and hands out the new token", () => …)
export const refreshesAheadOfExpiry = Effect.gen(function*() {
  const mock = yield* signInWithMock
  expect(tokenOf(yield* tokenForApi)).toBe("mock-access-token-1")

  // An hour of the TestClock passes in no time; the manager refreshes at 59 minutes.
  yield* TestClock.adjust("1 hour")
  expect(tokenOf(yield* tokenForApi)).toBe("mock-access-token-2")
  expect(yield* mock.stats).toMatchObject({ calls: 1, rotations: 1, reuseRejections: 0 })
}).pipe(Effect.provide(MockSessionLayer({ lifetime: "1 hour" })))
// [/mock-expiry]

// [mock-stampede]
// it.effect("100 concurrent readers of an expired session cause one refresh", () => …)
export const oneRefreshForManyReaders = Effect.gen(function*() {
  const mock = yield* MockRefreshClient.MockRefreshClient
  // A session that has already expired; its refresh takes 2 seconds.
  yield* SessionManager.signIn(yield* mock.issueSession({ lifetime: 0 }))
  yield* mock.script(MockRefreshClient.succeed({ delay: "2 seconds" }))
  const readers = yield* Effect.forkChild(
    Effect.all(Array.from({ length: 100 }, () => tokenForApi), { concurrency: 100 })
  )
  yield* TestClock.adjust("2 seconds")
  const tokens = (yield* Fiber.join(readers)).map(tokenOf)
  expect(new Set(tokens)).toStrictEqual(new Set(["mock-access-token-2"]))
  expect((yield* mock.stats).calls).toBe(1)
}).pipe(Effect.provide(MockSessionLayer()))
// [/mock-stampede]

// [mock-outage]
// it.effect("keeps the valid token through an outage, then refreshes", () => …)
const unavailable = new RefreshError.ServerError({ status: 503, message: "Service Unavailable" })

export const ridesOutAnOutage = Effect.gen(function*() {
  const mock = yield* signInWithMock
  // Three failed refreshes, then the script is empty and calls succeed again.
  yield* mock.script(...Array.from({ length: 3 }, () => MockRefreshClient.fail(unavailable)))

  yield* TestClock.adjust("3570 seconds") // 59:30
  // The refreshes at 59:00, 59:10 and 59:30 failed; the old token is still valid.
  expect(tokenOf(yield* tokenForApi)).toBe("mock-access-token-1")
  expect((yield* mock.stats).calls).toBe(3)

  // The cooldown doubles (10 s, 20 s, 40 s): the next try, at 60:10, succeeds.
  yield* TestClock.adjust("40 seconds")
  expect(tokenOf(yield* tokenForApi)).toBe("mock-access-token-2")
}).pipe(Effect.provide(MockSessionLayer({ lifetime: "1 hour" })))
// [/mock-outage]

// [mock-rejected]
// it.effect("asks the user to sign in again when the refresh token is rejected", () => …)
export const signsOutOnRejection = Effect.gen(function*() {
  const mock = yield* signInWithMock
  // A session revoked elsewhere (a sign-out on another device): the next
  // refresh answers "Refresh Token Not Found", as Moon would.
  yield* mock.revokeSession((yield* SessionManager.session).refreshToken)
  yield* TestClock.adjust("1 hour")
  expect(yield* tokenForApi).toStrictEqual({ _tag: "SignInAgain" })
}).pipe(Effect.provide(MockSessionLayer({ lifetime: "1 hour" })))
// [/mock-rejected]

// [mock-lost]
// it.effect("against a strict server, a lost answer spends the token: the retry signs the user out", () => …)
export const lostAnswerSignsOut = Effect.gen(function*() {
  const mock = yield* signInWithMock
  // The server rotates, but the answer never arrives (a connection reset).
  yield* mock.script(MockRefreshClient.lost())
  yield* TestClock.adjust("59 minutes")
  expect(tokenOf(yield* tokenForApi)).toBe("mock-access-token-1") // still valid: kept

  // After the cooldown the manager retries with the token it holds, which the
  // server already spent: a reuse, and a strict server revokes the session.
  yield* TestClock.adjust("10 seconds")
  expect(yield* tokenForApi).toStrictEqual({ _tag: "SignInAgain" })
  expect(yield* mock.stats).toMatchObject({ rotations: 1, reuseRejections: 1 })
}).pipe(Effect.provide(MockSessionLayer({ lifetime: "1 hour" })))
// [/mock-lost]

// [mock-lost-gotrue]
// it.effect("against Supabase's rules, the retry after a lost answer gets the session back, however late", () => …)
export const lostAnswerWithGoTrue = Effect.gen(function*() {
  const mock = yield* signInWithMock
  // At 59:00 the server rotates and the answer is lost; the two retries after
  // it (59:10 and 59:30) find the server down.
  yield* mock.script(MockRefreshClient.lost(), MockRefreshClient.fail(unavailable), MockRefreshClient.fail(unavailable))
  yield* TestClock.adjust("59 minutes")

  // The retry at 60:10 presents the token spent 70 seconds earlier. It is the
  // parent of the active token (nobody refreshed after it), which Supabase's
  // auth server always forgives: it answers with the refresh token it issued
  // at 59:00 (mock-refresh-token-2) and a new access token.
  yield* TestClock.adjust("70 seconds")
  expect(tokenOf(yield* tokenForApi)).toBe("mock-access-token-3")
  expect(yield* mock.isLive((yield* SessionManager.session).refreshToken)).toBe(true)
  expect(yield* mock.stats).toMatchObject({ rotations: 1, reusesTolerated: 1, reuseRejections: 0 })
}).pipe(Effect.provide(MockSessionLayer({ lifetime: "1 hour", reuse: "gotrue" })))
// [/mock-lost-gotrue]

// [server-layer]
// The same application over real HTTP: the real RefreshClient and an
// AuthHttpClient, both pointed at a MockMoonServer on 127.0.0.1.
const quickRetries = RefreshPolicy.exponential({
  base: "10 millis",
  maxRetries: 3,
  maxDelay: "50 millis",
  maxElapsed: "2 seconds"
})

const ServerAppLayer = (server: MockMoonServer.Service) =>
  AuthHttpClient.layer().pipe(
    Layer.provideMerge(SessionManager.layer({ autoRefresh: false })),
    Layer.provide(RefreshClient.layer({ baseUrl: server.url, policy: quickRetries })),
    Layer.provide(SessionStore.layerMemory()),
    Layer.provide(FetchHttpClient.layer)
  )

// The program's API call: GET /protected, which answers 401 to an expired token.
const callProtected = (server: MockMoonServer.Service) =>
  Effect.gen(function*() {
    const http = yield* AuthHttpClient.AuthHttpClient
    const response = yield* http.get(`${server.url}/protected`)
    return response.status
  })
// [/server-layer]

// [server-replay]
// it.live("refreshes through a 503 and replays the request the server refused", () => …)
export const replaysAfterRefresh = Effect.gen(function*() {
  // The server's clock can run ahead of ours: here, to expire its access token early.
  let serverAhead = 0
  const server = yield* MockMoonServer.make({ now: () => Date.now() + serverAhead })
  const seeded = yield* server.issueSession()

  yield* Effect.gen(function*() {
    yield* SessionManager.signIn(Session.unsafeMake(seeded))
    expect(yield* callProtected(server)).toBe(200)

    serverAhead = Duration.toMillis("2 hours") // the server now sees an expired token
    yield* server.script(MockMoonServer.Fault.Status({ status: 503, body: "<title>Service Unavailable</title>" }))
    // 401, refresh (a 503, retried), replay with the new token: 200.
    expect(yield* callProtected(server)).toBe(200)
  }).pipe(Effect.provide(ServerAppLayer(server)))

  expect(yield* server.stats).toMatchObject({ refreshRequests: 2, rotations: 1, reuseRejections: 0 })
})
// [/server-replay]

// [server-lost]
// it.live("a reset after the server rotated: signed out by a strict server, recovered under GoTrue's rules", () => …)
const refreshAfterReset = (reuse: MockMoonServer.ReuseMode) =>
  Effect.gen(function*() {
    const server = yield* MockMoonServer.make({ reuse })
    const seeded = yield* server.issueSession()
    // The server spends the token and issues a new one, then the connection drops.
    yield* server.script(MockMoonServer.Fault.ResetAfterRotate())
    const client = yield* RefreshClient.make({ baseUrl: server.url, policy: quickRetries })
    // The client retries the TransportError with the token it still holds.
    return yield* Effect.result(client.refresh(seeded.refreshToken))
  }).pipe(Effect.provide(FetchHttpClient.layer))

export const lostAnswerStrictAndGoTrue = Effect.gen(function*() {
  // MockMoonServer's default forgives no reuse: the retry is one, and the session is revoked.
  const strict = yield* refreshAfterReset("window")
  expect(strict._tag === "Failure" && strict.failure._tag).toBe("TokenRejectedError")
  // Under GoTrue's rules the retried token is the parent of the active one: the session comes back.
  const gotrue = yield* refreshAfterReset("gotrue")
  expect(gotrue._tag).toBe("Success")
})
// [/server-lost]

// [server-audit]
// it.live("puts no token it was given in what the program logs or returns", () => …)
export const noTokenInTheOutput = Effect.gen(function*() {
  const server = yield* MockMoonServer.make()
  const seeded = yield* server.issueSession()
  yield* server.script(MockMoonServer.Fault.Status({ status: 500, body: { msg: "boom" } }))
  const client = yield* RefreshClient.make({ baseUrl: server.url, policy: RefreshPolicy.none })
  const error = yield* Effect.flip(client.refresh(seeded.refreshToken))
  const printed = `${String(error)} ${JSON.stringify(error)}`
  for (const token of yield* server.issuedTokens) expect(printed).not.toContain(Redacted.value(token))
}).pipe(Effect.provide(FetchHttpClient.layer))
// [/server-audit]

// [server-timeout]
// it.effect("gives up on an answer slower than the timeout", () => …)
// On the TestClock: the server holds the request for longer than the test may
// run, and the test moves the clock past the timeout once the server has it.
// However slow the machine, nothing real races the timer.
const arrived = (server: MockMoonServer.Service): Effect.Effect<void> =>
  Effect.flatMap(server.requests, (requests) =>
    requests.length > 0
      ? Effect.void
      // Real time: the socket answers in real time, whatever the fiber's clock.
      : Effect.andThen(Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 2))), arrived(server)))

export const timeoutOnTheTestClock = Effect.gen(function*() {
  const server = yield* MockMoonServer.make()
  const seeded = yield* server.issueSession()
  yield* server.script(MockMoonServer.Fault.Delay({ millis: 60_000 }))
  const client = yield* RefreshClient.make({ baseUrl: server.url, timeout: "200 millis", policy: RefreshPolicy.none })
  const fiber = yield* Effect.forkChild(Effect.flip(client.refresh(seeded.refreshToken)))
  yield* arrived(server)
  yield* TestClock.adjust("200 millis")
  const error = yield* Fiber.join(fiber)
  expect(error._tag === "TransportError" && error.reason).toBe("Timeout")
}).pipe(Effect.provide(FetchHttpClient.layer))
// [/server-timeout]

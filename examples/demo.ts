/**
 * `npm run demo`: refreshes a Moon session over real HTTP.
 *
 * By default it starts a Moon-compatible server (`MockMoonServer`) on
 * 127.0.0.1 inside this process, makes its next answer a 500, and shows the
 * default retry policy riding it out. With `MOON_BASE_URL` and
 * `MOON_REFRESH_TOKEN` both set, it refreshes once against that server instead.
 *
 * Tokens are never printed: sessions hold them as `Redacted`.
 */
import { FetchHttpClient } from "@effect/platform"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Config, Console, DateTime, Effect, Either, HashMap, Logger, LogLevel, Option, type Redacted } from "effect"
import { RefreshClient, type Session } from "moon-refresh"
import { MockMoonServer } from "moon-refresh/testing"

const describeSession = (session: Session.Session) =>
  `session:  accessToken ${session.accessToken}, refreshToken ${session.refreshToken}, ` +
  `${session.tokenType}, user ${session.user.email ?? session.user.id}`

const describeExpiry = (session: Session.Session) =>
  Effect.map(DateTime.now, (now) => {
    const minutes = Math.round(DateTime.distance(now, session.expiresAt) / 60_000)
    return `expires:  ${DateTime.formatIso(session.expiresAt)} (in ${minutes} min)`
  })

// The client logs each failed attempt at Debug level; the demo keeps those
// entries to say, next to the server's view of each attempt, what the client made of it.
const failedAttempts: Array<string> = []
const attemptLogger = Logger.make(({ annotations }) => {
  const error = HashMap.get(annotations, "error")
  const message = HashMap.get(annotations, "message")
  if (Option.isSome(error)) {
    failedAttempts.push(`${error.value}${Option.isSome(message) ? ` "${message.value}"` : ""}`)
  }
})

const local = Effect.gen(function*() {
  const server = yield* MockMoonServer.make({ accessTokenLifetime: 3600 })
  const seeded = yield* server.issueSession({ user: { email: "demo@example.com" } })
  yield* server.script(MockMoonServer.Fault.Status({ status: 500, body: { message: "Internal server error" } }))
  yield* Console.log(`server:   Moon-compatible, in this process, at ${server.url}; next answer scripted: HTTP 500`)

  const refresh = (label: string, refreshToken: Redacted.Redacted<string>) =>
    Effect.gen(function*() {
      const seen = (yield* server.requests).length
      failedAttempts.length = 0
      yield* Console.log(`${label}: POST ${server.url}/auth/refresh {"refresh_token":"<redacted>"}`)
      const session = yield* RefreshClient.refresh(refreshToken)
      const attempts = (yield* server.requests).slice(seen)
      for (const [i, request] of attempts.entries()) {
        const client = failedAttempts[i] === undefined ? "new session" : `${failedAttempts[i]}, retried`
        yield* Console.log(`  attempt ${i + 1}: HTTP ${request.status ?? "none"} -> ${client}`)
      }
      return session
    })

  yield* Effect.gen(function*() {
    const first = yield* refresh("refresh 1", seeded.refreshToken)
    yield* Console.log(describeSession(first))
    yield* Console.log(yield* describeExpiry(first))

    const second = yield* refresh("refresh 2 (with the rotated token)", first.refreshToken)
    const oldLive = yield* server.isLive(first.refreshToken)
    const newLive = yield* server.isLive(second.refreshToken)
    yield* Console.log(`rotation: previous refresh token live: ${oldLive}; newest: ${newLive}`)
  }).pipe(
    // Built here, not at the top: the client needs the URL of the server started above.
    Effect.provide(RefreshClient.layer({ baseUrl: server.url }))
  )

  const stats = yield* server.stats
  yield* Console.log(
    `server:   ${stats.refreshRequests} POST /auth/refresh, ${stats.rotations} rotations, ` +
      `${stats.reuseRejections} reuse rejections`
  )
}).pipe(
  Effect.provide(FetchHttpClient.layer),
  Effect.scoped
)

const remote = (baseUrl: string) =>
  Effect.gen(function*() {
    const refreshToken = yield* Config.redacted("MOON_REFRESH_TOKEN")
    yield* Console.log(`POST ${baseUrl.replace(/\/+$/, "")}/auth/refresh {"refresh_token":"<redacted>"}`)
    const result = yield* Effect.either(RefreshClient.refresh(refreshToken))
    if (Either.isLeft(result)) {
      // An expected outcome against a real server: say what it was and exit 1, without a stack trace.
      yield* Console.error(`refresh failed: ${result.left._tag}: ${result.left.message}`)
      return yield* Effect.sync(() => {
        process.exitCode = 1
      })
    }
    const session = result.right
    yield* Console.log(describeSession(session))
    yield* Console.log(yield* describeExpiry(session))
    yield* Console.log(
      "note:     MOON_REFRESH_TOKEN is now spent; the new refresh token is not printed (it is a secret)."
    )
  }).pipe(
    Effect.provide(RefreshClient.layerConfig()),
    Effect.provide(FetchHttpClient.layer)
  )

const main = Effect.gen(function*() {
  const baseUrl = yield* Config.option(Config.nonEmptyString("MOON_BASE_URL"))
  const token = yield* Config.option(Config.nonEmptyString("MOON_REFRESH_TOKEN"))
  yield* Console.log("moon-refresh demo")
  if (Option.isSome(baseUrl) && Option.isSome(token)) return yield* remote(baseUrl.value)
  if (Option.isSome(baseUrl) || Option.isSome(token)) {
    yield* Console.log("(set both MOON_BASE_URL and MOON_REFRESH_TOKEN to use a real server; running locally)")
  }
  yield* local
})

// `runMain` prints logs with the pretty logger. Keep it for Info and above;
// Debug lines only feed `attemptLogger`.
const demoLogger = Logger.zip(
  Logger.filterLogLevel(Logger.prettyLoggerDefault, LogLevel.greaterThanEqual(LogLevel.Info)),
  attemptLogger
)

main.pipe(
  Effect.provide(Logger.replace(Logger.prettyLoggerDefault, demoLogger)),
  Logger.withMinimumLogLevel(LogLevel.Debug),
  NodeRuntime.runMain
)

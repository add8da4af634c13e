/**
 * `npm run demo`: refreshes a Moon session over real HTTP.
 *
 * By default it starts a Moon-compatible server (`MockMoonServer`) on
 * 127.0.0.1 inside this process and runs two parts:
 *
 * 1. `RefreshClient`: the server's next answer is a 500, and the default
 *    retry policy rides it out.
 * 2. `SessionManager` and `AuthHttpClient`, as a timeline: a session whose
 *    access tokens are issued for 2 s kept fresh across 3 expiries while
 *    requests run, an outage of two 503s ridden out, then a second session,
 *    left unused until it expired, on which 100 concurrent requests cause
 *    exactly one refresh.
 *
 * It checks each of those promises as it goes, prints the moon_refresh_*
 * metrics the run recorded (examples/metrics-table.ts), and ends with one
 * line: that all checks passed, or which failed (exit code 1).
 *
 * With `MOON_BASE_URL` and `MOON_REFRESH_TOKEN` both set, it refreshes once
 * against that server instead (part 1 only: a real token can be used once).
 *
 * Tokens are never printed: sessions hold them as `Redacted`.
 */
import {
  Clock,
  Config,
  Console,
  DateTime,
  Duration,
  Effect,
  Fiber,
  Layer,
  Logger,
  LogLevel,
  Option,
  Queue,
  type Redacted,
  References,
  Result,
  Schedule,
  Stream
} from "effect"
import { FetchHttpClient } from "effect/http"
import { AuthHttpClient, RefreshClient, RefreshPolicy, Session, SessionManager, SessionStore } from "moon-refresh"
import { MockMoonServer } from "moon-refresh/testing"
import { runMain } from "../docs/examples/run-main.js"
import { metricsTable } from "./metrics-table.js"

// Every promise the demo makes, checked where it is kept; the last line counts them.
const checks = { passed: 0, broken: [] as Array<string> }
const check = (ok: boolean, promise: string) =>
  Effect.sync(() => {
    if (ok) checks.passed++
    else checks.broken.push(promise)
  })

const describeSession = (session: Session.Session) =>
  `session:  accessToken ${session.accessToken}, refreshToken ${session.refreshToken}, ` +
  `${session.tokenType}, user ${session.user.email ?? session.user.id}`

const describeExpiry = (session: Session.Session) =>
  Effect.map(DateTime.now, (now) => {
    const minutes = Math.round(Duration.toMillis(DateTime.distance(now, session.expiresAt)) / 60_000)
    return `expires:  ${DateTime.formatIso(session.expiresAt)} (in ${minutes} min)`
  })

// The client logs each failed attempt at Debug level; the demo keeps those
// entries to say, next to the server's view of each attempt, what the client made of it.
const failedAttempts: Array<string> = []
const attemptLogger = Logger.make(({ fiber }) => {
  const { error, message } = fiber.getRef(References.CurrentLogAnnotations)
  if (error !== undefined) {
    failedAttempts.push(`${error}${message !== undefined ? ` "${message}"` : ""}`)
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
    yield* check(!oldLive && newLive, "each refresh spends the previous refresh token")
  }).pipe(
    // Built here, not at the top: the client needs the URL of the server started above.
    Effect.provide(RefreshClient.layer({ baseUrl: server.url }))
  )

  const stats = yield* server.stats
  yield* Console.log(
    `server:   ${stats.refreshRequests} POST /auth/refresh, ${stats.rotations} rotations, ` +
      `${stats.reuseRejections} reuse rejections`
  )
  yield* check(stats.refreshRequests === 3, "the HTTP 500 retried once: 3 POSTs for 2 refreshes")
}).pipe(
  Effect.provide(FetchHttpClient.layer),
  Effect.scoped
)

// ---------------------------------------------------------------------------
// Part 2: SessionManager and AuthHttpClient, as a timeline
// ---------------------------------------------------------------------------

/** What the program got back from `AuthHttpClient`: every answer and every failure. */
interface Tally {
  ok: number
  unauthorized: number
  failed: Array<string>
}

const manager = Effect.gen(function*() {
  // `expires_at` is in whole seconds, as Moon's: a token issued for 2 s at
  // 10.3 s expires at 12 s, so it is valid 1 to 2 s.
  const server = yield* MockMoonServer.make({ accessTokenLifetime: 2 })
  const start = yield* Clock.currentTimeMillis
  const stamp = (millis: number) => `+${((millis - start) / 1000).toFixed(2)}s`
  const line = (text: string) =>
    Effect.flatMap(Clock.currentTimeMillis, (now) => Console.log(`  ${stamp(now).padStart(6)}  ${text}`))
  const postCount = Effect.map(server.stats, (stats) => stats.refreshRequests)

  const tally: Tally = { ok: 0, unauthorized: 0, failed: [] }
  const request = Effect.flatMap(AuthHttpClient.AuthHttpClient, (http) => http.get(`${server.url}/protected`)).pipe(
    Effect.flatMap((response) => Effect.as(response.text, response.status)),
    Effect.match({
      onFailure: (error) => void tally.failed.push(error._tag),
      onSuccess: (status) => {
        if (status === 200) tally.ok++
        else if (status === 401) tally.unauthorized++
        else tally.failed.push(`HTTP ${status}`)
      }
    })
  )
  const summary = (before: Tally) => {
    const ok = tally.ok - before.ok
    const unauthorized = tally.unauthorized - before.unauthorized
    const failed = tally.failed.length - before.failed.length
    return `${ok}/${ok + unauthorized + failed} requests answered 200, ${unauthorized} returned 401, ${failed} failed`
  }
  const snapshot = (): Tally => ({ ...tally, failed: [...tally.failed] })
  const clean = (before: Tally) =>
    tally.unauthorized === before.unauthorized && tally.failed.length === before.failed.length

  const program = (options: { readonly autoRefresh: boolean }, initial?: Session.Session) =>
    AuthHttpClient.layer().pipe(
      Layer.provideMerge(SessionManager.layer({ margin: "1 second", cooldown: "100 millis", ...options })),
      Layer.provide(SessionStore.layerMemory(initial)),
      // One quick retry inside a refresh; the manager's cooldown comes after that.
      Layer.provide(RefreshClient.layer({
        baseUrl: server.url,
        policy: RefreshPolicy.exponential({
          base: "50 millis",
          maxRetries: 1,
          maxDelay: "50 millis",
          maxElapsed: "1 second",
          jitter: false
        })
      })),
      Layer.provide(FetchHttpClient.layer)
    )

  yield* Console.log("")
  yield* Console.log(
    `session manager: access tokens issued for 2 s, refreshed 1 s before expiry; 4 loops of GET ${server.url}/protected`
  )
  yield* Console.log("  (expires_at is whole seconds, as Moon's: each access token is valid 1 to 2 s)")

  // A second session, issued now and used last: by then it has expired.
  const idle = Session.unsafeMake(yield* server.issueSession({ user: { email: "idle@example.com" } }))
  yield* line("second session (idle@example.com) issued, left unused until the end")

  yield* Effect.gen(function*() {
    // Prints each event as it happens, and hands it to the timeline below.
    let expiresAt = 0
    let signedOut = false
    const events = yield* Queue.unbounded<SessionManager.SessionEvent>()
    yield* SessionManager.events.pipe(
      Stream.runForEach((event) =>
        Effect.gen(function*() {
          const now = yield* Clock.currentTimeMillis
          if (event._tag === "SignedIn" || event._tag === "Refreshed") {
            const next = DateTime.toEpochMillis(event.session.expiresAt)
            yield* line(
              event._tag === "SignedIn"
                ? `SignedIn: access token expires at ${stamp(next)}`
                : `Refreshed ${((expiresAt - now) / 1000).toFixed(2)} s before expiry: next expires at ${stamp(next)}`
            )
            expiresAt = next
          } else if (event._tag === "RefreshFailed") {
            const error = event.error
            const status = "status" in error ? ` (HTTP ${error.status})` : ""
            const left = ((expiresAt - now) / 1000).toFixed(2)
            yield* line(
              `RefreshFailed: ${error._tag}${status}, willRetry: ${event.willRetry}; session kept, token valid ${left} s more`
            )
          } else if (event._tag === "Initial") {
            // Every subscription opens with what is held at that moment.
            yield* line(`Initial: ${Option.isSome(event.session) ? "a session is held" : "no session yet"}`)
          } else {
            signedOut ||= event._tag === "SignedOut"
            yield* line(event._tag)
          }
          yield* Queue.offer(events, event)
        })
      ),
      Effect.forkScoped
    )
    const waitFor = (tag: SessionManager.SessionEvent["_tag"]) =>
      Queue.take(events).pipe(
        Effect.repeat({ until: (event) => event._tag === tag }),
        Effect.timeoutOrElse({
          duration: "5 seconds",
          orElse: () => Effect.fail(new Error(`no ${tag} event within 5 s`))
        })
      )
    // Let the subscription start before the first event.
    yield* Effect.sleep("20 millis")

    yield* SessionManager.signIn(
      Session.unsafeMake(yield* server.issueSession({ user: { email: "demo@example.com" } }))
    )
    const loops = yield* Effect.forkScoped(
      Effect.all(
        Array.from({ length: 4 }, () => Effect.repeat(request, Schedule.spaced("20 millis"))),
        { concurrency: "unbounded", discard: true }
      )
    )

    // Three expiries, each preceded by a refresh.
    const proactive = snapshot()
    for (let i = 0; i < 3; i++) yield* waitFor("Refreshed")
    yield* line(`meanwhile ${summary(proactive)}`)
    yield* check(clean(proactive), "no 401 and no failure while the session was refreshed 3 times")

    // An outage: the refresh that is due next fails twice (1 retry), the manager
    // keeps the session, and retries after its cooldown.
    const outage = snapshot()
    const postsBefore = yield* postCount
    yield* server.script(...[1, 2].map(() => MockMoonServer.Fault.Status({ status: 503, body: "Service Unavailable" })))
    yield* line("outage: the next 2 answers to POST /auth/refresh are HTTP 503")
    yield* waitFor("RefreshFailed")
    yield* waitFor("Refreshed")
    yield* Fiber.interrupt(loops)
    const attempts = (yield* postCount) - postsBefore
    yield* line(`outage ridden out: ${attempts} POSTs (2 x 503, then 200); meanwhile ${summary(outage)}`)
    yield* check(clean(outage), "no 401 and no failure during the outage")
    yield* check(!signedOut, "no sign-out")
  }).pipe(
    Effect.provide(program({ autoRefresh: true })),
    Effect.scoped
  )

  // The second session, expired by now: 100 requests all wait for one refresh.
  yield* Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    yield* Effect.sleep(Math.max(0, DateTime.toEpochMillis(idle.expiresAt) - now))
    const before = snapshot()
    const posts = yield* postCount
    // The server's count when the first refresh lands: every request asked for a token before it.
    // (On a loaded machine the burst can outlast the 2 s token it got: later refreshes are due ones.)
    const atFirstRefresh = yield* SessionManager.events.pipe(
      Stream.filter((event) => event._tag === "Refreshed"),
      Stream.take(1),
      Stream.runDrain,
      Effect.andThen(postCount),
      Effect.forkChild
    )
    yield* Effect.sleep("20 millis")
    yield* line(
      `second session (idle@example.com), expired at ${stamp(DateTime.toEpochMillis(idle.expiresAt))}: ` +
        `100 concurrent GET /protected`
    )
    yield* Effect.all(Array.from({ length: 100 }, () => request), { concurrency: "unbounded", discard: true })
    const refreshes = (yield* postCount) - posts
    const shared = (yield* Fiber.join(atFirstRefresh)) - posts
    yield* line(
      `${summary(before)}; POST /auth/refresh: ${shared} for the 100 together, ${refreshes} in all ` +
        `(server count ${posts} -> ${posts + refreshes})`
    )
    yield* check(tally.ok - before.ok === 100, "all 100 concurrent requests answered 200")
    yield* check(shared === 1, "the 100 concurrent requests shared 1 refresh")
  }).pipe(
    // autoRefresh off: the requests themselves find the token expired.
    Effect.provide(program({ autoRefresh: false }, idle))
  )

  const stats = yield* server.stats
  yield* Console.log(
    `server:   ${stats.refreshRequests} POST /auth/refresh, ${stats.rotations} rotations, ` +
      `${stats.reuseRejections} reuse rejections; ${stats.protectedRequests} GET /protected, ` +
      `${stats.unauthorized} answered 401 (replayed)`
  )
  yield* check(stats.reuseRejections === 0, "no refresh token used twice")
  yield* check(tally.unauthorized === 0 && tally.failed.length === 0, "no 401 and no failure returned to the program")
}).pipe(
  // The manager logs each failed refresh as a warning; the timeline shows it as an event.
  Effect.provideService(References.MinimumLogLevel, "Error"),
  Effect.scoped
)

const remote = (baseUrl: string) =>
  Effect.gen(function*() {
    const refreshToken = yield* Config.Redacted("MOON_REFRESH_TOKEN")
    yield* Console.log(`POST ${baseUrl.replace(/\/+$/, "")}/auth/refresh {"refresh_token":"<redacted>"}`)
    const result = yield* Effect.result(RefreshClient.refresh(refreshToken))
    if (Result.isFailure(result)) {
      // An expected outcome against a real server: say what it was and exit 1, without a stack trace.
      yield* Console.error(`refresh failed: ${result.failure._tag}: ${result.failure.message}`)
      return yield* Effect.sync(() => {
        process.exitCode = 1
      })
    }
    const session = result.success
    yield* Console.log(describeSession(session))
    yield* Console.log(yield* describeExpiry(session))
    yield* Console.log(
      "note:     MOON_REFRESH_TOKEN is now spent; the new refresh token is not printed (it is a secret)."
    )
  }).pipe(
    Effect.provide(RefreshClient.layerFromEnv()),
    Effect.provide(FetchHttpClient.layer)
  )

// What the run recorded, as docs/12-observability.md names it (moon_refresh_*).
const printMetrics = Effect.gen(function*() {
  yield* Console.log("")
  yield* Console.log("metrics of this run (docs/12-observability.md):")
  for (const line of yield* metricsTable) yield* Console.log(`  ${line}`)
})

const main = Effect.gen(function*() {
  const baseUrl = yield* Config.option(Config.NonEmptyString("MOON_BASE_URL"))
  const token = yield* Config.option(Config.NonEmptyString("MOON_REFRESH_TOKEN"))
  yield* Console.log("moon-refresh demo")
  if (Option.isSome(baseUrl) && Option.isSome(token)) {
    return yield* Effect.ensuring(remote(baseUrl.value), printMetrics)
  }
  if (Option.isSome(baseUrl) || Option.isSome(token)) {
    yield* Console.log("(set both MOON_BASE_URL and MOON_REFRESH_TOKEN to use a real server; running locally)")
  }
  yield* local
  yield* manager
  // Before the verdict, which stays the last line.
  yield* printMetrics
  if (checks.broken.length > 0) {
    yield* Console.error(
      `FAILED: ${checks.broken.length} of ${checks.passed + checks.broken.length} checks: ${checks.broken.join("; ")}`
    )
    return yield* Effect.sync(() => {
      process.exitCode = 1
    })
  }
  yield* Console.log(`all ${checks.passed} checks passed`)
})

// Logs print with the pretty logger, for Info and above; Debug lines only
// feed `attemptLogger`.
const pretty = Logger.consolePretty()
const infoAndAbove = Logger.make((options) => {
  if (LogLevel.isGreaterThanOrEqualTo(options.logLevel, "Info")) pretty.log(options)
})

main.pipe(
  Effect.provide(Logger.layer([infoAndAbove, attemptLogger])),
  Effect.provideService(References.MinimumLogLevel, "Debug"),
  runMain
)

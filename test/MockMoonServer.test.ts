import { describe, expect, it } from "@effect/vitest"
import { Cause, Clock, DateTime, Duration, Effect, Exit, Redacted, Schedule, Scope } from "effect"
import { TestClock } from "effect/testing"
import { MockMoonServer } from "moon-refresh/testing"
import * as Net from "node:net"

// The server is exercised with plain `fetch`, so these tests say what goes over
// the wire without depending on the library's client.

interface Answer {
  readonly status: number
  readonly headers: Headers
  readonly text: string
}

const call = (url: string, init?: RequestInit): Effect.Effect<Answer> =>
  Effect.promise(async () => {
    const response = await fetch(url, init)
    return { status: response.status, headers: response.headers, text: await response.text() }
  })

const post = (server: MockMoonServer.Service, refreshToken: Redacted.Redacted<string> | string) =>
  call(`${server.url}/auth/refresh`, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "application/json" },
    body: JSON.stringify({
      refresh_token: Redacted.isRedacted(refreshToken) ? Redacted.value(refreshToken) : refreshToken
    })
  })

// The outcome of a fetch that is expected to fail at the network level.
const postFailure = (server: MockMoonServer.Service, refreshToken: Redacted.Redacted<string>) =>
  Effect.tryPromise(async () => {
    const response = await fetch(`${server.url}/auth/refresh`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ refresh_token: Redacted.value(refreshToken) })
    })
    return { status: response.status, text: await response.text() }
  }).pipe(Effect.exit)

const getProtected = (server: MockMoonServer.Service, accessToken?: Redacted.Redacted<string> | string) =>
  call(
    `${server.url}/protected`,
    accessToken === undefined ? {} : {
      headers: {
        authorization: `Bearer ${Redacted.isRedacted(accessToken) ? Redacted.value(accessToken) : accessToken}`
      }
    }
  )

const sessionOf = (answer: Answer): Record<string, any> => JSON.parse(answer.text)

// Waits (in real time, up to 15 s: a hang guard) until the server reports what the test
// waits for, so that no assertion depends on how fast the machine is.
const eventually = <A>(read: Effect.Effect<A>, done: (a: A) => boolean): Effect.Effect<A> =>
  read.pipe(
    Effect.filterOrFail(done),
    Effect.retry(Schedule.spaced("5 millis").pipe(Schedule.upTo({ duration: "15 seconds" }))),
    Effect.catch(() => read)
  )

describe("MockMoonServer", () => {
  describe("rotation", () => {
    it.live("spends the refresh token and answers a Supabase session with a new one", () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.make({ accessTokenLifetime: 60 })
        const seeded = yield* server.issueSession()
        const before = Math.floor(Date.now() / 1000)

        const answer = yield* post(server, seeded.refreshToken)
        expect(answer.status).toBe(200)
        expect(answer.headers.get("content-type")).toMatch(/^application\/json/)
        const body = sessionOf(answer)
        expect(body).toMatchObject({ token_type: "bearer", expires_in: 60, user: { id: "mock-user-1" } })
        expect(body.expires_at).toBeGreaterThanOrEqual(before + 60)
        expect(body.expires_at).toBeLessThanOrEqual(Math.floor(Date.now() / 1000) + 60)
        expect(body.access_token.split(".")).toHaveLength(3)
        expect(body.refresh_token).not.toBe(Redacted.value(seeded.refreshToken))

        expect(yield* server.isLive(seeded.refreshToken)).toBe(false)
        expect(yield* server.isLive(body.refresh_token)).toBe(true)
        expect(yield* server.stats).toMatchObject({ refreshRequests: 1, rotations: 1, reuseRejections: 0 })
      }))

    it.live("wraps the session in { token } when asked to", () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.make({ bodyShape: "wrapped" })
        const seeded = yield* server.issueSession({ user: { id: "u-2", email: "two@example.com", plan: "pro" } })
        const body = sessionOf(yield* post(server, seeded.refreshToken))
        expect(Object.keys(body)).toEqual(["token"])
        expect(body.token).toMatchObject({
          expires_in: 3600,
          user: { id: "u-2", email: "two@example.com", plan: "pro" }
        })
        expect(yield* server.isLive(body.token.refresh_token)).toBe(true)
      }))

    it.live("sends a null email as null, as Supabase does for a phone sign-in", () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.make()
        const seeded = yield* server.issueSession({ user: { email: null, phone: "15550100" } })
        expect(seeded.user).not.toHaveProperty("email")
        expect(seeded.user.phone).toBe("15550100")
        const body = sessionOf(yield* post(server, seeded.refreshToken))
        expect(body.user).toMatchObject({ id: "mock-user-1", email: null, phone: "15550100" })
      }))

    it.live("rejects a spent token as Supabase does, and revokes the whole session", () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.make()
        const seeded = yield* server.issueSession()
        const rotated = sessionOf(yield* post(server, seeded.refreshToken))

        const reuse = yield* post(server, seeded.refreshToken)
        expect(reuse.status).toBe(500)
        expect(JSON.parse(reuse.text)).toEqual({
          error_code: "refresh_token_already_used",
          msg: "Invalid Refresh Token: Already Used"
        })
        // Reuse detection kills the family: the newest token is dead too, and so is its access token.
        expect(yield* server.isLive(rotated.refresh_token)).toBe(false)
        expect((yield* post(server, rotated.refresh_token)).status).toBe(500)
        expect((yield* getProtected(server, rotated.access_token)).status).toBe(401)
        expect(yield* server.stats).toMatchObject({ rotations: 1, reuseRejections: 2 })
      }))

    it.live("answers refresh_token_not_found to a token it never issued", () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.make()
        const answer = yield* post(server, "never-issued")
        expect(answer.status).toBe(500)
        expect(JSON.parse(answer.text)).toEqual({
          error_code: "refresh_token_not_found",
          msg: "Invalid Refresh Token: Refresh Token Not Found"
        })
        expect((yield* server.stats).unknownTokens).toBe(1)
      }))

    it.live("answers refresh_token_not_found after the session was revoked server-side", () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.make()
        const seeded = yield* server.issueSession()
        yield* server.revokeSession(seeded.refreshToken)
        expect(yield* server.isLive(seeded.refreshToken)).toBe(false)
        expect(JSON.parse((yield* post(server, seeded.refreshToken)).text).error_code).toBe("refresh_token_not_found")
        expect((yield* getProtected(server, seeded.accessToken)).status).toBe(401)
      }))

    it.live("answers 400 to a request without a JSON refresh_token", () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.make()
        const seeded = yield* server.issueSession()
        const noContentType = yield* call(`${server.url}/auth/refresh`, {
          method: "POST",
          body: JSON.stringify({ refresh_token: Redacted.value(seeded.refreshToken) })
        })
        expect(noContentType.status).toBe(400)
        const empty = yield* call(`${server.url}/auth/refresh`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: "{}"
        })
        expect(empty.status).toBe(400)
        expect(yield* server.isLive(seeded.refreshToken)).toBe(true)
      }))
  })

  describe("reuse window", () => {
    it.live("gives the same new refresh token back within the window, and rejects the reuse after it", () =>
      Effect.gen(function*() {
        let now = 1_700_000_000_000
        const server = yield* MockMoonServer.make({ reuseWindow: "10 seconds", now: () => now })
        const seeded = yield* server.issueSession()
        const first = sessionOf(yield* post(server, seeded.refreshToken))

        now += 9_000
        const again = sessionOf(yield* post(server, seeded.refreshToken))
        expect(again.refresh_token).toBe(first.refresh_token)
        expect(yield* server.isLive(first.refresh_token)).toBe(true)

        now += 2_000
        const late = yield* post(server, seeded.refreshToken)
        expect(JSON.parse(late.text).error_code).toBe("refresh_token_already_used")
        expect(yield* server.stats).toMatchObject({ rotations: 1, reusesTolerated: 1, reuseRejections: 1 })
      }))

    it.live("does not tolerate the reuse of a token two rotations back", () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.make({ reuseWindow: 60_000 })
        const seeded = yield* server.issueSession()
        const first = sessionOf(yield* post(server, seeded.refreshToken))
        yield* post(server, first.refresh_token)
        expect((yield* post(server, seeded.refreshToken)).status).toBe(500)
      }))
  })

  describe("reuse: gotrue", () => {
    it.live("answers the active session to the parent of the active token, however late, without rotating", () =>
      Effect.gen(function*() {
        let now = 1_700_000_000_000
        const server = yield* MockMoonServer.make({ reuse: "gotrue", now: () => now })
        const seeded = yield* server.issueSession()
        const first = sessionOf(yield* post(server, seeded.refreshToken))

        now += 3_600_000
        const again = yield* post(server, seeded.refreshToken)
        expect(again.status).toBe(200)
        expect(sessionOf(again).refresh_token).toBe(first.refresh_token)
        expect(sessionOf(again).access_token).not.toBe(first.access_token)
        expect(yield* server.stats).toMatchObject({ rotations: 1, reusesTolerated: 1, reuseRejections: 0 })
        expect((yield* server.requests).map((request) => request.outcome)).toStrictEqual(["rotated", "reuse-tolerated"])
      }))

    it.live("forgives an older token for 10 seconds by default, then revokes the whole session", () =>
      Effect.gen(function*() {
        let now = 1_700_000_000_000
        const server = yield* MockMoonServer.make({ reuse: "gotrue", now: () => now })
        const seeded = yield* server.issueSession()
        const first = sessionOf(yield* post(server, seeded.refreshToken))
        const second = sessionOf(yield* post(server, first.refresh_token))

        now += 10_000
        expect(sessionOf(yield* post(server, seeded.refreshToken)).refresh_token).toBe(second.refresh_token)
        now += 1
        const late = yield* post(server, seeded.refreshToken)
        expect(late.status).toBe(500)
        expect(JSON.parse(late.text)).toStrictEqual({
          error_code: "refresh_token_already_used",
          msg: "Invalid Refresh Token: Already Used"
        })
        expect(yield* server.isLive(second.refresh_token)).toBe(false)
        expect(yield* server.stats).toMatchObject({ rotations: 2, reusesTolerated: 1, reuseRejections: 1 })
      }))
  })

  describe("/mock/stats", () => {
    it.live("answers the counters as JSON at statsUrl: POSTs, rotations, reuse rejections", () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.make()
        expect(server.statsUrl).toBe(`${server.url}/mock/stats`)
        const seeded = yield* server.issueSession()
        yield* post(server, seeded.refreshToken)
        yield* post(server, seeded.refreshToken)

        const answer = yield* call(server.statsUrl)
        expect(answer.status).toBe(200)
        expect(answer.headers.get("content-type")).toMatch(/^application\/json/)
        expect(JSON.parse(answer.text)).toStrictEqual(yield* server.stats)
        expect(JSON.parse(answer.text)).toMatchObject({ refreshRequests: 2, rotations: 1, reuseRejections: 1 })
        // Only GET: a POST there is not a route.
        expect((yield* call(server.statsUrl, { method: "POST" })).status).toBe(404)
        expect((yield* server.requests).map((request) => request.outcome)).toContain("stats")
      }))
  })

  describe("/protected", () => {
    it.live("accepts a valid access token and refuses a missing, unknown or expired one", () =>
      Effect.gen(function*() {
        let now = 1_700_000_000_000
        const server = yield* MockMoonServer.make({ accessTokenLifetime: 60, now: () => now })
        const seeded = yield* server.issueSession()
        expect(DateTime.toEpochMillis(seeded.expiresAt)).toBe(now + 60_000)

        const ok = yield* getProtected(server, seeded.accessToken)
        expect(ok.status).toBe(200)
        expect(JSON.parse(ok.text)).toEqual({ ok: true, user: { id: "mock-user-1", email: "user@example.com" } })

        expect((yield* getProtected(server)).status).toBe(401)
        expect((yield* getProtected(server, "a.b.c")).status).toBe(401)

        now += 59_999
        expect((yield* getProtected(server, seeded.accessToken)).status).toBe(200)
        now += 1
        const expired = yield* getProtected(server, seeded.accessToken)
        expect(expired.status).toBe(401)
        expect(JSON.parse(expired.text).msg).toMatch(/expired/)
        expect(expired.headers.get("www-authenticate")).toMatch(/^Bearer/)

        expect(yield* server.stats).toMatchObject({ protectedRequests: 5, unauthorized: 3 })
      }))

    it.effect("can take its time from Effect's Clock, so TestClock drives expiry", () =>
      Effect.gen(function*() {
        const runtime = yield* Effect.context<never>()
        const server = yield* MockMoonServer.make({
          accessTokenLifetime: 60,
          now: () => Effect.runSyncWith(runtime)(Clock.currentTimeMillis)
        })
        const seeded = yield* server.issueSession()
        expect(DateTime.toEpochMillis(seeded.expiresAt)).toBe(60_000)
        expect((yield* getProtected(server, seeded.accessToken)).status).toBe(200)
        yield* TestClock.adjust("60 seconds")
        expect((yield* getProtected(server, seeded.accessToken)).status).toBe(401)
      }))
  })

  describe("scripted faults", () => {
    it.live("Status answers the given status and body without touching the token", () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.make()
        const seeded = yield* server.issueSession()
        yield* server.script(
          MockMoonServer.Fault.Status({ status: 500, body: { message: "upstream down" } }),
          { _tag: "Status", status: 502, body: "<html><title>502 Bad Gateway</title></html>" },
          { _tag: "Status", status: 503, body: "try later", headers: { "x-proxy": "edge" } }
        )
        const jsonAnswer = yield* post(server, seeded.refreshToken)
        expect([jsonAnswer.status, JSON.parse(jsonAnswer.text)]).toEqual([500, { message: "upstream down" }])
        expect(jsonAnswer.headers.get("content-type")).toMatch(/^application\/json/)
        const html = yield* post(server, seeded.refreshToken)
        expect([html.status, html.headers.get("content-type")]).toEqual([502, "text/html; charset=utf-8"])
        const text = yield* post(server, seeded.refreshToken)
        expect([text.status, text.text, text.headers.get("x-proxy")]).toEqual([503, "try later", "edge"])

        expect(yield* server.isLive(seeded.refreshToken)).toBe(true)
        expect((yield* post(server, seeded.refreshToken)).status).toBe(200)
        expect(yield* server.stats).toMatchObject({ refreshRequests: 4, faults: 3, rotations: 1 })
      }))

    it.live("Delay answers normally after the delay", () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.make()
        const seeded = yield* server.issueSession()
        yield* server.script(MockMoonServer.Fault.Delay({ millis: 60 }))
        const started = performance.now()
        const answer = yield* post(server, seeded.refreshToken)
        expect(performance.now() - started).toBeGreaterThanOrEqual(55)
        expect(answer.status).toBe(200)
        expect(yield* server.isLive(seeded.refreshToken)).toBe(false)
      }))

    it.live("Delay does not spend the token when the client hangs up first", () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.make()
        const seeded = yield* server.issueSession()
        // Longer than the test may run, so the hang-up is always seen first; the scope's end cancels it.
        yield* server.script(MockMoonServer.Fault.Delay({ millis: 60_000 }))
        const controller = new AbortController()
        const aborted = fetch(`${server.url}/auth/refresh`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ refresh_token: Redacted.value(seeded.refreshToken) }),
          signal: controller.signal
        }).then(() => "answered", (error: Error) => error.name)
        // Hang up once the server holds the request, before the delay ends.
        yield* eventually(server.requests, (requests) => requests.length === 1)
        controller.abort()
        expect(yield* Effect.promise(() => aborted)).toBe("AbortError")

        const [request] = yield* eventually(server.requests, ([r]) => r?.outcome !== "pending")
        expect(request).toMatchObject({ outcome: "client-gone", fault: "Delay", status: undefined })
        expect(yield* server.isLive(seeded.refreshToken)).toBe(true)
      }))

    it.live("a client that hangs up before its body is complete is client-gone, its token not spent", () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.make()
        const seeded = yield* server.issueSession()
        // A fault that would hold the request: without the body's end it never starts.
        yield* server.script(MockMoonServer.Fault.Delay({ millis: 60_000 }))
        // A process killed between a chunked body's data and its last chunk: the
        // head and the data are sent, the last chunk never is.
        const data = JSON.stringify({ refresh_token: Redacted.value(seeded.refreshToken) })
        const socket = Net.connect(server.port, "127.0.0.1")
        yield* Effect.addFinalizer(() => Effect.sync(() => socket.destroy()))
        socket.write(
          "POST /auth/refresh HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" +
            `Transfer-Encoding: chunked\r\n\r\n${Buffer.byteLength(data).toString(16)}\r\n${data}\r\n`
        )
        yield* eventually(server.requests, (requests) => requests.length === 1)
        socket.destroy()

        const [request] = yield* eventually(server.requests, ([r]) => r?.outcome !== "pending")
        expect(request).toMatchObject({ outcome: "client-gone", fault: "Delay", status: undefined })
        expect(yield* server.isLive(seeded.refreshToken)).toBe(true)
      }))

    it.live("Reset drops the connection without answering and without rotating", () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.make()
        const seeded = yield* server.issueSession()
        yield* server.script({ _tag: "Reset" })
        expect(Exit.isFailure(yield* postFailure(server, seeded.refreshToken))).toBe(true)
        expect(yield* server.isLive(seeded.refreshToken)).toBe(true)
        expect((yield* server.requests)[0]).toMatchObject({ status: undefined, fault: "Reset" })
        // The next request, on a new connection, is answered normally.
        expect((yield* post(server, seeded.refreshToken)).status).toBe(200)
      }))

    it.live("ResetAfterRotate spends the token, then drops the connection", () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.make()
        const seeded = yield* server.issueSession()
        yield* server.script(MockMoonServer.Fault.ResetAfterRotate())
        expect(Exit.isFailure(yield* postFailure(server, seeded.refreshToken))).toBe(true)
        expect(yield* server.isLive(seeded.refreshToken)).toBe(false)
        expect((yield* server.stats).rotations).toBe(1)
        // The client never saw the new token; retrying the old one is a reuse.
        expect(JSON.parse((yield* post(server, seeded.refreshToken)).text).error_code).toBe(
          "refresh_token_already_used"
        )
      }))

    it.live("SlowBody sends half the body, then the rest after the delay", () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.make()
        const seeded = yield* server.issueSession()
        yield* server.script(MockMoonServer.Fault.SlowBody({ millis: 60 }))
        const received = yield* Effect.promise(async () => {
          const started = performance.now()
          const response = await fetch(`${server.url}/auth/refresh`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ refresh_token: Redacted.value(seeded.refreshToken) })
          })
          const chunks: Array<Uint8Array> = []
          const reader = response.body!.getReader()
          for (let read = await reader.read(); !read.done; read = await reader.read()) chunks.push(read.value)
          return { status: response.status, chunks, elapsed: performance.now() - started }
        })
        const body = Buffer.concat(received.chunks)
        expect(received.status).toBe(200)
        // The first read cannot hold the second half: it was sent 60 ms after the first.
        expect(received.chunks[0]!.length).toBeLessThanOrEqual(Math.floor(body.length / 2))
        expect(received.elapsed).toBeGreaterThanOrEqual(55)
        expect(yield* server.isLive(JSON.parse(body.toString()).refresh_token)).toBe(true)
      }))

    it.live("Truncated spends the token and cuts the body short", () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.make()
        const seeded = yield* server.issueSession()
        yield* server.script(MockMoonServer.Fault.Truncated())
        const exit = yield* postFailure(server, seeded.refreshToken)
        expect(Exit.isFailure(exit)).toBe(true)
        expect((yield* server.requests)[0]).toMatchObject({ status: 200, outcome: "rotated", fault: "Truncated" })
        expect(yield* server.isLive(seeded.refreshToken)).toBe(false)
      }))

    it.live("RetryAfter answers the status with a Retry-After header", () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.make()
        const seeded = yield* server.issueSession()
        yield* server.script(
          MockMoonServer.Fault.RetryAfter({ status: 429, value: 2 }),
          MockMoonServer.Fault.RetryAfter({ status: 503, value: "Wed, 21 Oct 2099 07:28:00 GMT" })
        )
        const limited = yield* post(server, seeded.refreshToken)
        expect([limited.status, limited.headers.get("retry-after")]).toEqual([429, "2"])
        expect(JSON.parse(limited.text).error_code).toBe("over_request_rate_limit")
        const unavailable = yield* post(server, seeded.refreshToken)
        expect([unavailable.status, unavailable.headers.get("retry-after")]).toEqual([
          503,
          "Wed, 21 Oct 2099 07:28:00 GMT"
        ])
        expect(yield* server.isLive(seeded.refreshToken)).toBe(true)
      }))

    it.live("Oversized sends a JSON body of exactly the given size, with or without Content-Length", () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.make()
        const seeded = yield* server.issueSession()
        const bytes = 2 * 1024 * 1024 + 3
        yield* server.script(
          MockMoonServer.Fault.Oversized({ bytes }),
          MockMoonServer.Fault.Oversized({ bytes, chunked: true })
        )
        const declared = yield* post(server, seeded.refreshToken)
        expect([declared.status, declared.headers.get("content-length"), declared.text.length]).toEqual([
          200,
          String(bytes),
          bytes
        ])
        expect(Object.keys(JSON.parse(declared.text))).toEqual(["padding"])
        const chunked = yield* post(server, seeded.refreshToken)
        expect([chunked.headers.get("content-length"), chunked.headers.get("transfer-encoding")]).toEqual([
          null,
          "chunked"
        ])
        expect(chunked.text.length).toBe(bytes)
        expect(yield* server.isLive(seeded.refreshToken)).toBe(true)
      }))

    it.live("WrongContentType sends the normal session under another content type", () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.make()
        const seeded = yield* server.issueSession()
        yield* server.script(
          MockMoonServer.Fault.WrongContentType({}),
          MockMoonServer.Fault.WrongContentType({ contentType: "text/plain" })
        )
        const html = yield* post(server, seeded.refreshToken)
        expect(html.headers.get("content-type")).toBe("text/html; charset=utf-8")
        const plain = yield* post(server, sessionOf(html).refresh_token)
        expect(plain.headers.get("content-type")).toBe("text/plain")
        expect(yield* server.isLive(sessionOf(plain).refresh_token)).toBe(true)
      }))

    it.live("applies faults in order, one per refresh request, and never to other routes", () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.make()
        const seeded = yield* server.issueSession()
        yield* server.script({ _tag: "Status", status: 500 }, { _tag: "Status", status: 502 })
        expect((yield* getProtected(server, seeded.accessToken)).status).toBe(200)
        expect(yield* server.pendingFaults).toBe(2)
        expect((yield* post(server, seeded.refreshToken)).status).toBe(500)
        expect((yield* post(server, seeded.refreshToken)).status).toBe(502)
        expect((yield* post(server, seeded.refreshToken)).status).toBe(200)
        expect(yield* server.pendingFaults).toBe(0)
        expect((yield* server.requests).map((r) => [r.method, r.path, r.status, r.fault])).toEqual([
          ["GET", "/protected", 200, undefined],
          ["POST", "/auth/refresh", 500, "Status"],
          ["POST", "/auth/refresh", 502, "Status"],
          ["POST", "/auth/refresh", 200, undefined]
        ])
      }))
  })

  describe("CORS", () => {
    const page = "http://127.0.0.1:5173"
    const preflight = (server: MockMoonServer.Service, origin: string, path = "/auth/refresh") =>
      call(`${server.url}${path}`, {
        method: "OPTIONS",
        headers: {
          origin,
          "access-control-request-method": "POST",
          "access-control-request-headers": "authorization, content-type, traceparent, b3"
        }
      })

    it.live("answers a preflight from an allowed origin with the methods and headers a page's client sends", () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.make({ cors: { origins: [page] } })
        for (const path of ["/auth/refresh", "/protected"]) {
          const answer = yield* preflight(server, page, path)
          expect(answer.status).toBe(204)
          expect(answer.headers.get("access-control-allow-origin")).toBe(page)
          expect(answer.headers.get("access-control-allow-methods")).toBe("GET, POST")
          expect(answer.headers.get("access-control-allow-headers")?.split(", ")).toEqual(
            expect.arrayContaining(["authorization", "content-type", "traceparent", "b3"])
          )
        }
        const stats = yield* server.stats
        expect(stats.refreshRequests).toBe(0)
        expect(stats.protectedRequests).toBe(0)
        expect((yield* server.requests).map((request) => request.outcome)).toStrictEqual(["preflight", "preflight"])
      }))

    it.live("refuses a preflight from another origin with 403 and no CORS header", () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.make({ cors: { origins: [page] } })
        const answer = yield* preflight(server, "http://127.0.0.1:6666")
        expect(answer.status).toBe(403)
        expect(answer.headers.get("access-control-allow-origin")).toBeNull()
        expect((yield* server.requests)[0]!.outcome).toBe("cross-origin-refused")
      }))

    it.live("marks answers to an allowed origin, exposes Date and Retry-After, and still checks every token", () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.make({ cors: { origins: [page] } })
        const issued = yield* server.issueSession()
        const refreshFromPage = call(`${server.url}/auth/refresh`, {
          method: "POST",
          headers: { origin: page, "content-type": "application/json" },
          body: JSON.stringify({ refresh_token: Redacted.value(issued.refreshToken) })
        })
        const rotated = yield* refreshFromPage
        expect(rotated.status).toBe(200)
        expect(rotated.headers.get("access-control-allow-origin")).toBe(page)
        expect(rotated.headers.get("access-control-expose-headers")).toBe("date, retry-after, www-authenticate")
        expect(rotated.headers.get("vary")).toBe("Origin")
        // The same spent token from the allowed page: reuse, rejected and revoking as without CORS.
        const reused = yield* refreshFromPage
        expect(reused.status).toBe(500)
        expect(reused.headers.get("access-control-allow-origin")).toBe(page)
        expect((yield* server.stats).reuseRejections).toBe(1)
        const refused = yield* call(`${server.url}/protected`, { headers: { origin: page } })
        expect(refused.status).toBe(401)
        expect(refused.headers.get("access-control-allow-origin")).toBe(page)
      }))

    it.live("gives another origin's requests no CORS header (the browser then hides the answer)", () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.make({ cors: { origins: [page] } })
        const answer = yield* call(`${server.url}/protected`, { headers: { origin: "http://127.0.0.1:6666" } })
        expect(answer.status).toBe(401)
        expect(answer.headers.get("access-control-allow-origin")).toBeNull()
      }))

    it.live("with cors: true allows any origin", () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.make({ cors: true })
        const answer = yield* preflight(server, "http://localhost:3000")
        expect(answer.status).toBe(204)
        expect(answer.headers.get("access-control-allow-origin")).toBe("http://localhost:3000")
      }))

    it.live("without the option sends no CORS header and answers OPTIONS 404, as before", () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.make()
        const answer = yield* preflight(server, page)
        expect(answer.status).toBe(404)
        expect(answer.headers.get("access-control-allow-origin")).toBeNull()
        const refused = yield* call(`${server.url}/protected`, { headers: { origin: page } })
        expect(refused.headers.get("access-control-allow-origin")).toBeNull()
      }))
  })

  describe("options", () => {
    for (
      const [option, value, message] of [
        ["accessTokenLifetime", 0, `MockMoonServer: option "accessTokenLifetime" must be a whole number >= 1`],
        ["accessTokenLifetime", 1.5, `MockMoonServer: option "accessTokenLifetime" must be a whole number >= 1`],
        ["reuseWindow", -1, `MockMoonServer: option "reuseWindow" must be a finite, non-negative duration`],
        ["reuseWindow", "-5 seconds", `MockMoonServer: option "reuseWindow" must be a finite, non-negative duration`],
        [
          "reuseWindow",
          Duration.infinity,
          `MockMoonServer: option "reuseWindow" must be a finite, non-negative duration`
        ],
        ["reuse", "sometimes", `MockMoonServer: option "reuse" must be one of "window", "gotrue"`],
        [
          "cors",
          { origins: ["http://127.0.0.1:8080/app"] },
          `MockMoonServer: option "cors" lists "http://127.0.0.1:8080/app", which is not an origin`
        ]
      ] as const
    ) {
      it.effect(`refuses ${option} ${String(value)} with a defect naming the option, before listening`, () =>
        Effect.gen(function*() {
          const exit = yield* Effect.exit(MockMoonServer.make({ [option]: value }))
          expect(Exit.isFailure(exit) && Cause.hasDies(exit.cause)).toBe(true)
          expect(Exit.isFailure(exit) && Cause.pretty(exit.cause)).toContain(message)
        }))
    }
  })

  describe("secrets and lifecycle", () => {
    it.live("keeps no token in what it records or reports", () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.make()
        const seeded = yield* server.issueSession()
        const rotated = sessionOf(yield* post(server, seeded.refreshToken))
        yield* getProtected(server, rotated.access_token)
        yield* call(`${server.url}/auth/refresh?refresh_token=${rotated.refresh_token}`, { method: "POST" })

        const tokens = (yield* server.issuedTokens).map(Redacted.value)
        expect(tokens).toHaveLength(4)
        expect(tokens).toContain(rotated.refresh_token)
        const reported = JSON.stringify([yield* server.stats, yield* server.requests, seeded, server]) +
          String(seeded.refreshToken)
        for (const token of tokens) expect(reported).not.toContain(token)
        expect((yield* server.requests)[2]?.path).toBe("/auth/refresh")
      }))

    it.live("stops listening and cuts open connections when its scope closes", () =>
      Effect.gen(function*() {
        const scope = yield* Scope.make()
        const server = yield* MockMoonServer.make().pipe(Scope.provide(scope))
        const seeded = yield* server.issueSession()
        // Leave a request hanging on a delay longer than the test may run, then close the scope under
        // it: a close that waited for the delay would end in a timeout, or with the request answered.
        yield* server.script(MockMoonServer.Fault.Delay({ millis: 60_000 }))
        const hanging = fetch(`${server.url}/auth/refresh`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ refresh_token: Redacted.value(seeded.refreshToken) })
        }).then(() => "answered", () => "cut")
        yield* eventually(server.requests, (requests) => requests.length === 1)
        yield* Scope.close(scope, Exit.void)
        expect(yield* Effect.promise(() => hanging)).toBe("cut")
        const after = yield* Effect.promise(() => fetch(`${server.url}/protected`).then(() => "up", () => "down"))
        expect(after).toBe("down")
      }))

    it.live("is available as a layer", () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.MockMoonServer
        expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/)
        expect((yield* call(`${server.url}/nowhere`)).status).toBe(404)
      }).pipe(Effect.provide(MockMoonServer.layer())))
  })
})

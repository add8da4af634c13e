/**
 * The fault matrix: every fault of `test/support/FaultMatrix.ts` at every entry
 * point, against a real MockMoonServer on 127.0.0.1 over FetchHttpClient. Each
 * case asserts the value or the precise typed error, that nothing is a defect,
 * and where the refresh token ends up (the old one or the newest the server
 * issued). The same table generates the matrix in docs/reliability.md.
 *
 * Real sockets need real time: every case but the clock jumps runs under
 * `it.live`, with delays of tens of milliseconds, a 300 ms attempt timeout and
 * a fast retry policy. The clock jumps run under TestClock.
 */
import { FetchHttpClient } from "@effect/platform"
import { afterAll, afterEach, describe, expect, it } from "@effect/vitest"
import { Effect, Either, Logger, LogLevel, Option } from "effect"
import { RefreshClient, RefreshPolicy, Session, SessionManager, SessionStore } from "moon-refresh"
import { MockMoonServer } from "moon-refresh/testing"
import { readFileSync } from "node:fs"
import { cases, entryPointTitle, fastPolicy, outcomeText, withMatrix } from "./support/FaultMatrix.js"
import { runCase } from "./support/FaultMatrixRunner.js"

// An unhandled rejection or exception anywhere (a socket callback, a fiber
// nobody awaits) fails the case it happened in.
const unhandled: Array<string> = []
const onRejection = (reason: unknown) => unhandled.push(`unhandledRejection: ${String(reason)}`)
const onException = (error: unknown) => unhandled.push(`uncaughtException: ${String(error)}`)
process.on("unhandledRejection", onRejection)
process.on("uncaughtException", onException)
afterEach(() => {
  const seen = unhandled.splice(0)
  expect(seen).toStrictEqual([])
})
afterAll(() => {
  process.off("unhandledRejection", onRejection)
  process.off("uncaughtException", onException)
})

describe("fault matrix", () => {
  for (const c of cases) {
    if (c.expected._tag === "NotApplicable") continue
    const name = `${c.fault.id} at ${entryPointTitle[c.entryPoint]}: ${outcomeText(c.entryPoint, c.expected)}`
    if (c.fault.scenario._tag === "ClockJump") it.effect(name, () => runCase(c))
    else it.live(name, () => runCase(c))
  }
})

describe("docs/reliability.md", () => {
  it("shows the matrix these tests run (regenerate with `npx tsx soak/matrix-doc.ts`)", () => {
    const doc = readFileSync(new URL("../docs/reliability.md", import.meta.url), "utf8")
    expect(doc).toBe(withMatrix(doc))
  })

  it("covers every fault at every entry point", () => {
    const ids = new Set(cases.map((c) => c.fault.id))
    for (const id of ids) {
      expect(cases.filter((c) => c.fault.id === id).map((c) => c.entryPoint)).toStrictEqual([
        "RefreshClient",
        "SessionManager",
        "AuthHttpClient"
      ])
    }
    const tags = new Set(
      cases.flatMap((c) => (c.fault.scenario._tag === "Script" ? c.fault.scenario.faults.map((f) => f._tag) : []))
    )
    expect([...tags].sort()).toStrictEqual([
      "Delay",
      "Oversized",
      "Reset",
      "ResetAfterRotate",
      "RetryAfter",
      "SlowBody",
      "Status",
      "Truncated",
      "WrongContentType"
    ])
  })
})

describe("known gaps (documented in docs/reliability.md; left for a later change)", () => {
  // The server rotates (the old refresh token is spent) and answers a session
  // whose access token has already expired by the client's clock: here the
  // server's clock runs 4 s behind (under the 5 s skew threshold) with one-second
  // tokens; `expires_in: 0` or a negative one does the same. The client refuses
  // the whole body (MalformedResponseError) and with it the one live refresh
  // token; the manager keeps the spent one. Only a retry inside the server's
  // reuse window saves the session, and the manager's next try comes after its
  // cooldown (10 s by default, as long as Supabase's window).
  it.scopedLive("a rotation whose access token expired on arrival is refused whole: the store keeps the spent token", () =>
    Effect.gen(function*() {
      const server = yield* MockMoonServer.make({ accessTokenLifetime: 1, now: () => Date.now() - 4_000 })
      const issued = yield* server.issueSession()
      const store = yield* SessionStore.makeMemory(Session.unsafeMake(issued))
      const client = yield* RefreshClient.make({ baseUrl: server.url, policy: RefreshPolicy.exponential(fastPolicy) })
      const manager = yield* SessionManager.make({ autoRefresh: false }).pipe(
        Effect.provideService(RefreshClient.RefreshClient, client),
        Effect.provideService(SessionStore.SessionStore, store)
      )

      const result = yield* Effect.either(manager.refresh)
      expect(Either.isLeft(result) ? result.left._tag : "session").toBe("MalformedResponseError")
      // The server did rotate: the seeded token is spent, its successor is the only live one.
      expect(yield* server.stats).toMatchObject({ refreshRequests: 1, rotations: 1 })
      expect(yield* server.isLive(issued.refreshToken)).toBe(false)
      // The gap: the store keeps the spent token, not the live successor. Keeping
      // a session that is expired on arrival would make the manager refresh in
      // a tight loop against such a server; the fix needs its own design.
      const stored = yield* store.load
      expect(Option.isSome(stored) && (yield* server.isLive(stored.value.refreshToken))).toBe(false)
    }).pipe(Effect.provide(FetchHttpClient.layer), Logger.withMinimumLogLevel(LogLevel.None)))
})

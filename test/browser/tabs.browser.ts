/**
 * Many tabs, one session, in headless Chromium: tabs of one origin (pages
 * of one BrowserContext) each run a `SessionManager` on `BrowserSessionStore`
 * against a `MockMoonServer` that tolerates no reuse at all. Real time: the
 * tokens live seconds. Each test waits until it has seen what it is about
 * (so many rotations, every tab signed out), then counts; how long things
 * took is printed, not asserted.
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { MockMoonServer } from "moon-refresh/testing"
import { mkdirSync, writeFileSync } from "node:fs"
import type { Browser } from "playwright-core"
import { startDemo } from "../../examples/browser/server.js"
import type { Origin, Tab } from "./support.js"
import { failures, launch, makeOrigin, openTab, reload, signOuts, status, total, waitFor } from "./support.js"

let browser: Browser
beforeAll(async () => {
  browser = await launch()
})
afterAll(async () => {
  await browser?.close()
})

const reports = (tabs: ReadonlyArray<Tab>) => Effect.forEach(tabs, (tab) => tab.report)

/** The first tab signs in; the others start from what it stored. */
const signedInTabs = (origin: Origin, count: number, start: Parameters<typeof openTab>[2] = {}) =>
  Effect.gen(function*() {
    const first = yield* openTab(origin, "tab 1", { ...start, signIn: true })
    const tabs = [first]
    for (let i = 2; i <= count; i++) tabs.push(yield* openTab(origin, `tab ${i}`, start))
    yield* waitFor("every tab signed in", reports(tabs), (all) => all.every((report) => report.signedIn), 5000)
    return tabs
  })

const pendingRefresh = (moon: MockMoonServer.Service) =>
  waitFor(
    "a refresh POST held by the server",
    moon.requests,
    (requests) => requests.some((request) => request.path === "/auth/refresh" && request.outcome === "pending"),
    10_000
  )

/** The tab inside the store's lock. */
const holder = (tabs: ReadonlyArray<Tab>) =>
  Effect.map(
    waitFor("a tab inside the lock", reports(tabs), (all) => all.some((report) => report.inLock), 5000),
    (all) => tabs[all.findIndex((report) => report.inLock)]!
  )

const rotationsAtLeast = (moon: MockMoonServer.Service, count: number, within: number) =>
  waitFor(`${count} rotations`, moon.stats, (stats) => stats.rotations >= count, within)

describe("BrowserSessionStore in Chromium", () => {
  it.live("4 tabs, 10+ expiries of 2-3 s tokens: one refresh POST per expiry, no reuse, no sign-out, no 401", () =>
    Effect.gen(function*() {
      const origin = yield* makeOrigin(browser, { lifetime: 3 })
      const started = Date.now()
      const tabs = yield* signedInTabs(origin, 4)
      yield* rotationsAtLeast(origin.moon, 10, 60_000)
      const all = yield* reports(tabs)
      const stats = yield* origin.moon.stats
      const rotations = (yield* origin.moon.requests).filter((request) => request.outcome === "rotated")
      const gaps = rotations.slice(1).map((request, i) => request.at - rotations[i]!.at)
      const seconds = ((Date.now() - started) / 1000).toFixed(1)
      console.log(
        `4 tabs, ${seconds} s: ${stats.rotations} expiries refreshed, ${stats.refreshRequests} refresh POSTs ` +
          `(by tab: ${all.map((report) => report.posts).join(", ")}), ${stats.reuseRejections} reuse rejections, ` +
          `${total(all, signOuts)} sign-outs; ${stats.protectedRequests} requests: ` +
          `${total(all, (report) => status(report, "200"))} answered 200, ${stats.unauthorized} answered 401, ` +
          `${total(all, failures)} failed ${JSON.stringify(all.map((report) => report.failures))}; ` +
          `shortest gap between two refreshes ${Math.min(...gaps)} ms`
      )
      expect(stats.rotations).toBeGreaterThanOrEqual(10)
      expect(stats.refreshRequests).toBe(stats.rotations)
      expect(total(all, (report) => report.posts)).toBe(stats.refreshRequests)
      expect(stats.reuseRejections).toBe(0)
      // The server's own count of 401s is printed, not asserted: `expires_at` is whole seconds, so a 3 s
      // token can die up to a second before the `expires_in` the tab counts from, and on a busy machine a
      // request may go out in that second. The tab then refreshes and replays it: none reaches the program.
      expect(total(all, (report) => status(report, "401"))).toBe(0)
      expect(total(all, signOuts)).toBe(0)
      expect(total(all, failures)).toBe(0)
      // No tab refreshed a token another tab had just refreshed: each token
      // (valid 2 to 3 s, refreshed in its last 1.5 s) served at least a second.
      expect(Math.min(...gaps)).toBeGreaterThanOrEqual(1000)
    }))

  it.live("closing the tab that holds the lock while the server delays its refresh: the others carry on", () =>
    Effect.gen(function*() {
      const origin = yield* makeOrigin(browser, { lifetime: 3 })
      const tabs = yield* signedInTabs(origin, 4)
      // Longer than the test may run: the tab is always closed before the server would answer.
      yield* origin.moon.script(MockMoonServer.Fault.Delay({ millis: 600_000 }))
      yield* pendingRefresh(origin.moon)
      const closing = yield* holder(tabs)
      const closedAt = Date.now()
      yield* Effect.promise(() => closing.page.close())
      const rest = tabs.filter((tab) => tab !== closing)
      const before = (yield* origin.moon.stats).rotations
      const after = yield* rotationsAtLeast(origin.moon, before + 1, 10_000)
      const takeover = Date.now() - closedAt
      yield* rotationsAtLeast(origin.moon, after.rotations + 2, 15_000)
      const stats = yield* origin.moon.stats
      const closedRequest = (yield* origin.moon.requests).find((request) => request.fault === "Delay")
      const all = yield* reports(rest)
      console.log(
        `closed the lock holder (${closing.name}) during its delayed refresh: its request ${closedRequest?.outcome}; ` +
          `the next refresh ${takeover} ms later; then ${stats.rotations} rotations in all, ` +
          `${stats.reuseRejections} reuse rejections, ${total(all, signOuts)} sign-outs; ` +
          `${stats.unauthorized} requests answered 401 by the server (sent as the token expired during the delay) ` +
          `and replayed: ${total(all, (report) => status(report, "401"))} 401s and ${total(all, failures)} failures ` +
          `reached the program`
      )
      // The closed tab hung up before the server processed its request: its token was not spent.
      expect(closedRequest?.outcome).toBe("client-gone")
      expect(stats.reuseRejections).toBe(0)
      expect(total(all, signOuts)).toBe(0)
      expect(all.every((report) => report.signedIn)).toBe(true)
      expect(total(all, (report) => status(report, "401"))).toBe(0)
      expect(total(all, failures)).toBe(0)
    }))

  it.live("a tab frozen inside the lock (its refresh never finishes): the others take it over after the bound", () =>
    Effect.gen(function*() {
      const maxHoldMillis = 3000
      const origin = yield* makeOrigin(browser, { lifetime: 3, maxHoldMillis })
      const tabs = yield* signedInTabs(origin, 4)
      yield* origin.moon.script(MockMoonServer.Fault.Delay({ millis: 600_000 }))
      yield* pendingRefresh(origin.moon)
      const frozen = yield* holder(tabs)
      const cdp = yield* Effect.promise(() => origin.context.newCDPSession(frozen.page))
      yield* Effect.promise(() => cdp.send("Page.setWebLifecycleState", { state: "frozen" }))
      const frozenAt = Date.now()
      const before = (yield* origin.moon.stats).rotations
      const after = yield* rotationsAtLeast(origin.moon, before + 1, 15_000)
      const takeover = Date.now() - frozenAt
      yield* rotationsAtLeast(origin.moon, after.rotations + 2, 15_000)
      const rest = tabs.filter((tab) => tab !== frozen)
      const all = yield* reports(rest)
      // Closing the frozen tab hangs up its request: it is never processed.
      yield* Effect.promise(() => frozen.page.close())
      const stats = yield* origin.moon.stats
      console.log(
        `froze the lock holder (${frozen.name}) with its refresh held by the server; maxHold ${maxHoldMillis} ms: ` +
          `the others took over and refreshed ${takeover} ms later; ${stats.rotations} rotations in all, ` +
          `${stats.reuseRejections} reuse rejections, ${total(all, signOuts)} sign-outs`
      )
      // The waiters' patience is maxHold + 1 s from when they began to wait (they wanted the lock about when
      // it froze): printed, not asserted (on a busy machine they begin late). That they took over, with no
      // reuse, is what counts.
      expect(takeover).toBeGreaterThan(0)
      expect(stats.reuseRejections).toBe(0)
      expect(total(all, signOuts)).toBe(0)
      expect(all.every((report) => report.signedIn)).toBe(true)
    }))

  it.live("a manager built and torn down while it waits for the lock (a Strict Mode double mount) leaves no lock behind", () =>
    Effect.gen(function*() {
      const origin = yield* makeOrigin(browser, { lifetime: 3, maxHoldMillis: 3000 })
      const tabs = yield* signedInTabs(origin, 3)
      yield* origin.moon.script(MockMoonServer.Fault.Delay({ millis: 1500 }))
      yield* pendingRefresh(origin.moon)
      const busy = yield* holder(tabs)
      const mounting = tabs.find((tab) => tab !== busy)!
      // Mount: a second manager in this tab asks for a refresh and waits for the lock; unmount it 300 ms later.
      const unmounted = yield* mounting.call(
        (harness, options) => harness.mountAndUnmount(options, 300),
        origin.defaults
      )
      const lockState = yield* mounting.call(() => navigator.locks.query() as Promise<any>) as Effect.Effect<
        LockManagerSnapshot
      >
      const waiting = (lockState.pending ?? []).filter((lock) => lock.name?.endsWith("/moon-session")).length
      const before = (yield* origin.moon.stats).rotations
      yield* rotationsAtLeast(origin.moon, before + 3, 15_000)
      const all = yield* reports(tabs)
      const stats = yield* origin.moon.stats
      const refreshFailures = all.flatMap((report) => report.events.filter((event) => event.tag === "RefreshFailed"))
      console.log(
        `mounted and unmounted a manager while it waited for the lock: ${unmounted}; ` +
          `lock requests left waiting after: ${waiting}; then 3 more rotations, ${stats.reuseRejections} reuse rejections, ` +
          `${refreshFailures.length} failed refreshes, ${total(all, signOuts)} sign-outs`
      )
      expect(unmounted).toContain("interrupted")
      // Only live managers may still be waiting: at most the other tabs' one each.
      expect(waiting).toBeLessThanOrEqual(tabs.length - 1)
      expect(stats.reuseRejections).toBe(0)
      expect(refreshFailures).toStrictEqual([])
      expect(total(all, signOuts)).toBe(0)
    }))

  it.live("a sign-out in one tab reaches the others, and none writes a session back", () =>
    Effect.gen(function*() {
      const origin = yield* makeOrigin(browser, { lifetime: 3 })
      const tabs = yield* signedInTabs(origin, 3)
      yield* rotationsAtLeast(origin.moon, 1, 10_000)
      const signedOutAt = Date.now()
      yield* tabs[0]!.call((harness) => harness.signOut())
      const all = yield* waitFor(
        "every tab signed out",
        reports(tabs),
        (reports) => reports.every((report) => !report.signedIn),
        2000
      )
      const delays = all.slice(1).map((report) =>
        report.events.find((event) => event.tag === "SignedOut")!.at - signedOutAt
      )
      const rotations = (yield* origin.moon.stats).rotations
      const stored = all[0]!.stored!
      // Past the expiry of the last token: nobody refreshes, nobody writes.
      yield* Effect.sleep("4 seconds")
      const later = yield* reports(tabs)
      console.log(
        `signed out in tab 1: the other tabs signed out after ${delays.join(" and ")} ms ` +
          `(${all.slice(1).map((report) => report.events.at(-1)?.detail).join(", ")}); ` +
          `4 s later: ${(yield* origin.moon.stats).rotations - rotations} rotations, stored record revision ` +
          `${later[0]!.stored!.revision} ${later[0]!.stored!.hasSession ? "with" : "without"} a session`
      )
      // How soon is printed (well under a second on a quiet machine), not asserted.
      expect(Math.min(...delays)).toBeGreaterThanOrEqual(0)
      expect(all.slice(1).every((report) => report.events.at(-1)?.detail === "SignedOutElsewhere")).toBe(true)
      expect((yield* origin.moon.stats).rotations).toBe(rotations)
      expect(later.every((report) => !report.signedIn)).toBe(true)
      expect(later.map((report) => report.stored)).toStrictEqual(tabs.map(() => stored))
      expect(stored.hasSession).toBe(false)
    }))

  it.live("a reloaded tab starts from the stored session without a refresh POST", () =>
    Effect.gen(function*() {
      const origin = yield* makeOrigin(browser, { lifetime: 60 })
      const tabs = yield* signedInTabs(origin, 2)
      const reloaded = yield* reload(origin, tabs[1]!)
      const report = yield* waitFor("the reloaded tab answered", reloaded.report, (r) => status(r, "200") >= 5, 5000)
      const stats = yield* origin.moon.stats
      console.log(
        `reloaded tab 2: first event ${report.events[0]?.tag} ${report.signedIn ? "with" : "without"} a session, ` +
          `${status(report, "200")} requests answered 200 since, ${stats.refreshRequests} refresh POSTs`
      )
      expect(report.events[0]?.tag).toBe("Initial")
      expect(report.signedIn).toBe(true)
      expect(stats.refreshRequests).toBe(0)
      expect(report.posts).toBe(0)
      expect(stats.unauthorized).toBe(0)
    }))

  it.live("the example page, 2 tabs after a few refreshes: a screenshot", () =>
    Effect.gen(function*() {
      const demo = yield* startDemo({ lifetime: 3 })
      const context = yield* Effect.acquireRelease(
        Effect.promise(() => browser.newContext({ viewport: { width: 800, height: 660 } })),
        (context) => Effect.promise(() => context.close())
      )
      const first = yield* Effect.promise(() => context.newPage())
      yield* Effect.promise(() => first.goto(demo.url))
      yield* Effect.promise(() => first.getByText("Signed in", { exact: true }).waitFor())
      const second = yield* Effect.promise(() => context.newPage())
      yield* Effect.promise(() => second.goto(demo.url))
      yield* rotationsAtLeast(demo.moon, 4, 20_000)
      // Let the log of the last refresh reach both pages.
      yield* Effect.sleep("300 millis")
      const shots = yield* Effect.forEach([first, second], (page) =>
        Effect.promise(() => page.screenshot({ type: "png" })))
      const texts = yield* Effect.forEach([first, second], (page) =>
        Effect.promise(() => page.innerText("body")))
      // One image of the two tabs side by side, as a person sees them.
      const sheet = yield* Effect.promise(() => context.newPage())
      yield* Effect.promise(() => sheet.setViewportSize({ width: 1640, height: 700 }))
      yield* Effect.promise(() =>
        sheet.setContent(
          `<body style="margin:0;padding:10px;background:#c9cfdb;display:flex;gap:20px">${
            shots.map((shot) =>
              `<img style="width:800px;border:1px solid #8a93a6" src="data:image/png;base64,${
                shot.toString("base64")
              }">`
            )
              .join("")
          }</body>`
        )
      )
      const path = "./.tmp/browser/example-2-tabs.png"
      mkdirSync("./.tmp/browser", { recursive: true })
      writeFileSync(path, yield* Effect.promise(() => sheet.screenshot({ type: "png" })))
      const stats = yield* demo.moon.stats
      console.log(
        `screenshot of the example page in 2 tabs: ${path} (${stats.rotations} refreshes, ${stats.refreshRequests} POSTs, ` +
          `${stats.reuseRejections} reuse rejections)`
      )
      expect(texts.every((text) => text.includes("Signed in") && text.includes("ada@example.com"))).toBe(true)
      expect(texts.some((text) => text.includes("this tab refreshed (POST /auth/refresh)"))).toBe(true)
      expect(texts.some((text) => text.includes("took the session another tab refreshed"))).toBe(true)
      expect(stats.reuseRejections).toBe(0)
      expect(stats.refreshRequests).toBe(stats.rotations)
    }))
})

interface LockManagerSnapshot {
  readonly pending?: ReadonlyArray<{ readonly name?: string }>
}

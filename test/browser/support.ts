/**
 * The Node side of the browser tests: Chromium (found by
 * scripts/test-browser.mjs, which sets CHROME_PATH), an origin of tabs (one
 * BrowserContext: its pages share IndexedDB, Web Locks and BroadcastChannel,
 * as tabs of one profile do), the page of test/browser/page.ts served on
 * 127.0.0.1, and a MockMoonServer on another port that allows it (CORS).
 */
import type { Scope } from "effect"
import { Effect, Schedule } from "effect"
import { MockMoonServer } from "moon-refresh/testing"
import { fileURLToPath } from "node:url"
import type { Browser, BrowserContext, Page } from "playwright-core"
import { chromium } from "playwright-core"
import { bundle, serve, signInRoute } from "../../examples/browser/server.js"
import type { Harness, Report, StartOptions } from "./page.js"

// The flags Chromium needs here: no sandbox (root), and none of its own network traffic.
const flags = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync"
]

export const launch = (): Promise<Browser> => {
  const executablePath = process.env.CHROME_PATH
  if (executablePath === undefined) {
    throw new Error("CHROME_PATH is not set: run the browser tests with npm run test:browser")
  }
  return chromium.launch({ executablePath, args: flags, headless: true })
}

let script: Promise<string> | undefined
const harnessScript = () => script ??= Effect.runPromise(bundle(fileURLToPath(new URL("./page.ts", import.meta.url))))

const html = `<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,"></head>
<body><script type="module" src="/harness.js"></script></body></html>`

export interface Origin {
  readonly context: BrowserContext
  readonly moon: MockMoonServer.Service
  readonly pageUrl: string
  readonly defaults: StartOptions
}

/** A fresh origin (new context, new storage) with its servers, until the scope closes. */
export const makeOrigin = (
  browser: Browser,
  options: { readonly lifetime: number; readonly maxHoldMillis?: number | undefined }
): Effect.Effect<Origin, never, Scope.Scope> =>
  Effect.gen(function*() {
    const code = yield* Effect.promise(harnessScript)
    const mock: { server?: MockMoonServer.Service } = {}
    const page = yield* serve({
      "GET /": () => ({ type: "text/html; charset=utf-8", body: html }),
      "GET /harness.js": () => ({ type: "text/javascript", body: code }),
      "POST /sign-in": () => signInRoute(mock.server!)()
    })
    const moon = mock.server = yield* MockMoonServer.make({
      accessTokenLifetime: options.lifetime,
      reuseWindow: 0,
      cors: { origins: [page.url] }
    })
    const context = yield* Effect.acquireRelease(
      Effect.promise(() => browser.newContext({ viewport: { width: 900, height: 900 } })),
      (context) => Effect.promise(() => context.close())
    )
    // Functions the tests send to a page may use the helper tsx names them with.
    yield* Effect.promise(() => context.addInitScript("globalThis.__name = (f) => f"))
    return {
      context,
      moon,
      pageUrl: `${page.url}/`,
      defaults: {
        moonUrl: moon.url,
        key: "moon-session",
        maxHoldMillis: options.maxHoldMillis ?? 15_000,
        loops: 2,
        // The most a manager allows for a 3 s token (half its lifetime). The mock's
        // token expires on a whole second, up to 1 s before `expires_in` says: a 1 s
        // margin would let a tab use a token the server already considers expired.
        marginMillis: 1500
      }
    }
  })

export interface Tab {
  readonly name: string
  readonly page: Page
  /** Calls the page's harness. */
  readonly call: <A>(f: (harness: Harness, arg: any) => Promise<A>, arg?: unknown) => Effect.Effect<A>
  readonly report: Effect.Effect<Report>
}

const tabOf = (name: string, page: Page): Tab => {
  const call = <A>(f: (harness: Harness, arg: any) => Promise<A>, arg?: unknown) =>
    Effect.promise(() =>
      page.evaluate(
        ([source, value]) => {
          const harness = (globalThis as unknown as { harness: Harness }).harness
          return (new Function(`return (${source})`)() as (h: Harness, a: unknown) => Promise<unknown>)(harness, value)
        },
        [f.toString(), arg] as const
      ) as Promise<A>
    )
  return { name, page, call, report: call((harness) => harness.report()) }
}

/** Opens a tab on the origin's page; starts its manager unless `start` is false. */
export const openTab = (
  origin: Origin,
  name: string,
  start: Partial<StartOptions> | false = {}
): Effect.Effect<Tab> =>
  Effect.gen(function*() {
    const page = yield* Effect.promise(() => origin.context.newPage())
    page.on("pageerror", (error) => console.error(`[${name}] page error: ${error.message}`))
    yield* Effect.promise(() => page.goto(origin.pageUrl))
    yield* Effect.promise(() => page.waitForFunction(() => "harness" in globalThis))
    const tab = tabOf(name, page)
    if (start !== false) yield* tab.call((harness, options) => harness.start(options), { ...origin.defaults, ...start })
    return tab
  })

/** Reloads a tab's page (the manager goes with it) and starts a new one. */
export const reload = (origin: Origin, tab: Tab, start: Partial<StartOptions> = {}): Effect.Effect<Tab> =>
  Effect.gen(function*() {
    yield* Effect.promise(() => tab.page.reload())
    yield* Effect.promise(() => tab.page.waitForFunction(() => "harness" in globalThis))
    const fresh = tabOf(tab.name, tab.page)
    yield* fresh.call((harness, options) => harness.start(options), { ...origin.defaults, ...start })
    return fresh
  })

/**
 * Polls `read` every 50 ms until `done` holds, for at most `within`; dies
 * naming `what` (and the last value read) if it never does.
 */
export const waitFor = <A>(
  what: string,
  read: Effect.Effect<A>,
  done: (a: A) => boolean,
  within: number
): Effect.Effect<A> =>
  read.pipe(
    Effect.filterOrFail(done, (last) => last),
    // `within` is what the wait takes on a quiet machine; the bound is a hang guard far past it, so
    // that a machine busy with other work never fails a test by being slow.
    Effect.retry(Schedule.spaced("50 millis").pipe(Schedule.upTo({ duration: Math.max(10 * within, 60_000) }))),
    Effect.catch((last) =>
      Effect.die(new Error(`${what}: not within ${Math.max(10 * within, 60_000)} ms (last: ${JSON.stringify(last)})`))
    )
  )

/** Sums a count over every tab's report. */
export const total = (reports: ReadonlyArray<Report>, count: (report: Report) => number): number =>
  reports.reduce((sum, report) => sum + count(report), 0)

export const signOuts = (report: Report): number => report.events.filter((event) => event.tag === "SignedOut").length

export const status = (report: Report, code: string): number => report.statuses[code] ?? 0

export const failures = (report: Report): number => Object.values(report.failures).reduce((a, b) => a + b, 0)

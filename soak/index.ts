/**
 * The soak: one SessionManager kept alive through at least 10,000 refresh
 * cycles against a MockMoonServer (in a child process), with 30% of the
 * refresh requests faulted and many concurrent readers. Not part of `npm test`
 * and not run by CI; finishes in under two minutes.
 *
 *     npm run soak                 # SOAK_SEED=7 SOAK_CYCLES=20000 npm run soak
 *
 * Prints what happened, then the moon_refresh_* metrics the run recorded
 * (examples/metrics-table.ts), and exits non-zero when a "must" fails: at least
 * SOAK_CYCLES refreshes; no duplicate POST for a refresh generation; no reuse
 * rejection; no session lost; done within two minutes.
 *
 * The server's reuse window is 10 s (Supabase's default), so a rotation whose
 * answer was lost (`ResetAfterRotate`, `Truncated`, a `SlowBody` past the
 * timeout) is recovered by the retry: no reuse rejection is expected at all.
 * With no reuse window those faults end the session by design (see
 * docs/reliability.md); that is the fault matrix's business, not the soak's.
 */
import { Context, Duration, Effect, Exit, Fiber, Layer, Option, Random, Redacted, Stream } from "effect"
import { FetchHttpClient, HttpClient, type HttpClientRequest } from "effect/http"
import { AuthHttpClient, RefreshClient, RefreshPolicy, Session, SessionManager, SessionStore } from "moon-refresh"
import type { MockMoonServer } from "moon-refresh/testing"
import { fork } from "node:child_process"
import { loadavg } from "node:os"
import { fileURLToPath } from "node:url"
import { setFlagsFromString } from "node:v8"
import { runInNewContext } from "node:vm"
import { metricsTable } from "../examples/metrics-table.js"
import type { IssuedSession, Request } from "./server.js"

const targetCycles = Number(process.env.SOAK_CYCLES ?? 10_000)
const seed = Number(process.env.SOAK_SEED ?? 42)
const faultRate = Number(process.env.SOAK_FAULT_RATE ?? 0.3)
const readers = Number(process.env.SOAK_READERS ?? 64)
const readerPause = Duration.millis(25)
const httpReaderPause = Duration.millis(100)
const httpReaders = Number(process.env.SOAK_HTTP_READERS ?? 8)
const drivers = Number(process.env.SOAK_DRIVERS ?? 2)
const deadline = Duration.seconds(Number(process.env.SOAK_DEADLINE_S ?? 110))
const attemptTimeout = Duration.millis(100)

// `global.gc` without a command-line flag, so `npm run soak` needs none.
setFlagsFromString("--expose-gc")
const gc = runInNewContext("gc") as () => void
const heapUsed = () => {
  gc()
  gc()
  return process.memoryUsage().heapUsed
}

// ---------------------------------------------------------------------------
// The server, in its own process
// ---------------------------------------------------------------------------

const child = fork(fileURLToPath(new URL("./server.ts", import.meta.url)), [], {
  execArgv: ["--import", "tsx"],
  stdio: ["ignore", "inherit", "inherit", "ipc"]
})
const pending = new Map<number, (result: unknown) => void>()
let nextId = 0
child.on("message", (message: { readonly id?: number; readonly result?: unknown }) => {
  if (message.id === undefined) return
  pending.get(message.id)?.(message.result)
  pending.delete(message.id)
})
// Omit over each member of the union (a plain Omit of a union keeps only the common keys).
type WithoutId<R> = R extends unknown ? Omit<R, "id"> : never
const call = <A>(request: WithoutId<Request>): Effect.Effect<A> =>
  Effect.callback<A>((resume) => {
    const id = nextId++
    pending.set(id, (result) => resume(Effect.succeed(result as A)))
    child.send({ ...request, id })
  })
const serverUrl = new Promise<string>((resolve) =>
  child.on("message", (message: { readonly ready?: boolean; readonly url?: string }) => {
    if (message.ready) resolve(message.url!)
  })
)

// ---------------------------------------------------------------------------
// Faults: 30% of refresh requests, drawn from a seeded Random
// ---------------------------------------------------------------------------

const proxyPage = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"

/** [weight, name, fault]. Dead-token bodies and 4xx are left out: they sign out by design. */
const faultTable: ReadonlyArray<readonly [number, string, (r: number) => MockMoonServer.Fault]> = [
  [10, "Status 500", () => ({ _tag: "Status", status: 500, body: { message: "Internal server error" } })],
  [8, "Status 502 (HTML)", () => ({ _tag: "Status", status: 502, body: proxyPage })],
  [6, "Status 503 (text)", () => ({ _tag: "Status", status: 503, body: "Service Unavailable" })],
  [10, "Delay 1-20 ms", (r) => ({ _tag: "Delay", millis: 1 + Math.floor(r * 20) })],
  [1, "Delay past the timeout", () => ({ _tag: "Delay", millis: 150 })],
  [10, "Reset", () => ({ _tag: "Reset" })],
  [10, "ResetAfterRotate", () => ({ _tag: "ResetAfterRotate" })],
  [8, "SlowBody 1-20 ms", (r) => ({ _tag: "SlowBody", millis: 1 + Math.floor(r * 20) })],
  [1, "SlowBody past the timeout", () => ({ _tag: "SlowBody", millis: 150 })],
  [8, "Truncated", () => ({ _tag: "Truncated" })],
  [6, "RetryAfter 429 (0 s)", () => ({ _tag: "RetryAfter", status: 429, value: 0 })],
  [4, "RetryAfter 503 (0 s)", () => ({ _tag: "RetryAfter", status: 503, value: 0 })],
  [4, "Oversized (Content-Length)", () => ({ _tag: "Oversized", bytes: 2 * 1024 * 1024 })],
  [2, "Oversized (chunked)", () => ({ _tag: "Oversized", bytes: 2 * 1024 * 1024, chunked: true })],
  [6, "WrongContentType", () => ({ _tag: "WrongContentType" })]
]
const totalWeight = faultTable.reduce((sum, [weight]) => sum + weight, 0)

const pickFault = Effect.gen(function*() {
  let at = (yield* Random.next) * totalWeight
  const r = yield* Random.next
  for (const [weight, name, make] of faultTable) {
    at -= weight
    if (at < 0) return { name, fault: make(r) }
  }
  const [, name, make] = faultTable[faultTable.length - 1]!
  return { name, fault: make(r) }
})

// ---------------------------------------------------------------------------
// Counters
// ---------------------------------------------------------------------------

const counts = {
  posts: 0,
  /** A POST started while another was in flight. */
  concurrentPosts: 0,
  /** A POST presenting a token whose refresh had already succeeded (the client had its successor). */
  postsForRefreshedTokens: 0,
  /** A POST presenting the same token as the attempt before it (a retry of a failed attempt). */
  retryPosts: 0,
  refreshRuns: 0,
  concurrentRuns: 0,
  runsFailed: new Map<string, number>(),
  faults: new Map<string, number>(),
  refreshed: 0,
  refreshFailed: new Map<string, number>(),
  saveFailed: 0,
  signedOut: 0,
  reads: 0,
  readErrors: new Map<string, number>(),
  gets: 0,
  getStatuses: new Map<number, number>(),
  getErrors: new Map<string, number>(),
  driverErrors: new Map<string, number>()
}
const bump = <K>(map: Map<K, number>, key: K) => map.set(key, (map.get(key) ?? 0) + 1)

let postsInFlight = 0
let runsInFlight = 0
let lastPostToken: string | undefined
/** Tokens whose refresh succeeded, the most recent 4,096 (bounded, so the soak itself does not grow the heap). */
const refreshedTokens = new Set<string>()
const rememberRefreshed = (token: string) => {
  refreshedTokens.add(token)
  if (refreshedTokens.size > 4_096) refreshedTokens.delete(refreshedTokens.values().next().value!)
}

const tokenOf = (request: HttpClientRequest.HttpClientRequest): string => {
  const body = request.body
  if (body._tag !== "Uint8Array") return "?"
  return (JSON.parse(new TextDecoder().decode(body.body)) as { refresh_token: string }).refresh_token
}

/** Counts every refresh POST and injects this request's fault, if any, just before it is sent. */
const faulting = (client: HttpClient.HttpClient) =>
  HttpClient.transform(client, (send, request) => {
    if (!(request.method === "POST" && request.url.endsWith("/auth/refresh"))) return send
    return Effect.gen(function*() {
      const token = tokenOf(request)
      counts.posts++
      if (postsInFlight > 0) counts.concurrentPosts++
      if (refreshedTokens.has(token)) counts.postsForRefreshedTokens++
      if (token === lastPostToken) counts.retryPosts++
      lastPostToken = token
      if ((yield* Random.next) < faultRate) {
        const { fault, name } = yield* pickFault
        bump(counts.faults, name)
        yield* call({ op: "script", fault })
      }
      postsInFlight++
      return yield* Effect.ensuring(
        send,
        Effect.sync(() => {
          postsInFlight--
        })
      )
    })
  })

/** Counts refresh runs (a run is one `RefreshClient.refresh`, its retries included). */
const counting = (service: RefreshClient.Service): RefreshClient.Service => ({
  refresh: (token) =>
    Effect.suspend(() => {
      counts.refreshRuns++
      if (runsInFlight > 0) counts.concurrentRuns++
      runsInFlight++
      return service.refresh(token).pipe(
        Effect.tap(() => Effect.sync(() => rememberRefreshed(Redacted.value(token)))),
        Effect.tapError((error) => Effect.sync(() => bump(counts.runsFailed, error._tag))),
        Effect.ensuring(Effect.sync(() => {
          runsInFlight--
        }))
      )
    })
})

// ---------------------------------------------------------------------------
// The soak
// ---------------------------------------------------------------------------

const errorTag = (error: { readonly _tag: string }) => error._tag

const forever = <A, E>(effect: Effect.Effect<A, E>, pause: Duration.Input) =>
  Effect.forever(
    Effect.andThen(
      effect,
      Duration.toMillis(Duration.fromInputUnsafe(pause)) === 0 ? Effect.yieldNow : Effect.sleep(pause)
    )
  )

const soak = Effect.gen(function*() {
  const url = yield* Effect.promise(() => serverUrl)
  const issued = yield* call<IssuedSession>({ op: "issueSession" })
  const initial = Session.unsafeMake({
    accessToken: issued.accessToken,
    refreshToken: issued.refreshToken,
    expiresAt: issued.expiresAtMillis,
    user: issued.user
  })

  const http = yield* HttpClient.HttpClient
  const refreshClient = yield* RefreshClient.make({
    baseUrl: url,
    timeout: attemptTimeout,
    policy: RefreshPolicy.exponential({
      base: "1 millis",
      maxRetries: 5,
      maxDelay: "10 millis",
      maxElapsed: "2 seconds",
      jitter: true
    })
  }).pipe(Effect.provideService(HttpClient.HttpClient, faulting(http)))

  // The proactive refresh is on: with two-second tokens and a one-second
  // margin it joins the drivers and the readers in asking for refreshes.
  const managerLayer = SessionManager.layer({ margin: "1 second", cooldown: 0, maxCooldown: 0 }).pipe(
    Layer.provide(Layer.succeed(RefreshClient.RefreshClient, counting(refreshClient))),
    Layer.provideMerge(SessionStore.layerMemory(initial))
  )
  const context = yield* Layer.build(
    Layer.provideMerge(AuthHttpClient.layer(), managerLayer).pipe(
      Layer.provide(Layer.succeed(HttpClient.HttpClient, http))
    )
  )
  const manager = Context.get(context, SessionManager.SessionManager)
  const authHttp = Context.get(context, AuthHttpClient.AuthHttpClient)
  const store = Context.get(context, SessionStore.SessionStore)

  yield* Effect.forkScoped(
    Stream.runForEach(
      manager.events,
      (event) =>
        Effect.sync(() => {
          switch (event._tag) {
            case "Refreshed":
              counts.refreshed++
              break
            case "RefreshFailed":
              bump(counts.refreshFailed, event.error._tag)
              break
            case "SaveFailed":
              counts.saveFailed++
              break
            case "SignedOut":
              counts.signedOut++
              break
          }
        })
    )
  )
  yield* Effect.sleep("20 millis")

  const reader = forever(
    Effect.matchEffect(manager.accessToken, {
      onSuccess: () => Effect.sync(() => counts.reads++),
      onFailure: (error) => Effect.sync(() => bump(counts.readErrors, errorTag(error)))
    }),
    readerPause
  )
  const httpReader = forever(
    Effect.matchEffect(
      Effect.scoped(Effect.flatMap(authHttp.get(`${url}/protected`), (response) => Effect.as(response.text, response))),
      {
        onSuccess: (response) =>
          Effect.sync(() => {
            counts.gets++
            bump(counts.getStatuses, response.status)
          }),
        onFailure: (error) => Effect.sync(() => bump(counts.getErrors, errorTag(error)))
      }
    ),
    httpReaderPause
  )
  const driver = forever(
    Effect.catch(
      Effect.asVoid(manager.refresh),
      (error) => Effect.sync(() => bump(counts.driverErrors, error._tag))
    ),
    "0 millis"
  )

  const started = performance.now()
  const fibers = yield* Effect.all(
    [
      ...Array.from({ length: readers }, () => Effect.forkChild(reader)),
      ...Array.from({ length: httpReaders }, () => Effect.forkChild(httpReader)),
      ...Array.from({ length: drivers }, () => Effect.forkChild(driver))
    ]
  )
  const progress = Effect.sync(() => {
    const seconds = ((performance.now() - started) / 1000).toFixed(0)
    console.log(`  ${seconds.padStart(3)} s  ${counts.refreshed} refreshes, ${counts.posts} POSTs`)
  })
  const waitFor = (cycles: number) =>
    Effect.gen(function*() {
      let last = performance.now()
      while (counts.refreshed < cycles && performance.now() - started < Duration.toMillis(deadline)) {
        yield* Effect.sleep("50 millis")
        if (performance.now() - last > 10_000) {
          last = performance.now()
          yield* progress
        }
      }
    })

  // Warm up (JIT, connection pool, caches), then measure the heap with the readers running.
  yield* waitFor(500)
  const heapBefore = heapUsed()
  const cyclesBefore = counts.refreshed
  yield* waitFor(Math.round(targetCycles / 2))
  const heapMiddle = heapUsed()
  yield* waitFor(targetCycles)
  const heapAfter = heapUsed()
  const cyclesMeasured = counts.refreshed - cyclesBefore
  const elapsed = (performance.now() - started) / 1000
  yield* Fiber.interruptAll(fibers)

  // The session at the end: held, stored, and live on the server.
  // The proactive refresh still runs: a check that lands while one is in
  // flight (the server has rotated, the answer is not in yet) is taken again.
  const check = Effect.gen(function*() {
    const held = Option.map(yield* manager.current, (session) => Redacted.value(session.refreshToken))
    const stored = Option.map(yield* store.load, (session) => Redacted.value(session.refreshToken))
    return Option.isSome(stored) && Option.makeEquivalence((a: string, b: string) => a === b)(held, stored)
      ? yield* call<boolean>({ op: "isLive", token: stored.value })
      : false
  })
  let live = false
  for (let attempt = 0; attempt < 20 && !live; attempt++) {
    live = yield* check
    if (!live) yield* Effect.sleep("25 millis")
  }
  const finalGet = yield* Effect.exit(
    Effect.scoped(Effect.map(authHttp.get(`${url}/protected`), (response) => response.status))
  )
  const stats = yield* call<MockMoonServer.Stats>({ op: "stats" })
  return { cyclesMeasured, elapsed, finalGet, heapAfter, heapBefore, heapMiddle, live, stats }
})

const format = (map: Map<unknown, number>) =>
  map.size === 0
    ? "none"
    : [...map].sort((a, b) => b[1] - a[1]).map(([key, n]) => `${String(key)} ${n}`).join(", ")

const main = Effect.gen(function*() {
  console.log(
    `moon-refresh soak: ${targetCycles} refresh cycles, ${faultRate * 100}% faults (seed ${seed}), ` +
      `${readers} accessToken readers, ${httpReaders} AuthHttpClient readers, ${drivers} refresh drivers; ` +
      `load average ${loadavg().map((n) => n.toFixed(1)).join(" ")}`
  )
  const result = yield* soak
  const { stats } = result
  const faults = [...counts.faults.values()].reduce((a, b) => a + b, 0)
  const duplicates = counts.concurrentPosts + counts.postsForRefreshedTokens
  const lost = counts.signedOut + (counts.readErrors.get("NoSessionError") ?? 0) + (result.live ? 0 : 1)
  const mb = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MB`
  const growth = result.heapAfter - result.heapBefore

  const musts: ReadonlyArray<readonly [string, boolean]> = [
    [`refreshes >= ${targetCycles}`, counts.refreshed >= targetCycles],
    ["duplicate POSTs per refresh generation = 0", duplicates === 0 && counts.concurrentRuns === 0],
    ["reuse rejections = 0", stats.reuseRejections === 0],
    ["sessions lost = 0", lost === 0],
    ["finished in under 2 minutes", result.elapsed < 120]
  ]

  const lines = [
    ["elapsed", `${result.elapsed.toFixed(1)} s (load average now ${loadavg().map((n) => n.toFixed(1)).join(" ")})`],
    ["refreshes (Refreshed events)", `${counts.refreshed}`],
    ["server rotations", `${stats.rotations}`],
    ["refresh POSTs", `${counts.posts} (server saw ${stats.refreshRequests})`],
    ["refresh runs (RefreshClient.refresh calls)", `${counts.refreshRuns}`],
    ["faults injected", `${faults} (${((faults / counts.posts) * 100).toFixed(1)}% of POSTs)`],
    ["  by kind", format(counts.faults)],
    ["retry POSTs (same token after a failed attempt)", `${counts.retryPosts}`],
    ["reuses tolerated (lost answers recovered in the window)", `${stats.reusesTolerated}`],
    ["runs that failed after their retries", format(counts.runsFailed)],
    ["RefreshFailed events (session kept)", format(counts.refreshFailed)],
    [
      "duplicate POSTs per refresh generation",
      `${duplicates} (concurrent POSTs ${counts.concurrentPosts}, POSTs of an already-refreshed token ${counts.postsForRefreshedTokens}, concurrent runs ${counts.concurrentRuns})`
    ],
    ["reuse rejections", `${stats.reuseRejections}`],
    [
      "sessions lost",
      `${lost} (SignedOut ${counts.signedOut}, NoSessionError reads ${
        counts.readErrors.get("NoSessionError") ?? 0
      }, held = stored = live on the server: ${result.live})`
    ],
    ["accessToken reads", `${counts.reads} (errors: ${format(counts.readErrors)})`],
    [
      "AuthHttpClient GETs",
      `${counts.gets} (statuses: ${format(counts.getStatuses)}; errors: ${
        format(counts.getErrors)
      }; server 401s ${stats.unauthorized})`
    ],
    ["refresh driver errors", format(counts.driverErrors)],
    ["final GET /protected", Exit.isSuccess(result.finalGet) ? `${result.finalGet.value}` : "failed"],
    [
      "heap (after gc)",
      `${mb(result.heapBefore)} -> ${mb(result.heapMiddle)} (half way) -> ${mb(result.heapAfter)} (${
        growth >= 0 ? "+" : ""
      }${mb(growth)} over ${result.cyclesMeasured} cycles, ${
        (growth / Math.max(1, result.cyclesMeasured)).toFixed(0)
      } B/cycle)`
    ]
  ] as const
  const width = Math.max(...lines.map(([label]) => label.length))
  for (const [label, value] of lines) console.log(`${label.padEnd(width)}  ${value}`)
  console.log("")
  // The same run through the library's own metrics (docs/12-observability.md): the
  // counts above, seen as a dashboard would see them.
  console.log("metrics of this run:")
  for (const line of yield* metricsTable) console.log(`  ${line}`)
  console.log("")
  for (const [label, ok] of musts) console.log(`${ok ? "ok  " : "FAIL"}  must: ${label}`)
  return musts.every(([, ok]) => ok)
})

const exit = await Effect.runPromiseExit(
  main.pipe(Effect.scoped, Effect.provide(FetchHttpClient.layer), Random.withSeed(seed))
)
child.send({ id: -1, op: "close" })
child.disconnect()
if (Exit.isFailure(exit)) {
  console.error(exit.cause)
  process.exit(2)
}
process.exit(exit.value ? 0 : 1)

/**
 * One replica of a service acting for one Moon account, as a Node process of
 * its own: a `SessionManager` on `RedisSessionStore` (client from
 * `REDIS_URL`), a `RefreshClient` on the mock server, and `READERS` fibers
 * each reading the access token every 100 ms (8 such processes on 2 cores
 * must leave the CPU to the refreshes), and a probe using it against
 * `/protected` every 250 ms. Started by replicas.test.ts.
 *
 * It prints JSON lines on stdout: `{"ready":…}` once its manager runs (on
 * an empty store, signed out: the session arrives through the change feed,
 * and only then do the readers start), then a summary when a line arrives on
 * stdin (or stdin closes), and exits.
 *
 * Environment: REDIS_URL, KEY, MOON_BASE_URL, READERS, MARGIN_MS, LEASE_MS.
 */
import { Duration, Effect, Layer, Option, Redacted, Ref, Stream } from "effect"
import { FetchHttpClient } from "effect/http"
import { RedisSessionStore } from "../../src/redis/index.js"
import * as RefreshClient from "../../src/RefreshClient.js"
import * as SessionManager from "../../src/SessionManager.js"
import * as SessionStore from "../../src/SessionStore.js"

const env = (name: string): string => {
  const value = process.env[name]
  if (value === undefined || value === "") throw new Error(`replica: ${name} is not set`)
  return value
}

/** What a replica reports when told to stop. */
export interface Summary {
  readonly pid: number
  readonly reads: number
  readonly readFailures: Record<string, number>
  readonly probes: number
  readonly unauthorized: number
  readonly events: Record<string, number>
  /** Critical sections run under the store's lock: at most one per expiry, thanks to the in-process single flight. */
  readonly lockRequests: number
  readonly signOuts: ReadonlyArray<string>
}

const count = (ref: Ref.Ref<Record<string, number>>, name: string) =>
  Ref.update(ref, (counts) => ({ ...counts, [name]: (counts[name] ?? 0) + 1 }))

const program = Effect.gen(function*() {
  const manager = yield* SessionManager.SessionManager
  const reads = yield* Ref.make(0)
  const readFailures = yield* Ref.make<Record<string, number>>({})
  const events = yield* Ref.make<Record<string, number>>({})
  const signOuts = yield* Ref.make<ReadonlyArray<string>>([])
  const probes = yield* Ref.make({ sent: 0, unauthorized: 0 })
  const baseUrl = env("MOON_BASE_URL")

  yield* Effect.forkScoped(Stream.runForEach(manager.events, (event) =>
    Effect.all([
      trace ? Effect.sync(() => console.log(`${Date.now()} event ${event._tag}`)) : Effect.void,
      count(events, event._tag),
      event._tag === "SignedOut" ? Ref.update(signOuts, (all) => [...all, event.reason._tag]) : Effect.void
    ])))

  console.log(JSON.stringify({ ready: process.pid }))
  yield* Stream.runHead(
    Stream.filter(
      manager.events,
      (event) =>
        event._tag === "Initial"
          ? Option.isSome(event.session)
          : event._tag === "Refreshed" || event._tag === "SignedIn"
    )
  )

  const read = manager.accessToken.pipe(
    Effect.andThen(Ref.update(reads, (n) => n + 1)),
    Effect.catch((error) => count(readFailures, error._tag))
  )
  const readers = Number(env("READERS"))
  for (let i = 0; i < readers; i++) {
    yield* Effect.forkScoped(Effect.forever(Effect.andThen(read, Effect.sleep("100 millis"))))
  }
  // The token read is also used: an expired or revoked one would get a 401.
  const probe = Effect.gen(function*() {
    const token = yield* manager.accessToken
    const response = yield* Effect.promise(() =>
      fetch(`${baseUrl}/protected`, { headers: { authorization: `Bearer ${Redacted.value(token)}` } })
    )
    yield* Effect.promise(() => response.arrayBuffer())
    yield* Ref.update(
      probes,
      (p) => ({ sent: p.sent + 1, unauthorized: p.unauthorized + (response.status === 401 ? 1 : 0) })
    )
  }).pipe(Effect.ignore)
  yield* Effect.forkScoped(Effect.forever(Effect.andThen(probe, Effect.sleep("250 millis"))))
  yield* Effect.callback<void>((resume) => {
    const stop = () => resume(Effect.void)
    process.stdin.once("data", stop)
    process.stdin.once("end", stop)
  })
  const summary: Summary = {
    pid: process.pid,
    reads: yield* Ref.get(reads),
    readFailures: yield* Ref.get(readFailures),
    probes: (yield* Ref.get(probes)).sent,
    unauthorized: (yield* Ref.get(probes)).unauthorized,
    events: yield* Ref.get(events),
    lockRequests,
    signOuts: yield* Ref.get(signOuts)
  }
  console.log(JSON.stringify({ summary }))
})

let lockRequests = 0

// With TRACE=1, a line per store operation and event (revisions only, never a token).
const trace = process.env.TRACE === "1"
const traced = <A, E, R>(what: string, effect: Effect.Effect<A, E, R>, show: (a: A) => unknown = () => "") =>
  trace
    ? effect.pipe(
      Effect.tap((a) => Effect.sync(() => console.log(`${Date.now()} ${what} ${show(a)}`))),
      Effect.tapError((error) => Effect.sync(() => console.log(`${Date.now()} ${what}: failed ${String(error)}`)))
    )
    : effect

// The store from `REDIS_URL`, with its lock requests counted.
const StoreLive = Layer.effect(
  SessionStore.SessionStore,
  Effect.map(SessionStore.SessionStore, (store): SessionStore.Service => ({
    ...store,
    read: traced("read", store.read, (stored) => stored.revision),
    write: (session, expected) => traced(`write at ${expected}`, store.write(session, expected), (s) => s.revision),
    // The manager takes the lock through withLease.
    withLease: (use) =>
      Effect.suspend(() => {
        lockRequests++
        return traced(
          "lock released",
          store.withLease((lease) => Effect.andThen(traced("lock taken", Effect.void), use(lease)))
        )
      }),
    withLock: (critical) =>
      Effect.suspend(() => {
        lockRequests++
        return traced("lock released", store.withLock(Effect.andThen(traced("lock taken", Effect.void), critical)))
      })
  }))
).pipe(
  Layer.provide(RedisSessionStore.layerConfig({
    key: env("KEY"),
    lease: Duration.millis(Number(env("LEASE_MS"))),
    // A lease must be at least twice the operation timeout (2 s by default).
    timeout: Duration.millis(Math.min(2_000, Number(env("LEASE_MS")) / 2))
  }))
)

const MainLive = SessionManager.layer({
  margin: Duration.millis(Number(env("MARGIN_MS"))),
  minInterval: 0,
  cooldown: "1 second",
  maxCooldown: "2 seconds",
  lockTimeout: "30 seconds"
}).pipe(
  Layer.provide(RefreshClient.layer({ baseUrl: env("MOON_BASE_URL") })),
  Layer.provide(StoreLive),
  Layer.provide(FetchHttpClient.layer)
)

program.pipe(Effect.scoped, Effect.provide(MainLive), Effect.runPromise).then(
  () => process.exit(0),
  (error) => {
    console.error(`replica ${process.pid} failed: ${error}`)
    process.exit(1)
  }
)

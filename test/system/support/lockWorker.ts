/**
 * One process of the lock tests (test/system/locks.test.ts, test/redis/frozen.test.ts),
 * started as `node --import tsx lockWorker.ts CONFIG`. It runs critical
 * sections under its store's `withLease` in a loop for `runMs`: each one logs
 * `in`, then `actions` times checks `lease.ensure` and logs `act` (or logs
 * `lost` and stops when the check fails), sleeping `actMs` after each, then
 * logs `out`. The log is one file shared by every worker, appended one line
 * at a time (`O_APPEND`: the lines of all processes in one order), so the
 * test can tell whether two holders ever acted at once. It also reports
 * each step on stdout as a JSON line, for the test to time signals by.
 */
import type { Scope } from "effect"
import { Duration, Effect, Result } from "effect"
import type { SessionStore } from "moon-refresh"
import { NodeSessionStore } from "moon-refresh/node"
import { RedisSessionStore } from "moon-refresh/redis"
import * as Fs from "node:fs"

export interface WorkerConfig {
  readonly store: "file" | "redis"
  /** `file`: the session file. */
  readonly path?: string | undefined
  /** `redis`: the server and the record's key. */
  readonly redisUrl?: string | undefined
  readonly key?: string | undefined
  readonly leaseMs: number
  readonly log: string
  readonly runMs: number
  readonly actions: number
  readonly actMs: number
}

export interface LogLine {
  readonly pid: number
  readonly ev: "in" | "act" | "lost" | "out"
  /** The worker's own count of its critical sections. */
  readonly section: number
}

const config = JSON.parse(process.argv[2] ?? "{}") as WorkerConfig

const say = (message: Record<string, unknown>) =>
  Effect.sync(() => process.stdout.write(`${JSON.stringify({ ...message, at: Date.now() })}\n`))

const log = (ev: LogLine["ev"], section: number) =>
  Effect.sync(() => {
    Fs.appendFileSync(config.log, `${JSON.stringify({ pid: process.pid, ev, section } satisfies LogLine)}\n`)
  })

const openStore: Effect.Effect<SessionStore.Service, unknown, Scope.Scope> = config.store === "file"
  ? NodeSessionStore.make({
    path: config.path!,
    lease: Duration.millis(config.leaseMs),
    lockTimeout: "60 seconds",
    pollInterval: "1 hour"
  })
  : Effect.flatMap(RedisSessionStore.makeClient(config.redisUrl!), (client) =>
    Effect.provideService(
      RedisSessionStore.make({
        key: config.key!,
        lease: Duration.millis(config.leaseMs),
        lockTimeout: "60 seconds",
        timeout: Duration.millis(Math.min(2_000, config.leaseMs / 2))
      }),
      RedisSessionStore.RedisClient,
      client
    ))

const section = (store: SessionStore.Service, n: number) =>
  store.withLease((lease) =>
    Effect.gen(function*() {
      yield* log("in", n)
      yield* say({ type: "in", section: n })
      for (let i = 0; i < config.actions; i++) {
        const ensured = yield* Effect.result(lease.ensure(Duration.millis(config.actMs)))
        if (Result.isFailure(ensured)) {
          yield* log("lost", n)
          return yield* say({ type: "lost", section: n, message: ensured.failure.message })
        }
        yield* log("act", n)
        yield* say({ type: "act", section: n })
        yield* Effect.sleep(Duration.millis(config.actMs))
      }
      return yield* log("out", n)
    })
  )

const program = Effect.gen(function*() {
  const store = yield* openStore
  yield* say({ type: "ready", pid: process.pid })
  const until = Date.now() + config.runMs
  let sections = 0
  const lockErrors: Array<string> = []
  while (Date.now() < until) {
    const result = yield* Effect.result(section(store, ++sections))
    if (Result.isFailure(result)) lockErrors.push(String(result.failure))
    // Leave the others a chance at the lock.
    yield* Effect.sleep(Duration.millis(Math.floor(Math.random() * 20)))
  }
  yield* say({ type: "done", sections, lockErrors })
})

program.pipe(
  Effect.scoped,
  Effect.catchCause((cause) => say({ type: "error", message: String(cause) })),
  Effect.runPromise
).then(() => process.exit(0))

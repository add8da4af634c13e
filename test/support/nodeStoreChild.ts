/**
 * One process of the multi-process tests of `NodeSessionStore`, started by
 * `test/support/Processes.ts` as `node --import tsx nodeStoreChild.ts MODE CONFIG`.
 * It reports JSON lines on stdout (never a token: a refresh token appears as a
 * short hash) and takes JSON commands on stdin.
 *
 * Modes:
 * - `save`: saves a new session in a loop until the command `stop`, then
 *   reports `done` with the number of saves (the test decides when, by what
 *   it has seen, not by a duration).
 * - `hold`: takes the store's lock, reports `locked`, and holds it until killed.
 * - `manager`: a `SessionManager` on the file against the mock server at `url`,
 *   `readers` fibers reading its access token in a loop, every event and every
 *   entry into and exit from the store's lock reported; commands `signOut`,
 *   `failWrites` (the store's writes fail for a while) and `stop` (which
 *   reports `summary` and exits).
 */
import { Duration, Effect, Fiber, Layer, Option, Queue, Result, Stream } from "effect"
import { FetchHttpClient } from "effect/http"
import { RefreshClient, RefreshPolicy, Session, SessionManager, SessionStore } from "moon-refresh"
import { NodeSessionStore } from "moon-refresh/node"
import * as Readline from "node:readline"
import { type ChildCommand, type ChildConfig, type ChildMessage, fingerprint } from "./ChildProtocol.js"

const report = (message: ChildMessage) => Effect.sync(() => process.stdout.write(`${JSON.stringify(message)}\n`))

const commands = Stream.callback<ChildCommand>((queue) =>
  Effect.sync(() => {
    const lines = Readline.createInterface({ input: process.stdin })
    lines.on("line", (line) => {
      if (line.trim() !== "") Queue.offerUnsafe(queue, JSON.parse(line) as ChildCommand)
    })
    lines.on("close", () => Queue.endUnsafe(queue))
  })
)

const storeOptions = (config: ChildConfig): NodeSessionStore.Options => ({
  path: config.path,
  lease: Duration.millis(config.leaseMs ?? 2000),
  pollInterval: Duration.millis(config.pollMs ?? 2000)
})

const sessionNamed = (name: string) =>
  Session.unsafeMake({
    accessToken: `access-${name}`,
    refreshToken: `refresh-${name}`,
    expiresAt: Date.UTC(2030, 0, 1),
    user: { id: "user-1", email: "ada@example.com" }
  })

const refusedSave = (
  error: SessionStore.StoreError
) => (error.operation === "lock" || error.message.includes("was lost"))

const save = (config: ChildConfig) =>
  Effect.gen(function*() {
    const store = yield* NodeSessionStore.make(storeOptions(config))
    yield* report({ type: "ready", pid: process.pid, at: Date.now() })
    let saves = 0
    let refused = 0
    let stopped = false
    const errors: Array<string> = []
    yield* commands.pipe(
      Stream.takeUntil((command) => command.cmd === "stop"),
      Stream.runDrain,
      Effect.ensuring(Effect.sync(() => (stopped = true))),
      Effect.forkScoped
    )
    while (!stopped) {
      const result = yield* Effect.result(store.save(sessionNamed(`${process.pid}-${saves}`)))
      if (Result.isSuccess(result)) saves++
      // A process stalled past its lease (a loaded machine) loses the lock, or waits past its lock timeout:
      // the save is refused and writes nothing, which is the store doing its job. Counted, not an error.
      else if (refusedSave(result.failure)) refused++
      else errors.push(result.failure.message)
      // Lets the command reader run between saves.
      yield* Effect.yieldNow
    }
    yield* report({ type: "done", saves, refused, errors })
  })

const hold = (config: ChildConfig) =>
  Effect.gen(function*() {
    const store = yield* NodeSessionStore.make(storeOptions(config))
    yield* store.withLock(Effect.andThen(report({ type: "locked", at: Date.now() }), Effect.never))
  })

// Until when the store's writes fail (the command `failWrites`).
const failing = { until: 0 }

/**
 * The store, with every entry into and exit from its lock reported, and its
 * writes failing while `failing` says so.
 */
const reportingStore = (config: ChildConfig) =>
  Layer.effect(
    SessionStore.SessionStore,
    Effect.gen(function*() {
      const store = yield* NodeSessionStore.make(storeOptions(config))
      const withLease: SessionStore.Service["withLease"] = (use) =>
        store.withLease((lease) =>
          Effect.acquireUseRelease(
            report({ type: "lock", state: "in", at: Date.now() }),
            () => use(lease),
            () => report({ type: "lock", state: "out", at: Date.now() })
          )
        )
      const withLock: SessionStore.Service["withLock"] = (critical) => withLease(() => critical)
      const write: SessionStore.Service["write"] = (session, expected) =>
        Date.now() < failing.until
          ? Effect.fail(
            new SessionStore.StoreError({
              operation: Option.isSome(session) ? "save" : "clear",
              message: "the disk is read-only (the test's failWrites)"
            })
          )
          : store.write(session, expected)
      return { ...store, withLease, withLock, write }
    })
  )

const manager = (config: ChildConfig) =>
  Effect.gen(function*() {
    const sessions = yield* SessionManager.SessionManager
    let reads = 0
    const readErrors: Record<string, number> = {}
    yield* sessions.events.pipe(
      Stream.runForEach((event) =>
        report({
          type: "event",
          tag: event._tag,
          detail: event._tag === "RefreshFailed"
            ? event.error._tag
            : event._tag === "SignedOut"
            ? event.reason._tag
            : event._tag === "SaveFailed"
            ? event.error.message
            : undefined,
          token: "session" in event && event.session instanceof Session.Session
            ? fingerprint(event.session.refreshToken)
            : undefined,
          at: Date.now()
        })
      ),
      Effect.forkScoped
    )
    const reader = Effect.gen(function*() {
      const result = yield* Effect.result(sessions.accessToken)
      if (Result.isSuccess(result)) reads++
      else readErrors[result.failure._tag] = (readErrors[result.failure._tag] ?? 0) + 1
      yield* Effect.sleep(`${10 + Math.floor(Math.random() * 20)} millis`)
    }).pipe(Effect.forever)
    const readers = yield* Effect.forEach(
      Array.from({ length: config.readers ?? 25 }, () => reader),
      (loop) => Effect.forkChild(loop)
    )
    yield* report({ type: "ready", pid: process.pid, at: Date.now() })
    yield* commands.pipe(
      Stream.takeUntil((command) => command.cmd === "stop"),
      Stream.runForEach((command) =>
        command.cmd === "failWrites"
          ? Effect.sync(() => {
            failing.until = Date.now() + command.ms
          })
          : command.cmd === "signOut"
          ? sessions.signOut.pipe(
            Effect.matchEffect({
              onFailure: (error) => report({ type: "error", message: `signOut failed: ${error.message}` }),
              onSuccess: () => report({ type: "signedOut", at: Date.now() })
            })
          )
          : Effect.void
      )
    )
    yield* Fiber.interruptAll(readers)
    const current = yield* sessions.current
    yield* report({
      type: "summary",
      reads,
      readErrors,
      token: Option.match(current, { onNone: () => null, onSome: (session) => fingerprint(session.refreshToken) })
    })
  }).pipe(
    Effect.provide(
      SessionManager.layer({ margin: Duration.millis(config.marginMs ?? 1000), minInterval: 0, cooldown: "200 millis" })
        .pipe(
          Layer.provide(
            RefreshClient.layer({ baseUrl: config.url!, timeout: "2 seconds", policy: RefreshPolicy.default })
          ),
          Layer.provide(reportingStore(config)),
          Layer.provide(FetchHttpClient.layer)
        )
    )
  )

const [mode = "", json = "{}"] = process.argv.slice(2)
const config = JSON.parse(json) as ChildConfig
const programs: Record<string, Effect.Effect<void, unknown, never>> = {
  save: Effect.scoped(save(config)),
  hold: Effect.scoped(hold(config)),
  manager: Effect.scoped(manager(config))
}
const program = programs[mode] ?? Effect.fail(`unknown mode ${mode}`)

program.pipe(
  Effect.catchCause((cause) => report({ type: "error", message: String(cause) })),
  Effect.runPromise
).then(() => process.exit(0))

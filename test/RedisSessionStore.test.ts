/**
 * RedisSessionStore without a Redis server: the entry loads, options are
 * checked, the client's URL comes from Config, and a Redis nobody answers
 * for fails every operation with a StoreError within the timeout. The tests
 * against a real server are in test/redis (`npm run test:redis`).
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, ConfigProvider, Effect, Exit, Layer, Option, Result } from "effect"
import type { SessionStore } from "moon-refresh"
import { RedisSessionStore } from "moon-refresh/redis"
import * as Net from "node:net"
import { session } from "./support/StoreContract.js"

// A port that was free a moment ago: connections to it are refused.
const closedPort = Effect.promise(() =>
  new Promise<number>((resolve) => {
    const server = Net.createServer().listen(0, "127.0.0.1", () => {
      const port = (server.address() as Net.AddressInfo).port
      server.close(() => resolve(port))
    })
  })
)

const storeOn = (url: string, options: Partial<RedisSessionStore.Options> = {}) =>
  Effect.flatMap(
    RedisSessionStore.makeClient(url),
    (client) =>
      RedisSessionStore.make({ key: "moon-session", ...options }).pipe(
        Effect.provideService(RedisSessionStore.RedisClient, client)
      )
  )

const defectMessage = <A, E>(exit: Exit.Exit<A, E>) =>
  Exit.isFailure(exit)
    ? Option.map(Result.getSuccess(Cause.findDefect(exit.cause)), (defect) => (defect as Error).message)
    : Option.none()

describe("RedisSessionStore without a server", () => {
  it.live(
    "every operation fails with a StoreError within the timeout when nothing answers",
    () =>
      Effect.gen(function*() {
        const store = yield* storeOn(`redis://127.0.0.1:${yield* closedPort}`, { timeout: "300 millis" })
        const operations: ReadonlyArray<
          Effect.Effect<unknown, SessionStore.StoreError | SessionStore.StoreConflictError>
        > = [
          store.read,
          store.write(Option.some(session("1")), 0),
          store.save(session("1")),
          store.withLock(Effect.void)
        ]
        // Without the bound an operation waits for a connection that never comes: the hang guard
        // (far beyond the 300 ms bound, so that a busy machine never trips it) turns that into a failure.
        for (const operation of operations) {
          const error = yield* Effect.flip(operation).pipe(
            Effect.timeoutOrElse({
              duration: "10 seconds",
              orElse: () => Effect.fail("hung: no StoreError within 10 s")
            })
          )
          expect(error).toMatchObject({ _tag: "StoreError" })
        }
        expect(store.shared).toBe(true)
      })
  )

  it.live("refuses options that are not what they must be, naming them", () =>
    Effect.gen(function*() {
      const url = `redis://127.0.0.1:${yield* closedPort}`
      const refused = [
        [{ key: "" }, `RedisSessionStore: option "key" must be a non-empty string`],
        [{ lease: "0 millis" }, `RedisSessionStore: option "lease" must be a positive, finite duration`],
        [{ lockTimeout: "-1 seconds" }, `RedisSessionStore: option "lockTimeout" must be a positive, finite duration`],
        [{ timeout: Infinity }, `RedisSessionStore: option "timeout" must be a positive, finite duration`]
      ] as const
      for (const [options, message] of refused) {
        const exit = yield* Effect.exit(Effect.scoped(storeOn(url, options)))
        expect(defectMessage(exit)).toStrictEqual(Option.some(message))
      }
    }))

  it.live("refuses keyed options that are not what they must be, naming them; builds keys without a server", () =>
    Effect.gen(function*() {
      const client = yield* RedisSessionStore.makeClient(`redis://127.0.0.1:${yield* closedPort}`)
      const keyedOn = (options: RedisSessionStore.KeyedOptions) =>
        RedisSessionStore.makeKeyed(options).pipe(
          Effect.provideService(RedisSessionStore.RedisClient, client),
          Effect.scoped,
          Effect.exit
        )
      const refused = [
        [{ prefix: "" }, `RedisSessionStore: option "prefix" must be a non-empty string without braces`],
        [{ prefix: "{app}:" }, `RedisSessionStore: option "prefix" must be a non-empty string without braces`],
        [{ prefix: "s:", lease: "0 millis" }, `RedisSessionStore: option "lease" must be a positive, finite duration`]
      ] as const
      for (const [options, message] of refused) {
        expect(defectMessage(yield* keyedOn(options))).toStrictEqual(Option.some(message))
      }
      // forKey does no I/O: a store for a key comes at once, with nothing listening.
      const keyed = yield* RedisSessionStore.makeKeyed({ prefix: "s:", timeout: "300 millis" }).pipe(
        Effect.provideService(RedisSessionStore.RedisClient, client)
      )
      const store = yield* keyed.forKey("ada")
      expect((yield* Effect.flip(store.read))._tag).toBe("StoreError")
      expect((yield* Effect.flip(keyed.forKey(""))).operation).toBe("key")
    }))

  it.effect("layerClientConfig reads REDIS_URL, and refuses a missing or non-Redis URL as a ConfigError", () =>
    Effect.gen(function*() {
      const build = (env: Record<string, string>) =>
        Layer.build(RedisSessionStore.layerClientConfig()).pipe(
          Effect.scoped,
          Effect.provideService(ConfigProvider.ConfigProvider, ConfigProvider.fromEnvRecord(env)),
          Effect.exit
        )
      const missing = yield* build({})
      const wrong = yield* build({ REDIS_URL: "http://127.0.0.1:6379" })
      const right = yield* build({ REDIS_URL: "redis://127.0.0.1:1" })
      expect(Exit.isFailure(missing) && String(Cause.squash(missing.cause))).toContain("REDIS_URL")
      expect(Exit.isFailure(wrong) && String(Cause.squash(wrong.cause))).toContain(
        "must be a redis:// or rediss:// URL"
      )
      expect(Exit.isSuccess(right)).toBe(true)
    }))

  it("recommends client settings under which nothing waits in a queue to run late", () => {
    expect(RedisSessionStore.clientOptions).toMatchObject({
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false
    })
  })
})

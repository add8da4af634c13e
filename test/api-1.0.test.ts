// The names 1.0 settled on (MIGRATION.md, "8. Settled names"): one `layer(options?)` per
// service, `layerConfig` taking `Config.Wrap<Options>` everywhere, the layers that read an
// environment variable named for it (`…FromEnv`), one name per value, and a `StoreError`
// that keeps its cause where the cause holds no secret. The 0.3 names kept as deprecated
// aliases are checked to do what their replacements do, and the helpers the library uses
// for itself are checked to be gone from the public modules.
import { describe, expect, it } from "@effect/vitest"
import { Cause, Config, ConfigProvider, Context, Effect, Exit, Layer, Option, Schema } from "effect"
import type { HttpClient } from "effect/http"
import { Redis } from "ioredis"
import {
  AuthHttpClient,
  RefreshClient,
  RefreshError,
  RefreshPolicy,
  Session,
  SessionManager,
  SessionPool,
  SessionStore
} from "moon-refresh"
import { BrowserSessionStore } from "moon-refresh/browser"
import { NodeSessionStore, PrivateKeyValueStore } from "moon-refresh/node"
import { RedisSessionStore } from "moon-refresh/redis"
import { MockRefreshClient } from "moon-refresh/testing"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { inspect } from "node:util"
import { session } from "./support/StoreContract.js"
import * as TestHttpClient from "./support/TestHttpClient.js"

const withEnv = (env: Record<string, string>) =>
  Effect.provideService(ConfigProvider.ConfigProvider, ConfigProvider.fromEnvRecord(env))

/** The error an exit failed with, if it failed with one (not a defect). */
const errorOf = <A, E>(exit: Exit.Exit<A, E>): E | undefined =>
  Exit.isFailure(exit) ? Option.getOrUndefined(Cause.findErrorOption(exit.cause)) : undefined

/** Builds `layer` in a scope of its own and closes it: how it ended. */
const build = <A, E>(layer: Layer.Layer<A, E>) => Effect.exit(Effect.scoped(Layer.build(layer)))

/** A fresh directory under the system's temporary directory, removed with the scope. */
const tempDir = Effect.acquireRelease(
  Effect.sync(() => Fs.mkdtempSync(Path.join(Os.tmpdir(), "moon-api-"))),
  (dir) => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true }))
)

describe("AuthHttpClient: one layer(options?), a class tag", () => {
  // Tokens `access-1` and `refresh-1`, valid until 2030.
  const signedIn = session("1")

  // Two GETs through the layer, one to the API's origin and one elsewhere: the
  // `Authorization` header each carried.
  const authorizations = <E>(
    auth: Layer.Layer<AuthHttpClient.AuthHttpClient, E, HttpClient.HttpClient | SessionManager.SessionManager>
  ) =>
    Effect.gen(function*() {
      const api = TestHttpClient.make(TestHttpClient.json(200, { id: "user-1" }))
      const manager = SessionManager.layer({ autoRefresh: false }).pipe(
        Layer.provide(Layer.merge(
          Layer.succeed(RefreshClient.RefreshClient, { refresh: () => Effect.die("no refresh expected") }),
          SessionStore.layerMemory(signedIn)
        ))
      )
      const context = yield* Layer.build(auth.pipe(Layer.provide(Layer.merge(manager, api.layer))))
      const http: AuthHttpClient.Service = Context.get(context, AuthHttpClient.AuthHttpClient)
      yield* http.get("https://api.example.com/me")
      yield* http.get("https://elsewhere.example.org/me")
      return api.requests.map((request) => request.headers["authorization"])
    }).pipe(Effect.scoped)

  it.effect("layer() signs every request, whatever its origin", () =>
    Effect.gen(function*() {
      expect(yield* authorizations(AuthHttpClient.layer())).toStrictEqual(["Bearer access-1", "Bearer access-1"])
    }))

  it.effect("layer({ origins }) signs only those origins, as layerWith did (and still does)", () =>
    Effect.gen(function*() {
      const origins = ["https://api.example.com"]
      const expected = ["Bearer access-1", undefined]
      expect(yield* authorizations(AuthHttpClient.layer({ origins }))).toStrictEqual(expected)
      expect(yield* authorizations(AuthHttpClient.layerWith({ origins }))).toStrictEqual(expected)
    }))

  it.effect("layerConfig reads the origins from the ConfigProvider", () =>
    Effect.gen(function*() {
      const auth = AuthHttpClient.layerConfig({ origins: Config.Array(Schema.String, "API_ORIGINS") })
      expect(yield* authorizations(auth).pipe(withEnv({ API_ORIGINS: "https://api.example.com" }))).toStrictEqual([
        "Bearer access-1",
        undefined
      ])
    }))

  it.effect("layerConfig refuses an origin that is not one with a ConfigError naming origins, not a defect", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(authorizations(AuthHttpClient.layerConfig({
        origins: Config.succeed(["https://api.example.com/v1"])
      })))
      const error = errorOf(exit)
      expect(error).toBeInstanceOf(Config.ConfigError)
      expect(String(error)).toContain("origins")
    }))

  it("is a Context.Service class with the key it always had", () => {
    expect(AuthHttpClient.AuthHttpClient.key).toBe("moon-refresh/AuthHttpClient")
  })
})

describe("RefreshClient.layerConfig takes Config.Wrap<Options>; layerFromEnv reads MOON_BASE_URL", () => {
  const sessionBody = {
    access_token: "access-2",
    refresh_token: "refresh-2",
    expires_in: 3600,
    token_type: "bearer",
    user: { id: "user-1" }
  }

  // One refresh through `layer`, under `env`: how it ended and the URLs it sent to.
  const refreshOver = <E>(
    layer: Layer.Layer<RefreshClient.RefreshClient, E, HttpClient.HttpClient>,
    env: Record<string, string>,
    reply: TestHttpClient.Reply = TestHttpClient.json(200, sessionBody)
  ) =>
    Effect.gen(function*() {
      const server = TestHttpClient.make(reply)
      const exit = yield* RefreshClient.refresh("refresh-1").pipe(
        Effect.provide(layer),
        Effect.provide(server.layer),
        withEnv(env),
        Effect.exit
      )
      return { exit, urls: server.requests.map((request) => request.url) }
    })

  it.effect("reads each option from the Config it is given", () =>
    Effect.gen(function*() {
      const { exit, urls } = yield* refreshOver(
        RefreshClient.layerConfig({ baseUrl: Config.String("MOON_URL"), timeout: Config.Duration("MOON_TIMEOUT") }),
        { MOON_URL: "http://127.0.0.1:1234", MOON_TIMEOUT: "5 seconds" }
      )
      expect(Exit.isSuccess(exit)).toBe(true)
      expect(urls).toStrictEqual(["http://127.0.0.1:1234/auth/refresh"])
    }))

  it.effect("takes one Config of all the options too", () =>
    Effect.gen(function*() {
      const { urls } = yield* refreshOver(
        RefreshClient.layerConfig(Config.all({ baseUrl: Config.String("MOON_URL") })),
        { MOON_URL: "http://127.0.0.1:4321" }
      )
      expect(urls).toStrictEqual(["http://127.0.0.1:4321/auth/refresh"])
    }))

  it.effect("reads nothing it is not given: MOON_BASE_URL is layerFromEnv's, not layerConfig's", () =>
    Effect.gen(function*() {
      const env = { MOON_BASE_URL: "http://127.0.0.1:1234" }
      expect((yield* refreshOver(RefreshClient.layerConfig({}), env)).urls).toStrictEqual([
        "https://beta.usemoon.ai/auth/refresh"
      ])
      expect((yield* refreshOver(RefreshClient.layerFromEnv(), env)).urls).toStrictEqual([
        "http://127.0.0.1:1234/auth/refresh"
      ])
      // 0.3's `layerConfig()`, deprecated, is `layerFromEnv()`.
      expect((yield* refreshOver(RefreshClient.layerConfig(), env)).urls).toStrictEqual([
        "http://127.0.0.1:1234/auth/refresh"
      ])
    }))

  it.effect("a policy passes through as a Config value", () =>
    Effect.gen(function*() {
      const { exit, urls } = yield* refreshOver(
        RefreshClient.layerConfig({ policy: Config.succeed(RefreshPolicy.none) }),
        {},
        TestHttpClient.json(503, { error: "unavailable" })
      )
      expect(errorOf(exit)?._tag).toBe("ServerError")
      expect(urls).toHaveLength(1)
    }))

  it.effect("a refused value is a ConfigError naming the option (layerConfig) or the variable (layerFromEnv)", () =>
    Effect.gen(function*() {
      const fromConfig = yield* refreshOver(
        RefreshClient.layerConfig({ baseUrl: Config.String("MOON_URL") }),
        { MOON_URL: "http://example.com" }
      )
      expect(errorOf(fromConfig.exit)).toBeInstanceOf(Config.ConfigError)
      expect(String(errorOf(fromConfig.exit))).toContain("baseUrl")
      const fromEnv = yield* refreshOver(RefreshClient.layerFromEnv(), { MOON_BASE_URL: "http://example.com" })
      expect(String(errorOf(fromEnv.exit))).toContain("MOON_BASE_URL")
      expect([...fromConfig.urls, ...fromEnv.urls]).toStrictEqual([])
    }))
})

describe("SessionManager.layerConfig and SessionPool.layerConfig", () => {
  it.effect("SessionManager.layerConfig applies the margin and autoRefresh it reads", () =>
    Effect.gen(function*() {
      const refreshesWith = (margin: string) =>
        Effect.gen(function*() {
          const mock = yield* MockRefreshClient.make()
          const issued = yield* mock.issueSession({ lifetime: "1 hour" })
          yield* SessionManager.accessToken.pipe(
            Effect.provide(
              SessionManager.layerConfig({
                margin: Config.Duration("MARGIN"),
                autoRefresh: Config.Boolean("AUTO_REFRESH")
              }).pipe(
                Layer.provide(Layer.merge(
                  Layer.succeed(RefreshClient.RefreshClient, mock),
                  SessionStore.layerMemory(issued)
                ))
              )
            ),
            withEnv({ MARGIN: margin, AUTO_REFRESH: "false" })
          )
          return (yield* mock.stats).calls
        })
      // A one-hour token: fresh with a minute's margin, due at once with two hours'.
      expect(yield* refreshesWith("1 minute")).toBe(0)
      expect(yield* refreshesWith("2 hours")).toBe(1)
    }))

  it.effect("a refused value is a ConfigError naming the option, where layer would die", () =>
    Effect.gen(function*() {
      const manager = yield* build(
        SessionManager.layerConfig({ margin: Config.succeed(-1) }).pipe(
          Layer.provide(Layer.merge(MockRefreshClient.layer(), SessionStore.layerMemory()))
        )
      )
      expect(errorOf(manager)).toBeInstanceOf(Config.ConfigError)
      expect(String(errorOf(manager))).toContain("margin")
      const pool = yield* build(
        SessionPool.layerConfig({ capacity: Config.succeed(0), session: { margin: Config.succeed("1 minute") } }).pipe(
          Layer.provide(Layer.merge(MockRefreshClient.layer(), SessionStore.layerMemoryKeyed))
        )
      )
      expect(errorOf(pool)).toBeInstanceOf(Config.ConfigError)
      expect(String(errorOf(pool))).toContain("capacity")
    }))
})

describe("NodeSessionStore: layer(options), layerFile kept, layerConfig", () => {
  it.live("layer and the deprecated layerFile open the same store", () =>
    Effect.gen(function*() {
      const path = Path.join(yield* tempDir, "session.json")
      const [viaLayer, viaLayerFile] = yield* Effect.all([
        Layer.build(NodeSessionStore.layer({ path })),
        Layer.build(NodeSessionStore.layerFile({ path }))
      ]).pipe(Effect.map((contexts) => contexts.map((context) => Context.get(context, SessionStore.SessionStore))))
      yield* SessionStore.save(viaLayer!, session("1"))
      const loaded = yield* SessionStore.load(viaLayerFile!)
      expect(Option.map(loaded, (s) => s.user.id)).toStrictEqual(Option.some("user-1"))
    }).pipe(Effect.scoped))

  it.live("layerConfig reads the path from the ConfigProvider; a refused lease is a ConfigError", () =>
    Effect.gen(function*() {
      const path = Path.join(yield* tempDir, "moon", "session.json")
      const opened = yield* build(NodeSessionStore.layerConfig({ path: Config.String("SESSION_FILE") })).pipe(
        withEnv({ SESSION_FILE: path })
      )
      expect(Exit.isSuccess(opened)).toBe(true)
      expect(Fs.statSync(Path.dirname(path)).mode & 0o777).toBe(0o700)
      const refused = yield* build(
        NodeSessionStore.layerConfig({ path: Config.succeed(path), lease: Config.succeed("1 second") })
      )
      expect(errorOf(refused)).toBeInstanceOf(Config.ConfigError)
      expect(String(errorOf(refused))).toContain("lease")
    }).pipe(Effect.scoped))
})

describe("RedisSessionStore: layerConfig takes Config.Wrap<Options>; the REDIS_URL layers are …FromEnv", () => {
  // A client that never connects: the layers below fail before any command.
  const lazyClient = Layer.effect(
    RedisSessionStore.RedisClient,
    Effect.acquireRelease(
      Effect.sync(() => new Redis({ lazyConnect: true })),
      (client) => Effect.sync(() => client.disconnect())
    )
  )

  it.effect("layerConfig reads the options and refuses one with a ConfigError naming it", () =>
    Effect.gen(function*() {
      const exit = yield* build(
        RedisSessionStore.layerConfig({ key: Config.String("SESSION_KEY"), lease: Config.succeed("1 second") }).pipe(
          Layer.provide(lazyClient)
        )
      ).pipe(withEnv({ SESSION_KEY: "moon-session:ada" }))
      expect(errorOf(exit)).toBeInstanceOf(Config.ConfigError)
      expect(String(errorOf(exit))).toContain("lease")
    }))

  it.effect("layerFromEnv, and 0.3's layerConfig(options) and layerClientConfig(), read REDIS_URL", () =>
    Effect.gen(function*() {
      // Builds a layer under an environment: the error it failed with.
      const failureUnder = <A>(layer: Layer.Layer<A, Config.ConfigError>) => (env: Record<string, string>) =>
        Effect.map(build(layer).pipe(withEnv(env)), errorOf)
      const layers = [
        failureUnder(RedisSessionStore.layerFromEnv({ key: "moon-session:ada" })),
        failureUnder(RedisSessionStore.layerConfig({ key: "moon-session:ada" })),
        failureUnder(RedisSessionStore.layerKeyedFromEnv({ prefix: "moon-session:" })),
        failureUnder(RedisSessionStore.layerKeyedConfig({ prefix: "moon-session:" })),
        failureUnder(RedisSessionStore.layerClientFromEnv()),
        failureUnder(RedisSessionStore.layerClientConfig())
      ]
      for (const failure of layers) {
        const missing = yield* failure({})
        expect(missing).toBeInstanceOf(Config.ConfigError)
        expect(String(missing)).toContain("REDIS_URL")
        const wrong = yield* failure({ REDIS_URL: "http://127.0.0.1:6379" })
        expect(String(wrong)).toContain("must be a redis:// or rediss:// URL")
      }
    }))

  it.effect("layerClientConfig takes the URL's Config", () =>
    Effect.gen(function*() {
      const exit = yield* build(RedisSessionStore.layerClientConfig(Config.Redacted("SESSIONS_REDIS_URL"))).pipe(
        withEnv({ SESSIONS_REDIS_URL: "http://127.0.0.1:6379", REDIS_URL: "redis://127.0.0.1:1" })
      )
      expect(String(errorOf(exit))).toContain("must be a redis:// or rediss:// URL")
    }))
})

describe("BrowserSessionStore.layerConfig", () => {
  it.effect("refuses an empty key with a ConfigError; a good one gets as far as the missing browser", () =>
    Effect.gen(function*() {
      const refused = yield* build(BrowserSessionStore.layerConfig({ key: Config.succeed("") }))
      expect(errorOf(refused)).toBeInstanceOf(Config.ConfigError)
      expect(String(errorOf(refused))).toContain("key")
      const inNode = yield* build(BrowserSessionStore.layerConfig({ key: Config.String("KEY") })).pipe(
        withEnv({ KEY: "moon-session" })
      )
      expect(errorOf(inNode)?._tag).toBe("BrowserStoreUnavailableError")
    }))
})

describe("RefreshPolicy: one name per value", () => {
  it("defaultPolicy is the policy; default is the same value, kept for 0.3 code", () => {
    expect(RefreshPolicy.default).toBe(RefreshPolicy.defaultPolicy)
  })
})

describe("StoreError keeps its cause where it holds no secret", () => {
  const tokens = ["access-secret-1", "refresh-secret-1", "access-secret-2", "refresh-secret-2"]

  // Every way an error is shown or sent: none may hold a token.
  const expectNoToken = (error: SessionStore.StoreError) => {
    const shown = [
      error.message,
      String(error),
      inspect(error, { depth: 10 }),
      JSON.stringify(Schema.encodeSync(SessionStore.StoreError)(error))
    ]
    for (const text of shown) for (const token of tokens) expect(text).not.toContain(token)
  }

  // `path` becomes a directory that is not empty: a file cannot be read from it or renamed over it.
  const block = (path: string) => {
    Fs.rmSync(path, { force: true })
    Fs.mkdirSync(path)
    Fs.writeFileSync(Path.join(path, "entry"), "")
  }

  it.live("NodeSessionStore: the file system's error, and no token", () =>
    Effect.gen(function*() {
      const path = Path.join(yield* tempDir, "session.json")
      const store = yield* NodeSessionStore.make({ path })
      yield* SessionStore.save(store, session("secret-1"))
      block(path)
      const error = yield* Effect.flip(SessionStore.save(store, session("secret-2")))
      expect(error._tag).toBe("StoreError")
      expect(error.cause).toBeInstanceOf(Error)
      expect(error.cause).toMatchObject({ code: "EISDIR" })
      expectNoToken(error)
    }).pipe(Effect.scoped))

  it.live("SessionStore.layerKeyValueStore: the KeyValueStore's error, and no token", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const store = yield* SessionStore.makeKeyValueStore({ key: "moon-session" }).pipe(
        Effect.provide(PrivateKeyValueStore.layerFileSystem(dir))
      )
      block(Path.join(dir, "moon-session"))
      const error = yield* Effect.flip(SessionStore.save(store, session("secret-1")))
      expect(error.operation).toBe("save")
      expect(error.cause).toMatchObject({ _tag: "KeyValueStoreError", method: "set" })
      expectNoToken(error)
    }).pipe(Effect.scoped))

  it("is optional: an error without one encodes without one", () => {
    const error = new SessionStore.StoreError({ operation: "lock", message: "the lock was lost" })
    expect(error.cause).toBeUndefined()
    expect(Schema.encodeSync(SessionStore.StoreError)(error)).toStrictEqual({
      _tag: "StoreError",
      operation: "lock",
      message: "the lock was lost"
    })
  })
})

describe("helpers the library uses for itself are not public", () => {
  it("Session, RefreshError and AuthHttpClient no longer export them", () => {
    const gone: ReadonlyArray<readonly [object, ReadonlyArray<string>]> = [
      [Session, ["describeIssue", "SupabaseSession", "MoonWireBody"]],
      [RefreshError, ["capMessage", "maxMessageLength"]],
      [AuthHttpClient, ["maxDrainBytes", "drainTimeout"]]
    ]
    for (const [module, names] of gone) for (const name of names) expect(name in module, name).toBe(false)
  })
})

// The spans the library opens, under a tracer that records them: their names,
// their parents, their attributes, and no token in any of them. A refresh
// through a manager, a 401 replay through AuthHttpClient, a pool's refresh.
import { describe, expect, it } from "@effect/vitest"
import { Context, Duration, Effect, Layer, Option } from "effect"
import type { HttpClient } from "effect/http"
import {
  AuthHttpClient,
  RefreshClient,
  RefreshPolicy,
  Session,
  SessionManager,
  SessionPool,
  SessionStore
} from "moon-refresh"
import { type RecordingSpan, recordingTracer } from "./support/RecordingTracer.js"
import * as TestHttpClient from "./support/TestHttpClient.js"

const tokens = [
  "access-token-secret-v1",
  "refresh-token-secret-v1",
  "access-token-secret-v2",
  "refresh-token-secret-v2"
]

const sessionBody = {
  access_token: "access-token-secret-v2",
  refresh_token: "refresh-token-secret-v2",
  expires_in: 3600,
  expires_at: 1764100000,
  token_type: "bearer",
  user: { id: "user-1" }
}

/** Fresh for an hour after the TestClock's epoch: read without a refresh. */
const fresh = Session.unsafeMake({
  accessToken: "access-token-secret-v1",
  refreshToken: "refresh-token-secret-v1",
  expiresAt: Duration.toMillis(Duration.hours(1)),
  user: { id: "user-1" }
})

const parentOf = (span: RecordingSpan): string =>
  Option.match(span.parent, { onNone: () => "(root)", onSome: (parent) => parent._tag === "Span" ? parent.name : "?" })

/** Each span as `name <- parent`, in the order they started. */
const tree = (spans: ReadonlyArray<RecordingSpan>) => spans.map((span) => `${span.name} <- ${parentOf(span)}`)

/** No token in any name, attribute or event of any span. */
const expectNoToken = (spans: ReadonlyArray<RecordingSpan>) => {
  expect(spans.length).toBeGreaterThan(0)
  for (const span of spans) {
    const text = [
      span.name,
      ...[...span.attributes].map(([key, value]) => `${key}=${String(value)} ${JSON.stringify(value)}`),
      ...span.events.map(([name, attributes]) => `${name} ${JSON.stringify(attributes)}`)
    ].join("\n")
    for (const token of tokens) expect(text).not.toContain(token)
  }
}

const managerOn = (store: SessionStore.Service, server: Layer.Layer<HttpClient.HttpClient>) =>
  Effect.map(
    Layer.build(
      SessionManager.layer({ autoRefresh: false }).pipe(
        Layer.provide(RefreshClient.layer({ policy: RefreshPolicy.none })),
        Layer.provide(Layer.succeed(SessionStore.SessionStore, store)),
        Layer.provide(server)
      )
    ),
    (context) => Context.get(context, SessionManager.SessionManager)
  )

describe("spans", () => {
  it.effect("a refresh: the flight's span under the caller's, the lock wait, the read, the POST and the save under it", () => {
    const { spans, tracer } = recordingTracer()
    return Effect.gen(function*() {
      const server = TestHttpClient.make(TestHttpClient.json(200, sessionBody))
      const manager = yield* managerOn(yield* SessionStore.makeMemory(fresh), server.layer)
      yield* manager.refresh.pipe(Effect.withSpan("caller"))
      expect(tree(spans)).toStrictEqual([
        "moon-refresh/SessionStore.read <- (root)",
        "caller <- (root)",
        "moon-refresh/SessionManager.refresh <- caller",
        "moon-refresh/SessionStore.lock <- moon-refresh/SessionManager.refresh",
        "moon-refresh/SessionStore.read <- moon-refresh/SessionManager.refresh",
        "moon-refresh/refresh <- moon-refresh/SessionManager.refresh",
        "moon-refresh/SessionStore.write <- moon-refresh/SessionManager.refresh"
      ])
      const attributes = (name: string) =>
        spans.filter((span) => span.name === name).map((span) => Object.fromEntries(span.attributes))
      expect(attributes("moon-refresh/SessionStore.lock")).toStrictEqual([
        { "moon.store.kind": "memory", "moon.store.outcome": "ok" }
      ])
      expect(attributes("moon-refresh/SessionStore.write")).toStrictEqual([
        { "moon.store.kind": "memory", "moon.store.outcome": "ok" }
      ])
      expect(attributes("moon-refresh/refresh")).toStrictEqual([{
        "moon.refresh.url": "https://beta.usemoon.ai/auth/refresh",
        "moon.refresh.attempts": 1,
        "moon.refresh.outcome": "success"
      }])
      // The flight's span ends with the lock, let go as the save lands.
      yield* Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, 0)))
      expect(spans.filter((span) => span.status._tag !== "Ended").map((span) => span.name)).toStrictEqual([])
      expectNoToken(spans)
    }).pipe(Effect.withTracer(tracer))
  })

  it.effect("a 401 replay: the replay's span under the request's, the refresh and the resend under it", () => {
    const { spans, tracer } = recordingTracer()
    return Effect.gen(function*() {
      const api = TestHttpClient.make(TestHttpClient.json(401, { error: "expired" }), TestHttpClient.json(200, {}))
      const refresh = TestHttpClient.make(TestHttpClient.json(200, sessionBody))
      const manager = yield* managerOn(yield* SessionStore.makeMemory(fresh), refresh.layer)
      const client = yield* AuthHttpClient.make(api.client).pipe(
        Effect.provideService(SessionManager.SessionManager, manager)
      )
      const response = yield* client.get("https://api.example.com/accounts?page=2").pipe(Effect.withSpan("request"))
      expect(response.status).toBe(200)
      const ours = spans.filter((span) => span.name !== "moon-refresh/SessionStore.read" || parentOf(span) !== "(root)")
      expect(tree(ours)).toStrictEqual([
        "request <- (root)",
        "GET <- request",
        "moon-refresh/AuthHttpClient.replay <- request",
        "moon-refresh/SessionManager.refresh <- moon-refresh/AuthHttpClient.replay",
        "moon-refresh/SessionStore.lock <- moon-refresh/SessionManager.refresh",
        "moon-refresh/SessionStore.read <- moon-refresh/SessionManager.refresh",
        "moon-refresh/refresh <- moon-refresh/SessionManager.refresh",
        "moon-refresh/SessionStore.write <- moon-refresh/SessionManager.refresh",
        "GET <- moon-refresh/AuthHttpClient.replay"
      ])
      const replay = spans.find((span) => span.name === "moon-refresh/AuthHttpClient.replay")!
      expect(Object.fromEntries(replay.attributes)).toStrictEqual({
        "http.request.method": "GET",
        "moon.auth.refreshed": true,
        "moon.auth.replayed": true,
        "moon.auth.outcome": "succeeded"
      })
      expectNoToken(spans)
    }).pipe(Effect.withTracer(tracer))
  })

  it.effect("a pool's refresh: its span named for the pool, under the caller's, the store and the POST under it", () => {
    const { spans, tracer } = recordingTracer()
    return Effect.gen(function*() {
      const server = TestHttpClient.make(TestHttpClient.json(200, sessionBody))
      const pool = Context.get(
        yield* Layer.build(
          SessionPool.layer({ name: "api", session: { autoRefresh: false } }).pipe(
            Layer.provide(RefreshClient.layer({ policy: RefreshPolicy.none })),
            Layer.provide(SessionStore.layerMemoryKeyed),
            Layer.provide(server.layer)
          )
        ),
        SessionPool.SessionPool
      )
      yield* pool.signIn("ada", fresh)
      const before = spans.length
      yield* pool.refresh("ada").pipe(Effect.withSpan("caller"))
      expect(tree(spans.slice(before))).toStrictEqual([
        "caller <- (root)",
        "moon-refresh/SessionPool.refresh <- caller",
        "moon-refresh/SessionStore.lock <- moon-refresh/SessionPool.refresh",
        "moon-refresh/SessionStore.read <- moon-refresh/SessionPool.refresh",
        "moon-refresh/refresh <- moon-refresh/SessionPool.refresh",
        "moon-refresh/SessionStore.write <- moon-refresh/SessionPool.refresh"
      ])
      const flight = spans.find((span) => span.name === "moon-refresh/SessionPool.refresh")!
      expect(Object.fromEntries(flight.attributes)).toStrictEqual({ "moon.pool.name": "api" })
      expectNoToken(spans)
    }).pipe(Effect.withTracer(tracer))
  })
})

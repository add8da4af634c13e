/**
 * Regressions: an option that was accepted (or clamped) when it should have
 * been refused, or refused the wrong way.
 *
 * One case per bug that was found and fixed, named by what broke, with the
 * commit that fixed it. Each case fails if its bug comes back. When you fix
 * a bug, add its case to the file of its area (test/regressions/*.test.ts).
 */
import { describe, expect, it } from "@effect/vitest"
import { Config, ConfigProvider, Duration, Effect, Layer } from "effect"
import type { HttpClient } from "effect/http"
import { RefreshClient, SessionManager, SessionStore } from "moon-refresh"
import { MockRefreshClient } from "moon-refresh/testing"
import { configErrorOf, defectOf } from "../support/Exits.js"
import * as TestHttpClient from "../support/TestHttpClient.js"
import { refreshThrough, sessionBody } from "./harness.js"

const buildAndRefresh = <E>(layer: Layer.Layer<RefreshClient.RefreshClient, E, HttpClient.HttpClient>) =>
  refreshThrough(layer, [TestHttpClient.json(200, sessionBody)]).pipe(
    Effect.map(({ exit, requests }) => ({ exit, requests: requests.length }))
  )

describe("RefreshClient options", () => {
  // d140fc1: `path` was appended to the base URL unchecked, query and all.
  it.effect("a path with a query string is refused at build, not sent", () =>
    Effect.gen(function*() {
      const { exit, requests } = yield* buildAndRefresh(RefreshClient.layer({ path: "/auth/refresh?x=1" }))
      expect(defectOf(exit)).toContain(`RefreshClient: option "path"`)
      expect(requests).toBe(0)
    }))

  // d140fc1: layerConfig passed the timeout on to `make`, which died: a defect
  // where layerConfig promises a ConfigError.
  it.effect("layerConfig refuses a zero timeout with a ConfigError, not a defect", () =>
    Effect.gen(function*() {
      const { exit, requests } = yield* buildAndRefresh(
        RefreshClient.layerConfig({ timeout: Config.succeed(Duration.zero) })
      )
      expect(String(configErrorOf(exit))).toContain("timeout must be a positive, finite duration")
      expect(requests).toBe(0)
    }))

  // d32b1b8: the ConfigError for a bad MOON_BASE_URL had an empty path: it did
  // not say which setting was wrong.
  it.effect("layerConfig's ConfigError for a bad MOON_BASE_URL names MOON_BASE_URL", () =>
    Effect.gen(function*() {
      const { exit } = yield* buildAndRefresh(RefreshClient.layerConfig()).pipe(
        Effect.provideService(
          ConfigProvider.ConfigProvider,
          ConfigProvider.fromEnvRecord({ MOON_BASE_URL: "http://example.com" })
        )
      )
      expect(String(configErrorOf(exit))).toContain("MOON_BASE_URL")
    }))
})

describe("SessionManager options", () => {
  const buildManager = (options: SessionManager.Options) =>
    Effect.exit(
      Effect.scoped(
        Layer.build(
          SessionManager.layer(options).pipe(
            Layer.provide(MockRefreshClient.layer()),
            Layer.provide(SessionStore.layerMemory())
          )
        )
      )
    )

  // cb58af9: Duration clamps a negative number to zero, and the check ran on
  // the clamped value: a margin of -60000 built a manager with a margin of 0.
  it.effect("a negative margin in milliseconds is refused at build, not clamped to zero", () =>
    Effect.gen(function*() {
      const exit = yield* buildManager({ margin: -60_000 })
      expect(defectOf(exit)).toContain(`SessionManager: option "margin" must be a finite, non-negative duration`)
    }))

  // 7092f96: the fix above looked at numbers only; "-5 seconds" was still
  // clamped to zero.
  it.effect("a negative margin written as a string is refused at build, not clamped to zero", () =>
    Effect.gen(function*() {
      const exit = yield* buildManager({ margin: "-5 seconds" })
      expect(defectOf(exit)).toContain(`SessionManager: option "margin" must be a finite, non-negative duration`)
    }))
})

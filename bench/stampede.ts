/**
 * 2. Stampede: 10,000 callers want a token at the moment it expires. Counts
 * the refresh POSTs the server saw and the time until every caller has a
 * token (or, for the interceptors, a 200 from `/protected`).
 */
import axios, { type AxiosError, type AxiosInstance, type InternalAxiosRequestConfig } from "axios"
import { createAuthRefresh } from "axios-auth-refresh"
import { Deferred, Effect, Layer, Redacted } from "effect"
import { FetchHttpClient } from "effect/http"
import * as Http from "node:http"
import { performance } from "node:perf_hooks"
import * as RefreshClient from "../src/RefreshClient.js"
import * as Session from "../src/Session.js"
import * as SessionManager from "../src/SessionManager.js"
import * as SessionStore from "../src/SessionStore.js"
import { median, rotate, type ServerHandle } from "./harness.js"
import type { Stats } from "./server.js"

interface Outcome {
  readonly millis: number
  /** Callers that got a token (or a 200). */
  readonly served: number
}

interface Flow {
  readonly name: string
  /** Sends thousands of HTTP requests per round: fewer rounds fit the time budget. */
  readonly heavy: boolean
  /** What "served" means for this flow. */
  readonly measures: string
  readonly run: (server: ServerHandle, callers: number) => Promise<Outcome>
}

interface WireSession {
  readonly access_token: string
  readonly refresh_token: string
}

const expiredSession = (minted: { readonly accessToken: string; readonly refreshToken: string }) =>
  Session.unsafeMake({
    accessToken: minted.accessToken,
    refreshToken: minted.refreshToken,
    expiresAt: Date.now() - 1000,
    user: { id: "bench-user" }
  })

const sessionManagerFlow: Flow = {
  name: "SessionManager (memory store, RefreshClient / FetchHttpClient)",
  heavy: false,
  measures: "callers holding the new access token",
  run: async (server, callers) => {
    const minted = await server.mint(3600)
    // autoRefresh off: a proactive refresh would run before the stampede and hide it.
    const layer = SessionManager.layer({ autoRefresh: false }).pipe(
      Layer.provide(SessionStore.layerMemory(expiredSession(minted))),
      Layer.provide(RefreshClient.layer({ baseUrl: server.baseUrl }).pipe(Layer.provide(FetchHttpClient.layer)))
    )
    return Effect.runPromise(
      Effect.gen(function*() {
        const manager = yield* SessionManager.SessionManager
        const start = performance.now()
        const tokens = yield* Effect.all(Array.from({ length: callers }, () => manager.accessToken), {
          concurrency: "unbounded"
        })
        const millis = performance.now() - start
        const fresh = tokens.filter((token) => Redacted.value(token) !== minted.accessToken).length
        return { millis, served: fresh }
      }).pipe(Effect.provide(layer))
    )
  }
}

const refreshWithFetch = async (baseUrl: string, refreshToken: string): Promise<WireSession> => {
  const response = await fetch(`${baseUrl}/auth/refresh`, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "application/json" },
    body: JSON.stringify({ refresh_token: refreshToken })
  })
  return JSON.parse(await response.text()) as WireSession
}

// The floor for any single flight built on fibers: one plain fetch refresh,
// 10,000 fibers awaiting one Deferred (effect-notes.md: the fiber time dominates).
const fiberFloorFlow: Flow = {
  name: "floor: one fetch, 10,000 fibers await a Deferred",
  heavy: false,
  measures: "fibers woken with the token",
  run: async (server, callers) => {
    const minted = await server.mint(3600)
    return Effect.runPromise(Effect.gen(function*() {
      const start = performance.now()
      const deferred = yield* Deferred.make<WireSession>()
      yield* Effect.forkChild(
        Effect.flatMap(
          Effect.promise(() => refreshWithFetch(server.baseUrl, minted.refreshToken)),
          (session) => Deferred.succeed(deferred, session)
        )
      )
      const sessions = yield* Effect.all(Array.from({ length: callers }, () => Deferred.await(deferred)), {
        concurrency: "unbounded"
      })
      return { millis: performance.now() - start, served: sessions.length }
    }))
  }
}

const promiseFloorFlow: Flow = {
  name: "floor: one fetch, 10,000 promises await it",
  heavy: false,
  measures: "promises resolved with the token",
  run: async (server, callers) => {
    const minted = await server.mint(3600)
    const start = performance.now()
    const once = refreshWithFetch(server.baseUrl, minted.refreshToken)
    const sessions = await Promise.all(Array.from({ length: callers }, () => once.then((session) => session)))
    return { millis: performance.now() - start, served: sessions.length }
  }
}

/**
 * The GETs share one pool of keep-alive sockets; the refresh POST has its own
 * agent, so that it never waits behind queued GETs (which favours the
 * interceptors, not us).
 */
interface Agents {
  readonly pool: Http.Agent
  readonly refresh: Http.Agent
}

/**
 * A client as the axios docs would set it up: the access token is read at
 * send time, so a refreshed one goes out with the replay.
 */
const makeAxios = (baseUrl: string, agents: Agents, tokens: { access: string; refresh: string }) => {
  const api = axios.create({ baseURL: baseUrl, httpAgent: agents.pool })
  api.interceptors.request.use((config) => {
    config.headers.Authorization = `Bearer ${tokens.access}`
    return config
  })
  const refresh = async () => {
    const response = await axios.post<WireSession>(`${baseUrl}/auth/refresh`, { refresh_token: tokens.refresh }, {
      httpAgent: agents.refresh
    })
    tokens.access = response.data.access_token
    tokens.refresh = response.data.refresh_token
  }
  return { api, refresh }
}

const interceptorFlow = (
  name: string,
  install: (api: AxiosInstance, refresh: () => Promise<void>) => void
) =>
(agents: Agents): Flow => ({
  name,
  heavy: true,
  measures: "GET /protected answered 200",
  run: async (server, callers) => {
    const minted = await server.mint(3600)
    await server.expireAccessTokens()
    const tokens = { access: minted.accessToken, refresh: minted.refreshToken }
    const { api, refresh } = makeAxios(server.baseUrl, agents, tokens)
    install(api, refresh)
    const start = performance.now()
    const results = await Promise.allSettled(Array.from({ length: callers }, () => api.get("/protected")))
    return {
      millis: performance.now() - start,
      served: results.filter((result) => result.status === "fulfilled" && result.value.status === 200).length
    }
  }
})

// axios-auth-refresh's types are resolved against axios's CommonJS typings, ours
// against its ESM ones: the same class, two declarations.
const asTheirs = (api: AxiosInstance) => api as unknown as Parameters<typeof createAuthRefresh>[0]

// The replay goes through the request interceptor, which reads the new token.
const axiosAuthRefreshFlow = interceptorFlow("axios-auth-refresh, default options", (api, refresh) => {
  createAuthRefresh(asTheirs(api), () => refresh())
})

// With the default, a 401 that arrives while the refresh runs is not
// intercepted (the instance is "paused") and fails. With deduplicateRefresh off
// it is intercepted and awaits the refresh call already in flight.
const axiosAuthRefreshJoinFlow = interceptorFlow("axios-auth-refresh, deduplicateRefresh: false", (api, refresh) => {
  createAuthRefresh(asTheirs(api), () => refresh(), { deduplicateRefresh: false })
})

interface RetriedConfig extends InternalAxiosRequestConfig {
  _retried?: boolean
}

const naiveFlow = interceptorFlow("naive interceptor (refresh on every 401)", (api, refresh) => {
  api.interceptors.response.use(undefined, async (error: AxiosError) => {
    const config = error.config as RetriedConfig | undefined
    if (error.response?.status !== 401 || config === undefined || config._retried) throw error
    config._retried = true
    await refresh()
    return api(config)
  })
})

export interface StampedeRow {
  readonly flow: string
  readonly measures: string
  readonly callers: number
  /** Median over rounds. */
  readonly refreshPosts: number
  /** Median over rounds: POSTs answered 400 because their refresh token had been spent (reuse). */
  readonly rejectedPosts: number
  readonly served: number
  readonly millis: number
  /** `millis` / one refresh round trip through RefreshClient / FetchHttpClient (p50, section 1). */
  readonly ratioToOneRefresh: number
  readonly rounds: number
}

export interface StampedeOptions {
  readonly callers: number
  /** Rounds of the light flows (ours and the floors); fewer once the budget is spent, never under `minRounds`. */
  readonly rounds: number
  readonly minRounds: number
  /** Uncounted rounds of each light flow at full size before those. */
  readonly warmupRounds: number
  /** Rounds for the interceptor flows (20,000 requests or more each). */
  readonly heavyRounds: number
  /** No light round past `minRounds` starts once this many seconds of them have passed (a busy machine runs fewer). */
  readonly budgetSeconds: number
  /** The p50 of one refresh through RefreshClient / FetchHttpClient, from section 1. */
  readonly oneRefreshMillis: number
  /** Sockets per host for the axios flows. */
  readonly maxSockets: number
}

export const measureStampede = async (server: ServerHandle, options: StampedeOptions): Promise<Array<StampedeRow>> => {
  const agents: Agents = {
    pool: new Http.Agent({ keepAlive: true, maxSockets: options.maxSockets }),
    refresh: new Http.Agent({ keepAlive: true })
  }
  const flows = [
    sessionManagerFlow,
    fiberFloorFlow,
    promiseFloorFlow,
    axiosAuthRefreshFlow(agents),
    axiosAuthRefreshJoinFlow(agents),
    naiveFlow(agents)
  ]
  const samples = new Map<string, Array<Outcome & { readonly posts: number; readonly rejected: number }>>(
    flows.map((flow) => [flow.name, []])
  )
  const diff = (before: Stats, after: Stats) => ({
    posts: after.refreshPosts - before.refreshPosts,
    rejected: after.refreshRejected - before.refreshRejected
  })
  const measure = async (flow: Flow) => {
    const before = await server.stats()
    const outcome = await flow.run(server, options.callers)
    samples.get(flow.name)!.push({ ...outcome, ...diff(before, await server.stats()) })
  }
  try {
    // The light flows (ours and the floors) first, among themselves: each
    // has warm-up rounds at full size (JIT) that do not count, then rounds
    // interleaved with the others. The heavy flows come after: their seconds
    // of garbage per round were collected during whichever light round came
    // next, which measured the collector, not the flow.
    const light = flows.filter((flow) => !flow.heavy)
    for (let round = 0; round < options.warmupRounds; round++) {
      for (const flow of light) await flow.run(server, options.callers)
    }
    const deadline = performance.now() + options.budgetSeconds * 1000
    for (let round = 0; round < options.rounds; round++) {
      if (round >= options.minRounds && performance.now() > deadline) break
      for (const flow of rotate(light, round)) await measure(flow)
    }
    for (let round = 0; round < options.heavyRounds; round++) {
      for (const flow of flows) if (flow.heavy) await measure(flow)
    }
  } finally {
    agents.pool.destroy()
    agents.refresh.destroy()
  }
  return flows.map((flow) => {
    const runs = samples.get(flow.name)!
    const millis = median(runs.map((run) => run.millis))
    return {
      flow: flow.name,
      measures: flow.measures,
      callers: options.callers,
      refreshPosts: median(runs.map((run) => run.posts)),
      rejectedPosts: median(runs.map((run) => run.rejected)),
      served: median(runs.map((run) => run.served)),
      millis,
      ratioToOneRefresh: millis / options.oneRefreshMillis,
      rounds: runs.length
    }
  })
}

/**
 * 1. Round-trip overhead: sequential refreshes (POST, decode, carry the
 * rotated refresh token to the next one) through each client against the same
 * server, interleaved round by round so that every client sees the same
 * machine. Ratios are to plain `fetch` + `JSON.parse` in the same round.
 */
import { FetchHttpClient, HttpClient } from "@effect/platform"
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import axios from "axios"
import { Effect, Layer, ManagedRuntime, Option, Redacted } from "effect"
import * as Http from "node:http"
import { performance } from "node:perf_hooks"
import { readBodyCapped } from "../src/internal/http.js"
import * as Moon from "../src/internal/moon.js"
import * as RefreshClient from "../src/RefreshClient.js"
import * as RefreshError from "../src/RefreshError.js"
import * as RefreshPolicy from "../src/RefreshPolicy.js"
import { median, percentile, rotate, type ServerHandle } from "./harness.js"

interface Sample {
  readonly latencies: Array<number>
  readonly totalMs: number
  /** This process's CPU time (user + system) over the sample: the client's work, not the server's. */
  readonly cpuMs: number
}

type Timed = Omit<Sample, "cpuMs">

export interface Runner {
  readonly name: string
  /** `main`: the table the issue asks for; `breakdown`: the experiment on where our overhead is. */
  readonly group: "main" | "breakdown"
  /** Which plain client is the floor for this one's HTTP stack. */
  readonly baseline: "fetch" | "node:http"
  readonly run: (firstRefreshToken: string, count: number) => Promise<Timed>
  readonly dispose: () => Promise<void>
}

interface WireSession {
  readonly refresh_token: string
}

const promiseLoop = async (
  first: string,
  count: number,
  step: (token: string) => Promise<string>
): Promise<Timed> => {
  const latencies: Array<number> = []
  let token = first
  const start = performance.now()
  for (let i = 0; i < count; i++) {
    const t0 = performance.now()
    token = await step(token)
    latencies.push(performance.now() - t0)
  }
  return { latencies, totalMs: performance.now() - start }
}

// The whole loop runs inside one Effect program, as a user's refreshes would.
const effectLoop = <E>(
  first: string,
  count: number,
  step: (token: string) => Effect.Effect<string, E>
): Effect.Effect<Timed, E> =>
  Effect.gen(function*() {
    const latencies: Array<number> = []
    let token = first
    const start = performance.now()
    for (let i = 0; i < count; i++) {
      const t0 = performance.now()
      token = yield* step(token)
      latencies.push(performance.now() - t0)
    }
    return { latencies, totalMs: performance.now() - start }
  })

const refreshClientRunner = (
  name: string,
  group: Runner["group"],
  baseline: Runner["baseline"],
  baseUrl: string,
  http: Layer.Layer<HttpClient.HttpClient>,
  wrap: <A, E>(effect: Effect.Effect<A, E>) => Effect.Effect<A, E> = (effect) => effect
): Runner => {
  const runtime = ManagedRuntime.make(RefreshClient.layer({ baseUrl }).pipe(Layer.provide(http)))
  return {
    name,
    group,
    baseline,
    run: (first, count) =>
      runtime.runPromise(
        Effect.flatMap(RefreshClient.RefreshClient, (client) =>
          wrap(
            effectLoop(
              first,
              count,
              (token) =>
                Effect.map(client.refresh(Redacted.make(token)), (session) => Redacted.value(session.refreshToken))
            )
          ))
      ),
    dispose: () => runtime.dispose()
  }
}

/** An `HttpClient` layer whose client neither opens spans nor sends trace headers. */
export const tracerOff = (http: Layer.Layer<HttpClient.HttpClient>): Layer.Layer<HttpClient.HttpClient> =>
  Layer.effect(
    HttpClient.HttpClient,
    Effect.map(HttpClient.HttpClient, (client) =>
      client.pipe(HttpClient.withTracerDisabledWhen(() => true), HttpClient.withTracerPropagation(false)))
  ).pipe(Layer.provide(http))

const requestBody = (token: string) => JSON.stringify({ refresh_token: token })

export const makeRunners = (server: ServerHandle): Array<Runner> => {
  const url = `${server.baseUrl}/auth/refresh`
  const keepAliveAgent = new Http.Agent({ keepAlive: true })
  const nodeKeepAlive = NodeHttpClient.layerWithoutAgent.pipe(
    Layer.provide(NodeHttpClient.makeAgentLayer({ keepAlive: true }))
  )
  const plain = (name: string, baseline: Runner["baseline"], step: (token: string) => Promise<string>): Runner => ({
    name,
    group: "main",
    baseline,
    run: (first, count) => promiseLoop(first, count, step),
    dispose: () => Promise.resolve()
  })

  const fetchRunner = plain("fetch + JSON.parse", "fetch", async (token) => {
    const response = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/json" },
      body: requestBody(token)
    })
    return (JSON.parse(await response.text()) as WireSession).refresh_token
  })

  const nodeRunner = plain(
    "node:http (keep-alive) + JSON.parse",
    "node:http",
    (token) =>
      new Promise<string>((resolve, reject) => {
        const body = requestBody(token)
        const request = Http.request(url, {
          method: "POST",
          agent: keepAliveAgent,
          headers: {
            "content-type": "application/json",
            accept: "application/json",
            "content-length": Buffer.byteLength(body)
          }
        }, (response) => {
          const chunks: Array<Buffer> = []
          response.on("data", (chunk: Buffer) => chunks.push(chunk))
          response.on("end", () => {
            try {
              resolve((JSON.parse(Buffer.concat(chunks).toString("utf8")) as WireSession).refresh_token)
            } catch (error) {
              reject(error)
            }
          })
          response.on("error", reject)
        })
        request.on("error", reject)
        request.end(body)
      })
  )

  const axiosRunner = plain("axios", "node:http", async (token) => {
    const response = await axios.post<WireSession>(url, { refresh_token: token })
    return response.data.refresh_token
  })

  // The experiment: the same refresh over FetchHttpClient through parts of
  // what RefreshClient does (b to d), all of it without tracing (e), and all
  // of it with the body read by `response.text` instead of readBodyCapped (f).
  const rung = <E>(
    name: string,
    http: Layer.Layer<HttpClient.HttpClient>,
    step: (client: HttpClient.HttpClient, token: string) => Effect.Effect<string, E>
  ): Runner => {
    const runtime = ManagedRuntime.make(http)
    return {
      name,
      group: "breakdown",
      baseline: "fetch",
      run: (first, count) =>
        runtime.runPromise(
          Effect.flatMap(HttpClient.HttpClient, (client) => effectLoop(first, count, (token) => step(client, token)))
        ),
      dispose: () => runtime.dispose()
    }
  }
  const request = (token: string) => Moon.request(url, Redacted.make(token))
  const withText = (client: HttpClient.HttpClient, token: string) =>
    client.execute(request(token)).pipe(
      Effect.flatMap((response) => response.text),
      Effect.map((text) => (JSON.parse(text) as WireSession).refresh_token)
    )
  const withCapped = (client: HttpClient.HttpClient, token: string) =>
    client.execute(request(token)).pipe(
      Effect.flatMap((response) => readBodyCapped(response)),
      Effect.map((text) => (JSON.parse(text) as WireSession).refresh_token)
    )
  // RefreshClient's pipeline (decode, timeout, retry, span) with the body read
  // by `response.text` instead of the capped stream fold: what a fix would give.
  const textPipeline = (client: HttpClient.HttpClient, token: string) =>
    client.execute(request(token)).pipe(
      Effect.flatMap((response) =>
        Effect.flatMap(
          response.text,
          (text) => Moon.decodeSuccess(response.status, text, Option.none(), (body) => body)
        )
      ),
      Effect.catchTags({
        RequestError: (error) =>
          Effect.fail(new RefreshError.TransportError({ reason: "Network", message: error.message })),
        ResponseError: (error) =>
          Effect.fail(new RefreshError.TransportError({ reason: "Network", message: error.message }))
      }),
      Effect.timeoutFail({
        duration: RefreshClient.defaultTimeout,
        onTimeout: () => new RefreshError.TransportError({ reason: "Timeout", message: "timeout" })
      }),
      Effect.retry({ schedule: RefreshPolicy.defaultPolicy, while: RefreshError.isRetryable }),
      Effect.map((session) => Redacted.value(session.refreshToken)),
      Effect.withSpan("moon-refresh/refresh", { kind: "client", attributes: { "moon.refresh.url": url } })
    )

  return [
    fetchRunner,
    nodeRunner,
    axiosRunner,
    refreshClientRunner("RefreshClient / FetchHttpClient", "main", "fetch", server.baseUrl, FetchHttpClient.layer),
    refreshClientRunner(
      "RefreshClient / NodeHttpClient (default agent)",
      "main",
      "node:http",
      server.baseUrl,
      NodeHttpClient.layer
    ),
    refreshClientRunner(
      "RefreshClient / NodeHttpClient (keep-alive agent)",
      "main",
      "node:http",
      server.baseUrl,
      nodeKeepAlive
    ),
    {
      name: "a. Effect.tryPromise(fetch + JSON.parse)",
      group: "breakdown",
      baseline: "fetch",
      run: (first, count) =>
        Effect.runPromise(effectLoop(first, count, (token) =>
          Effect.tryPromise(async () => {
            const response = await fetch(url, {
              method: "POST",
              headers: { "content-type": "application/json", accept: "application/json" },
              body: requestBody(token)
            })
            return (JSON.parse(await response.text()) as WireSession).refresh_token
          }))),
      dispose: () => Promise.resolve()
    },
    rung("b. HttpClient.execute + text + JSON.parse", FetchHttpClient.layer, withText),
    rung("c. b, HttpClient tracer off", tracerOff(FetchHttpClient.layer), withText),
    rung("d. b, readBodyCapped instead of text", FetchHttpClient.layer, withCapped),
    refreshClientRunner(
      "e. RefreshClient, all tracing off",
      "breakdown",
      "fetch",
      server.baseUrl,
      FetchHttpClient.layer,
      Effect.withTracerEnabled(false)
    ),
    rung("f. RefreshClient's pipeline, response.text instead of readBodyCapped", FetchHttpClient.layer, textPipeline)
  ]
}

export interface RoundTripRow {
  readonly client: string
  readonly group: Runner["group"]
  readonly baseline: Runner["baseline"]
  readonly requestsPerSecond: number
  readonly p50Ms: number
  readonly p99Ms: number
  /** Median over rounds of (this client's mean latency / plain fetch's) in the same round. */
  readonly ratioToFetch: number
  /** The same against the plain client of this client's own HTTP stack. */
  readonly ratioToSameStack: number
  /** This process's CPU time per request, median over rounds. */
  readonly cpuMicrosPerRequest: number
  /** Median over rounds of (this client's CPU per request / plain fetch's). */
  readonly cpuRatioToFetch: number
}

export interface RoundTripOptions {
  readonly rounds: number
  readonly perRound: number
  readonly warmup: number
}

export const measureRoundTrips = async (
  server: ServerHandle,
  options: RoundTripOptions
): Promise<Array<RoundTripRow>> => {
  const runners = makeRunners(server)
  const results = new Map<string, Array<Sample>>(runners.map((runner) => [runner.name, []]))
  try {
    for (const runner of runners) {
      await runner.run((await server.mint(3600)).refreshToken, options.warmup)
    }
    for (let round = 0; round < options.rounds; round++) {
      for (const runner of rotate(runners, round)) {
        const { refreshToken } = await server.mint(3600)
        const cpu = process.cpuUsage()
        const timed = await runner.run(refreshToken, options.perRound)
        const used = process.cpuUsage(cpu)
        results.get(runner.name)!.push({ ...timed, cpuMs: (used.user + used.system) / 1000 })
      }
    }
  } finally {
    for (const runner of runners) await runner.dispose()
  }
  const meanOf = (sample: Sample) => sample.totalMs / sample.latencies.length
  const cpuOf = (sample: Sample) => (sample.cpuMs * 1000) / sample.latencies.length
  const fetchSamples = results.get("fetch + JSON.parse")!
  const nodeSamples = results.get("node:http (keep-alive) + JSON.parse")!
  const ratio = (samples: ReadonlyArray<Sample>, base: ReadonlyArray<Sample>) =>
    median(samples.map((sample, i) => meanOf(sample) / meanOf(base[i]!)))
  return runners.map((runner) => {
    const samples = results.get(runner.name)!
    return {
      client: runner.name,
      group: runner.group,
      baseline: runner.baseline,
      requestsPerSecond: median(samples.map((sample) => 1000 / meanOf(sample))),
      p50Ms: median(samples.map((sample) => percentile(sample.latencies, 50))),
      p99Ms: median(samples.map((sample) => percentile(sample.latencies, 99))),
      ratioToFetch: ratio(samples, fetchSamples),
      ratioToSameStack: ratio(samples, runner.baseline === "fetch" ? fetchSamples : nodeSamples),
      cpuMicrosPerRequest: median(samples.map(cpuOf)),
      cpuRatioToFetch: median(samples.map((sample, i) => cpuOf(sample) / cpuOf(fetchSamples[i]!)))
    }
  })
}

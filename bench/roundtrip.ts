/**
 * 1. Round trip: sequential refreshes (POST, decode, carry the rotated
 * refresh token to the next one) through each client against the same
 * server, for each way the server can frame its answer, interleaved round by
 * round so that every client sees the same machine. Each client is compared
 * with two others measured in the same round and framing: the plain client of
 * its HTTP stack (`fetch`, `node:http`), and the HttpClient floor, a bare
 * `HttpClient` (effect/http) POST + `text` + `JSON.parse` on the same stack
 * (tracer on, as by default), which is what a user would write by hand.
 *
 * Also measured: `AuthHttpClient` per request (`GET /protected`) against the
 * same client with a fixed bearer header, and where RefreshClient's remaining
 * cost goes (the `breakdown` group).
 */
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import axios from "axios"
import { Duration, Effect, Layer, ManagedRuntime, Option, Redacted } from "effect"
import { FetchHttpClient, HttpClient, HttpClientRequest } from "effect/http"
import * as Http from "node:http"
import { performance } from "node:perf_hooks"
import * as AuthHttpClient from "../src/AuthHttpClient.js"
import { timeoutFail } from "../src/internal/attempt.js"
import { readBodyCapped } from "../src/internal/http.js"
import * as Moon from "../src/internal/moon.js"
import * as RefreshClient from "../src/RefreshClient.js"
import * as Session from "../src/Session.js"
import * as SessionManager from "../src/SessionManager.js"
import * as SessionStore from "../src/SessionStore.js"
import { median, percentile, rotate, type ServerHandle } from "./harness.js"
import type { Framing, Minted } from "./server.js"

interface Sample {
  readonly latencies: Array<number>
  readonly totalMs: number
  /** This process's CPU time (user + system) over the sample: the client's work, not the server's. */
  readonly cpuMs: number
}

type Timed = Omit<Sample, "cpuMs">

export type Group = "refresh" | "auth" | "breakdown" | "control"

export interface Runner {
  readonly name: string
  /**
   * `refresh`: the table the issue asks for; `auth`: requests through
   * AuthHttpClient; `breakdown`: the experiment on where our cost is;
   * `control`: the floor again, as a client of its own, whose ratio to the
   * floor is the measurement's own noise (an A/A test).
   */
  readonly group: Group
  readonly framing: Framing
  /** The runner this one is compared with: the HttpClient floor of its stack and framing. */
  readonly floor: string
  /** The plain client (no Effect) of its stack and framing. */
  readonly plain: string
  /** `count` sequential requests, starting from a freshly minted session. */
  readonly run: (session: Minted, count: number) => Promise<Timed>
  readonly dispose: () => Promise<void>
}

interface WireSession {
  readonly refresh_token: string
}

const timedLoop = async (count: number, step: () => Promise<void>): Promise<Timed> => {
  const latencies: Array<number> = []
  const start = performance.now()
  for (let i = 0; i < count; i++) {
    const t0 = performance.now()
    await step()
    latencies.push(performance.now() - t0)
  }
  return { latencies, totalMs: performance.now() - start }
}

// The whole loop runs inside one Effect program, as a user's refreshes would.
const effectLoop = <E>(count: number, step: Effect.Effect<void, E>): Effect.Effect<Timed, E> =>
  Effect.gen(function*() {
    const latencies: Array<number> = []
    const start = performance.now()
    for (let i = 0; i < count; i++) {
      const t0 = performance.now()
      yield* step
      latencies.push(performance.now() - t0)
    }
    return { latencies, totalMs: performance.now() - start }
  })

/** Carries the rotated refresh token from one refresh to the next. */
const refreshLoop = <E>(
  session: Minted,
  count: number,
  step: (token: string) => Effect.Effect<string, E>
): Effect.Effect<Timed, E> => {
  let token = session.refreshToken
  return effectLoop(
    count,
    Effect.suspend(() => step(token)).pipe(Effect.map((next) => void (token = next)))
  )
}

const requestBody = (token: string) => JSON.stringify({ refresh_token: token })

/**
 * An `HttpClient` layer whose client neither opens spans nor sends trace
 * headers: each request runs with `TracerDisabledWhen` answering "off" and
 * propagation off (Effect 4 has no `HttpClient.withTracerDisabledWhen`; this
 * is what it did).
 */
export const tracerOff = (http: Layer.Layer<HttpClient.HttpClient>): Layer.Layer<HttpClient.HttpClient> =>
  Layer.effect(
    HttpClient.HttpClient,
    Effect.map(HttpClient.HttpClient, (client) =>
      HttpClient.transformResponse(client, (response) =>
        response.pipe(
          Effect.provideService(HttpClient.TracerDisabledWhen, () => true),
          Effect.provideService(HttpClient.TracerPropagationEnabled, false)
        )))
  ).pipe(Layer.provide(http))

interface Stack {
  /** Shown in the runner names. */
  readonly name: string
  readonly layer: Layer.Layer<HttpClient.HttpClient>
  readonly plain: (framing: Framing) => string
  readonly framings: ReadonlyArray<Framing>
}

const label = (name: string, framing: Framing) => `${name} [${framing}]`

/** The A/A control's name: the cl floor, run again as a client of its own. */
export const controlName = label("FetchHttpClient POST + text + JSON.parse, again (A/A control)", "cl")

export const makeRunners = (server: ServerHandle): Array<Runner> => {
  const urlFor = (framing: Framing, path: string) => `${server.baseUrl}/${framing}${path}`
  const keepAliveAgent = new Http.Agent({ keepAlive: true })
  const nodeKeepAlive = NodeHttpClient.layerNodeHttpOptions({ keepAlive: true })
  const runners: Array<Runner> = []

  const fetchPlain = (framing: Framing) => label("fetch + JSON.parse", framing)
  const nodePlain = (framing: Framing) => label("node:http (keep-alive) + JSON.parse", framing)
  const fetchStack: Stack = {
    name: "FetchHttpClient",
    layer: FetchHttpClient.layer,
    plain: fetchPlain,
    framings: ["cl", "chunked", "gzip"]
  }
  // node:http asks for no compression, so a gzip framing would be the same as `cl`.
  const nodeStack: Stack = {
    name: "NodeHttpClient (keep-alive)",
    layer: nodeKeepAlive,
    plain: nodePlain,
    framings: ["cl", "chunked"]
  }

  const plainRunner = (
    name: string,
    framing: Framing,
    floor: string,
    step: (url: string, token: string) => Promise<string>
  ): Runner => ({
    name,
    group: "refresh",
    framing,
    floor,
    plain: name,
    run: (session, count) => {
      let token = session.refreshToken
      const url = urlFor(framing, "/auth/refresh")
      return timedLoop(count, async () => void (token = await step(url, token)))
    },
    dispose: () => Promise.resolve()
  })

  /** A runner whose loop runs in a runtime of its own, built from `layer`. */
  const runtimeRunner = <R, E>(
    name: string,
    group: Group,
    framing: Framing,
    stack: Stack,
    layer: Layer.Layer<R>,
    loop: (session: Minted, count: number) => Effect.Effect<Timed, E, R>
  ): Runner => {
    const runtime = ManagedRuntime.make(layer)
    return {
      name,
      group,
      framing,
      floor: label(`${stack.name} POST + text + JSON.parse`, framing),
      plain: stack.plain(framing),
      run: (session, count) => runtime.runPromise(loop(session, count)),
      dispose: () => runtime.dispose()
    }
  }

  /** A runner over an `HttpClient` layer: `step` is one refresh. */
  const httpRunner = <E>(
    name: string,
    group: Group,
    framing: Framing,
    stack: Stack,
    http: Layer.Layer<HttpClient.HttpClient>,
    step: (client: HttpClient.HttpClient, url: string, token: string) => Effect.Effect<string, E>
  ): Runner => {
    const url = urlFor(framing, "/auth/refresh")
    return runtimeRunner(
      name,
      group,
      framing,
      stack,
      http,
      (session, count) =>
        Effect.flatMap(
          HttpClient.HttpClient,
          (client) => refreshLoop(session, count, (token) => step(client, url, token))
        )
    )
  }

  const refreshClientRunner = (
    name: string,
    framing: Framing,
    stack: Stack,
    http: Layer.Layer<HttpClient.HttpClient>
  ): Runner =>
    runtimeRunner(
      name,
      "refresh",
      framing,
      stack,
      RefreshClient.layer({ baseUrl: `${server.baseUrl}/${framing}` }).pipe(Layer.provide(http)),
      (session, count) =>
        Effect.flatMap(RefreshClient.RefreshClient, (client) =>
          refreshLoop(
            session,
            count,
            (token) => Effect.map(client.refresh(Redacted.make(token)), (next) => Redacted.value(next.refreshToken))
          ))
    )

  // The floor's POST: the same JSON body, as plain bytes (the client's is a one-shot body, see `OneShotBody`).
  const request = (url: string, token: string) =>
    HttpClientRequest.post(url).pipe(
      HttpClientRequest.acceptJson,
      HttpClientRequest.bodyUint8Array(
        new TextEncoder().encode(JSON.stringify({ refresh_token: token })),
        "application/json"
      )
    )
  const withText = (client: HttpClient.HttpClient, url: string, token: string) =>
    client.execute(request(url, token)).pipe(
      Effect.flatMap((response) => response.text),
      Effect.map((text) => (JSON.parse(text) as WireSession).refresh_token)
    )

  for (const framing of fetchStack.framings) {
    runners.push(
      plainRunner(
        fetchPlain(framing),
        framing,
        label("FetchHttpClient POST + text + JSON.parse", framing),
        async (url, token) => {
          const response = await fetch(url, {
            method: "POST",
            headers: { "content-type": "application/json", accept: "application/json" },
            body: requestBody(token)
          })
          return (JSON.parse(await response.text()) as WireSession).refresh_token
        }
      )
    )
  }
  for (const framing of nodeStack.framings) {
    runners.push(Object.assign(
      plainRunner(
        nodePlain(framing),
        framing,
        label("NodeHttpClient (keep-alive) POST + text + JSON.parse", framing),
        (url, token) =>
          new Promise<string>((resolve, reject) => {
            const body = requestBody(token)
            const outgoing = Http.request(url, {
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
            outgoing.on("error", reject)
            outgoing.end(body)
          })
      ),
      { dispose: () => Promise.resolve(keepAliveAgent.destroy()) }
    ))
  }
  runners.push({
    ...plainRunner(
      label("axios", "cl"),
      "cl",
      label("NodeHttpClient (keep-alive) POST + text + JSON.parse", "cl"),
      async (url, token) => {
        const response = await axios.post<WireSession>(url, { refresh_token: token })
        return response.data.refresh_token
      }
    ),
    plain: nodePlain("cl")
  })

  for (const stack of [fetchStack, nodeStack]) {
    for (const framing of stack.framings) {
      runners.push(
        httpRunner(
          label(`${stack.name} POST + text + JSON.parse`, framing),
          "refresh",
          framing,
          stack,
          stack.layer,
          withText
        ),
        refreshClientRunner(label(`RefreshClient / ${stack.name}`, framing), framing, stack, stack.layer)
      )
    }
  }
  // The A/A control: the same code as the cl floor, in a runtime of its own. It is
  // no faster or slower than the floor, so how far its ratio strays from 1 is how
  // far any ratio here can stray by chance.
  runners.push(httpRunner(controlName, "control", "cl", fetchStack, fetchStack.layer, withText))
  runners.push(refreshClientRunner(
    label("RefreshClient / NodeHttpClient (default agent: no keep-alive)", "cl"),
    "cl",
    nodeStack,
    NodeHttpClient.layerNodeHttp
  ))

  // AuthHttpClient against the same client with a fixed bearer header, both in
  // one program (the same runtime, so the same context for the HttpClient to
  // merge into each request). The session is valid for an hour, so no request
  // refreshes.
  const protectedUrl = urlFor("cl", "/protected")
  const program = (session: Minted) =>
    AuthHttpClient.layer().pipe(
      Layer.provideMerge(
        SessionManager.layer({ autoRefresh: false }).pipe(
          Layer.provide(SessionStore.layerMemory(Session.unsafeMake({
            accessToken: session.accessToken,
            refreshToken: session.refreshToken,
            expiresAt: session.expiresAt,
            user: { id: "bench-user" }
          }))),
          Layer.provide(RefreshClient.layer({ baseUrl: server.baseUrl }))
        )
      ),
      Layer.provideMerge(FetchHttpClient.layer)
    )
  const authRunner = <E>(
    name: string,
    client: (
      session: Minted
    ) => Effect.Effect<HttpClient.HttpClient.With<E>, never, Layer.Success<ReturnType<typeof program>>>
  ): Runner => ({
    name,
    group: "auth",
    framing: "cl",
    floor: label("FetchHttpClient + fixed bearer header, GET + text", "cl"),
    plain: fetchPlain("cl"),
    run: async (session, count) => {
      const runtime = ManagedRuntime.make(program(session))
      try {
        return await runtime.runPromise(Effect.flatMap(
          client(session),
          (http) =>
            effectLoop(count, Effect.asVoid(Effect.flatMap(http.get(protectedUrl), (response) => response.text)))
        ))
      } finally {
        await runtime.dispose()
      }
    },
    dispose: () => Promise.resolve()
  })
  runners.push(
    authRunner(
      label("FetchHttpClient + fixed bearer header, GET + text", "cl"),
      (session) =>
        Effect.map(
          HttpClient.HttpClient,
          HttpClient.mapRequest(HttpClientRequest.bearerToken(Redacted.make(session.accessToken)))
        )
    ),
    authRunner(label("AuthHttpClient / FetchHttpClient, GET + text", "cl"), () => AuthHttpClient.AuthHttpClient)
  )

  // Where RefreshClient's cost over the floor goes, over FetchHttpClient with
  // chunked answers, one piece added at a time: the floor without the
  // HttpClient's span (which our POST skips), our body read, our decoding, the
  // per-attempt timeout, the one-shot body; RefreshClient itself (the main
  // table) adds the retry, its span, the redirect guard and the mapping of errors.
  const breakdown = "chunked"
  const off = tracerOff(FetchHttpClient.layer)
  const decodedWith =
    (build: (url: string, token: string) => HttpClientRequest.HttpClientRequest) =>
    (client: HttpClient.HttpClient, url: string, token: string) =>
      client.execute(build(url, token)).pipe(
        Effect.flatMap((response) =>
          Effect.flatMap(
            readBodyCapped(response),
            (text) => Moon.decodeSuccess(response.status, text, Option.none(), (body) => body)
          )
        ),
        Effect.map((session) => Redacted.value(session.refreshToken))
      )
  const decoded = decodedWith(request)
  // The body RefreshClient sends on Node (its first refresh over fetch, every one over
  // another transport): a stream that yields the token once (`OneShotBody`), so that no
  // redirect or resend carries it twice. fetch sends it chunked.
  const oneShot = decodedWith((url, token) => Moon.request(url, Moon.body(Redacted.make(token), "stream")))
  // The same body as a ReadableStream of its own, sent by fetch as it is: what RefreshClient
  // sends once a refresh has shown that its transport is fetch.
  // (Sent only under the guard, which has seen this hop: here that is said by hand.)
  const oneShotWeb = decodedWith((url, token) => {
    const body = Moon.body(Redacted.make(token), "web")
    body.hop(() => undefined)
    return Moon.request(url, body)
  })
  // Inside the per-attempt timeout, as RefreshClient runs each attempt.
  const withinTimeout = (step: typeof decoded) => (client: HttpClient.HttpClient, url: string, token: string) =>
    timeoutFail({ duration: RefreshClient.defaultTimeout, onTimeout: () => "timeout" as const })(
      step(client, url, token)
    )
  runners.push(
    httpRunner(label("a. floor, tracer off", breakdown), "breakdown", breakdown, fetchStack, off, withText),
    httpRunner(
      label("b. a, readBodyCapped instead of text", breakdown),
      "breakdown",
      breakdown,
      fetchStack,
      off,
      (client, url, token) =>
        client.execute(request(url, token)).pipe(
          Effect.flatMap((response) => readBodyCapped(response)),
          Effect.map((text) => (JSON.parse(text) as WireSession).refresh_token)
        )
    ),
    httpRunner(
      label("c. b, decodeSuccess instead of JSON.parse", breakdown),
      "breakdown",
      breakdown,
      fetchStack,
      off,
      decoded
    ),
    httpRunner(
      label("c2. c, with a setTimeout set before and cleared after (what a timer per attempt costs)", breakdown),
      "breakdown",
      breakdown,
      fetchStack,
      off,
      (client, url, token) =>
        Effect.suspend(() => {
          const timer = setTimeout(() => {}, Duration.toMillis(RefreshClient.defaultTimeout))
          return Effect.ensuring(decoded(client, url, token), Effect.sync(() => clearTimeout(timer)))
        })
    ),
    httpRunner(
      label("d. c, inside the per-attempt timeoutFail (one timer shared by all attempts)", breakdown),
      "breakdown",
      breakdown,
      fetchStack,
      off,
      withinTimeout(decoded)
    ),
    httpRunner(
      label("e. d, with the one-shot stream body", breakdown),
      "breakdown",
      breakdown,
      fetchStack,
      off,
      withinTimeout(oneShot)
    ),
    httpRunner(
      label("f. d, with the one-shot body as a ReadableStream", breakdown),
      "breakdown",
      breakdown,
      fetchStack,
      off,
      withinTimeout(oneShotWeb)
    )
  )
  return runners
}

export interface RoundTripRow {
  readonly client: string
  readonly group: Group
  readonly framing: Framing
  readonly requestsPerSecond: number
  readonly p50Ms: number
  readonly p99Ms: number
  /**
   * Median over rounds of (this client's mean latency / its plain client's) in
   * the same round; `null` when the plain client was not measured (a run of
   * chosen runners, see `RoundTripOptions.only`).
   */
  readonly ratioToPlain: number | null
  /** The same against its HttpClient floor. */
  readonly ratioToFloor: number
  /**
   * The lower and upper quartile of the per-round ratios whose median is
   * `ratioToFloor`: how much the rounds disagreed.
   */
  readonly ratioToFloorQuartiles: readonly [number, number]
  /**
   * Median over rounds of (this client's median latency / its floor's): less
   * swayed than the mean by the stalls a busy machine adds to a few requests.
   */
  readonly p50RatioToFloor: number
  /** This process's CPU time per request, median over rounds. */
  readonly cpuMicrosPerRequest: number
  /** Median over rounds of (this client's CPU per request / its floor's). */
  readonly cpuRatioToFloor: number
  readonly plain: string
  readonly floor: string
  /** Rounds run (fewer than asked when the time budget ran out). */
  readonly rounds: number
}

export interface RoundTripOptions {
  /** At most this many rounds... */
  readonly rounds: number
  /** ...and at least this many... */
  readonly minRounds: number
  /** ...and no round started once this many seconds of rounds have passed (a busy machine runs fewer). */
  readonly budgetSeconds: number
  readonly perRound: number
  /** Each round is run in this many slices, each runner's slice next to those of the runners it is compared with. */
  readonly slices: number
  readonly warmup: number
  /**
   * Only these runners (by name) and the floors they are compared with, for
   * more rounds of the pairs a target is judged on in the same time. All of
   * them when absent.
   */
  readonly only?: ReadonlyArray<string> | undefined
}

export const measureRoundTrips = async (
  server: ServerHandle,
  options: RoundTripOptions
): Promise<Array<RoundTripRow>> => {
  const all = makeRunners(server)
  const only = options.only
  if (only !== undefined) {
    const unknown = only.filter((name) => !all.some((runner) => runner.name === name))
    if (unknown.length > 0) throw new Error(`no runner named ${unknown.join(", ")}`)
  }
  const wanted = only === undefined
    ? undefined
    : new Set(only.flatMap((name) => [name, all.find((runner) => runner.name === name)!.floor]))
  const runners = wanted === undefined ? all : all.filter((runner) => wanted.has(runner.name))
  await Promise.all(all.filter((runner) => !runners.includes(runner)).map((runner) => runner.dispose()))
  // A runner and its floor take turns within a few seconds of each other, so
  // that a ratio compares the same state of a busy machine.
  const groups = [...new Set(runners.map((runner) => runner.floor))].map((floor) =>
    runners.filter((runner) => runner.floor === floor)
  )
  const results = new Map<string, Array<Sample>>(runners.map((runner) => [runner.name, []]))
  const perSlice = Math.ceil(options.perRound / options.slices)
  let rounds = 0
  try {
    for (const runner of runners) await runner.run(await server.mint(3600), options.warmup)
    const deadline = performance.now() + options.budgetSeconds * 1000
    for (let round = 0; round < options.rounds; round++) {
      if (round >= options.minRounds && performance.now() > deadline) break
      rounds++
      const slices = new Map<string, Array<Sample>>(runners.map((runner) => [runner.name, []]))
      for (const group of rotate(groups, round)) {
        for (let slice = 0; slice < options.slices; slice++) {
          for (const runner of rotate(group, round + slice)) {
            const session = await server.mint(3600)
            const cpu = process.cpuUsage()
            const timed = await runner.run(session, perSlice)
            const used = process.cpuUsage(cpu)
            slices.get(runner.name)!.push({ ...timed, cpuMs: (used.user + used.system) / 1000 })
          }
        }
      }
      for (const [name, parts] of slices) {
        results.get(name)!.push({
          latencies: parts.flatMap((part) => part.latencies),
          totalMs: parts.reduce((sum, part) => sum + part.totalMs, 0),
          cpuMs: parts.reduce((sum, part) => sum + part.cpuMs, 0)
        })
      }
    }
  } finally {
    for (const runner of runners) await runner.dispose()
  }
  const meanOf = (sample: Sample) => sample.totalMs / sample.latencies.length
  const cpuOf = (sample: Sample) => (sample.cpuMs * 1000) / sample.latencies.length
  const samplesOf = (name: string) => {
    const samples = results.get(name)
    if (samples === undefined) throw new Error(`no runner named ${name}`)
    return samples
  }
  const ratios = (samples: ReadonlyArray<Sample>, base: ReadonlyArray<Sample>, of: (sample: Sample) => number) =>
    samples.map((sample, i) => of(sample) / of(base[i]!))
  const ratio = (samples: ReadonlyArray<Sample>, base: ReadonlyArray<Sample>, of: (sample: Sample) => number) =>
    median(ratios(samples, base, of))
  const measured = new Set(runners.map((runner) => runner.name))
  return runners.map((runner) => {
    const samples = samplesOf(runner.name)
    const floor = samplesOf(runner.floor)
    return {
      client: runner.name,
      group: runner.group,
      framing: runner.framing,
      requestsPerSecond: median(samples.map((sample) => 1000 / meanOf(sample))),
      p50Ms: median(samples.map((sample) => percentile(sample.latencies, 50))),
      p99Ms: median(samples.map((sample) => percentile(sample.latencies, 99))),
      ratioToPlain: measured.has(runner.plain) ? ratio(samples, samplesOf(runner.plain), meanOf) : null,
      ratioToFloor: ratio(samples, floor, meanOf),
      ratioToFloorQuartiles: [
        percentile(ratios(samples, floor, meanOf), 25),
        percentile(ratios(samples, floor, meanOf), 75)
      ] as const,
      p50RatioToFloor: ratio(samples, floor, (sample) => percentile(sample.latencies, 50)),
      cpuMicrosPerRequest: median(samples.map(cpuOf)),
      cpuRatioToFloor: ratio(samples, floor, cpuOf),
      plain: runner.plain,
      floor: runner.floor,
      rounds
    }
  })
}

/**
 * Small HTTP helpers shared by the endpoint code. Not public API.
 */
import type { Headers, HttpClientRequest, HttpClientResponse } from "@effect/platform"
import { FetchHttpClient, HttpClient, HttpClientError } from "@effect/platform"
import { Context, Duration, Effect, Either, type Fiber, FiberRef, Option, Predicate, Stream } from "effect"
import { type Entry, locallyAll } from "./locally.js"

/** The largest response body we read: a session is a few kilobytes. */
export const maxBodyBytes = 1024 * 1024

/** A `Retry-After` longer than this is treated as this. */
export const maxRetryAfter = Duration.hours(1)

export class BodyTooLarge {
  readonly _tag = "BodyTooLarge"
  constructor(readonly limit: number, readonly response: HttpClientResponse.HttpClientResponse) {}
}

/**
 * Reads a response body as text, refusing one over `limit` bytes without
 * reading the rest: first by `Content-Length`, then by counting the bytes as
 * they arrive, after any `Content-Encoding` is undone (a small gzip body can
 * inflate to any size). Past the limit the read stops and the body is
 * cancelled, which closes the connection. What is held is bounded: the
 * chunks under the limit, the chunk that crosses it, and what the runtime
 * buffers ahead of a reader (its streams' high-water marks, kilobytes).
 */
export const readBodyCapped = (
  response: HttpClientResponse.HttpClientResponse,
  limit: number = maxBodyBytes,
  // The platform builds a new record on each read of `response.headers`: a caller that has one passes it.
  headers: Headers.Headers = response.headers
): Effect.Effect<string, BodyTooLarge | HttpClientError.ResponseError> => {
  const declared = Number(headers["content-length"] ?? Number.NaN)
  if (Number.isFinite(declared) && declared > limit) return Effect.fail(new BodyTooLarge(limit, response))
  const body = bodyOf(response)
  switch (body._tag) {
    case "Web":
      takeOver(response)
      return body.stream === null ? Effect.succeed("") : readWeb(response, body.stream, body.abort, limit)
    case "Node":
      takeOver(response)
      return readNode(response, body.readable, body.abort, limit)
    case "Unknown":
      // A declared, small, uncompressed length bounds the body (the HTTP
      // stack fails a body longer than its Content-Length), so it can be
      // read in one go.
      return Number.isFinite(declared) && headers["content-encoding"] === undefined
        ? response.text
        : readStream(response, limit)
  }
}

/** The parts of a Node `Readable` the body read uses (no import of `node:stream`: this file runs in browsers). */
interface NodeReadable {
  on(event: "data", listener: (chunk: Uint8Array) => void): unknown
  on(event: "end" | "close", listener: () => void): unknown
  on(event: "error", listener: (error: unknown) => void): unknown
  off(event: string, listener: (...args: Array<any>) => void): unknown
  destroy(): unknown
  readonly readableEnded: boolean
}

/** Where the body of a response is, and how to abort its request. */
export type BodySource =
  | { readonly _tag: "Web"; readonly stream: ReadableStream<Uint8Array> | null; readonly abort: () => void }
  | { readonly _tag: "Node"; readonly readable: NodeReadable; readonly abort: () => void }
  | { readonly _tag: "Unknown" }

const unknownBody: BodySource = { _tag: "Unknown" }

/**
 * The registry `HttpClient.make` puts each response in, so that a response
 * dropped unread has its request aborted once it is garbage-collected. The
 * platform's own readers (`text`, `stream`…) take the response out when they
 * start; a read of ours does the same (see `readBodyCapped`). Found in
 * Effect's global store under the platform's key, read only (never created
 * here); `undefined` if a platform version renames it, and then responses
 * simply stay registered. `test/body-cap.test.ts` checks that it is found.
 */
export const platformResponseRegistry = ():
  | { readonly unregister: (response: unknown) => void }
  | undefined =>
{
  const store = (globalThis as { readonly "effect/GlobalValue"?: Map<unknown, unknown> })["effect/GlobalValue"]
  const registry = store?.get("@effect/platform/HttpClient/responseRegistry")
  return Predicate.hasProperty(registry, "unregister") && typeof registry.unregister === "function"
    ? registry as { readonly unregister: (response: unknown) => void }
    : undefined
}

// A read of ours either consumes the whole body or aborts the request itself;
// left registered, each response would cost a registry cell, then an abort
// (an AbortError with its stack trace) when it is collected.
const takeOver = (response: HttpClientResponse.HttpClientResponse): void => {
  const original = (response as { readonly original?: unknown }).original
  if (original !== undefined) platformResponseRegistry()?.unregister(original)
}

const isNodeReadable = (u: unknown): u is NodeReadable =>
  Predicate.hasProperty(u, "on") && typeof u.on === "function" && Predicate.hasProperty(u, "destroy") &&
  typeof u.destroy === "function" && Predicate.hasProperty(u, "readableEnded")

const isWebStream = (u: unknown): u is ReadableStream<Uint8Array> =>
  Predicate.hasProperty(u, "getReader") && typeof u.getReader === "function"

/**
 * Finds the runtime's body behind a response. `HttpClientResponse` offers the
 * body as `text` (no bound) or as an Effect `Stream`, and any run of a
 * `Stream` costs hundreds of microseconds, half a refresh. The platform's own
 * clients keep the runtime's response in a field: a web `Response`
 * (`FetchHttpClient`), an `IncomingMessage` (`NodeHttpClient`), undici's
 * `ResponseData` (`NodeHttpClient.layerUndici`); those bodies are read with a
 * plain loop. Any other response (a test double, a client of the user's) is
 * `Unknown` and read through the public `stream`. `test/body-cap.test.ts`
 * checks that the platform's three clients are recognised, so that a renamed
 * field shows up as a failing test, not as a slow path.
 */
export const bodyOf = (response: HttpClientResponse.HttpClientResponse): BodySource => {
  // `HttpClient.make` wraps each response in one that aborts the request's
  // AbortSignal when a read is interrupted; the wrapper keeps both.
  const wrapper = response as { readonly original?: unknown; readonly controller?: unknown }
  const inner = wrapper.original ?? response
  const controller = wrapper.controller instanceof AbortController ? wrapper.controller : undefined
  const abort = () => controller?.abort()
  const source = Predicate.hasProperty(inner, "source") ? inner.source : undefined
  if (isNodeReadable(source)) return { _tag: "Node", readable: source, abort }
  if (!Predicate.hasProperty(source, "body")) return unknownBody
  if (source.body === null && Predicate.hasProperty(source, "arrayBuffer")) return { _tag: "Web", stream: null, abort }
  if (isWebStream(source.body)) return { _tag: "Web", stream: source.body, abort }
  if (isNodeReadable(source.body)) return { _tag: "Node", readable: source.body, abort }
  return unknownBody
}

const utf8 = new TextDecoder()

const decode = (chunks: ReadonlyArray<Uint8Array>, size: number): string => {
  if (chunks.length === 1) return utf8.decode(chunks[0])
  const all = new Uint8Array(size)
  let offset = 0
  for (const chunk of chunks) {
    all.set(chunk, offset)
    offset += chunk.length
  }
  return utf8.decode(all)
}

const readError = (response: HttpClientResponse.HttpClientResponse, cause: unknown) =>
  new HttpClientError.ResponseError({ request: response.request, response, reason: "Decode", cause })

const ignore = () => {}

// One Effect around a reader loop instead of a Stream: the same bound at a
// tenth of the cost.
const readWeb = (
  response: HttpClientResponse.HttpClientResponse,
  stream: ReadableStream<Uint8Array>,
  abort: () => void,
  limit: number
): Effect.Effect<string, BodyTooLarge | HttpClientError.ResponseError> =>
  Effect.async((resume) => {
    let reader: ReadableStreamDefaultReader<Uint8Array>
    try {
      reader = stream.getReader()
    } catch (cause) {
      // Already read or locked: the platform's `text` would fail the same way.
      return resume(Effect.fail(readError(response, cause)))
    }
    const chunks: Array<Uint8Array> = []
    let size = 0
    let done = false
    const onChunk = (result: ReadableStreamReadResult<Uint8Array>): void => {
      if (done) return
      if (result.done) {
        done = true
        return resume(Effect.succeed(decode(chunks, size)))
      }
      size += result.value.length
      if (size > limit) {
        done = true
        reader.cancel().then(ignore, ignore)
        return resume(Effect.fail(new BodyTooLarge(limit, response)))
      }
      chunks.push(result.value)
      reader.read().then(onChunk, onError)
    }
    const onError = (cause: unknown): void => {
      if (done) return
      done = true
      resume(Effect.fail(readError(response, cause)))
    }
    reader.read().then(onChunk, onError)
    return Effect.sync(() => {
      done = true
      reader.cancel().then(ignore, ignore)
      abort()
    })
  })

const readNode = (
  response: HttpClientResponse.HttpClientResponse,
  readable: NodeReadable,
  abort: () => void,
  limit: number
): Effect.Effect<string, BodyTooLarge | HttpClientError.ResponseError> =>
  Effect.async((resume) => {
    const chunks: Array<Uint8Array> = []
    let size = 0
    const stop = () => {
      readable.off("data", onData)
      readable.off("end", onEnd)
      readable.off("close", onClose)
      readable.off("error", onError)
      // An error emitted after we stopped listening must not become an uncaught exception.
      readable.on("error", ignore)
    }
    const onData = (chunk: Uint8Array) => {
      size += chunk.length
      if (size > limit) {
        stop()
        readable.destroy()
        return resume(Effect.fail(new BodyTooLarge(limit, response)))
      }
      chunks.push(chunk)
    }
    const onEnd = () => {
      stop()
      resume(Effect.succeed(decode(chunks, size)))
    }
    const onError = (cause: unknown) => {
      stop()
      resume(Effect.fail(readError(response, cause)))
    }
    // Closed before its end without an error: the connection went away.
    const onClose = () => onError(new Error("the response closed before its end"))
    if (readable.readableEnded) {
      return resume(Effect.fail(readError(response, new Error("the response body was already read"))))
    }
    readable.on("data", onData)
    readable.on("end", onEnd)
    readable.on("close", onClose)
    readable.on("error", onError)
    return Effect.sync(() => {
      stop()
      readable.destroy()
      abort()
    })
  })

// Any other response: counted as it streams. Failing the stream cancels the
// underlying read.
const readStream = (
  response: HttpClientResponse.HttpClientResponse,
  limit: number
): Effect.Effect<string, BodyTooLarge | HttpClientError.ResponseError> =>
  response.stream.pipe(
    Stream.runFoldEffect(
      { chunks: [] as Array<Uint8Array>, size: 0 },
      (acc, chunk): Effect.Effect<{ chunks: Array<Uint8Array>; size: number }, BodyTooLarge> => {
        const size = acc.size + chunk.length
        if (size > limit) return Effect.fail(new BodyTooLarge(limit, response))
        acc.chunks.push(chunk)
        return Effect.succeed({ chunks: acc.chunks, size })
      }
    ),
    Effect.map(({ chunks, size }) => decode(chunks, size))
  )

/**
 * Parses `Retry-After`: delay-seconds or an HTTP-date (relative to
 * `nowMillis`, which the caller takes from the answer's `Date` when it can),
 * capped at {@link maxRetryAfter}. A date in the past means "now".
 */
export const parseRetryAfter = (header: string | undefined, nowMillis: number): Option.Option<Duration.Duration> => {
  if (header === undefined) return Option.none()
  const value = header.trim()
  let millis: number
  if (/^\d+(\.\d+)?$/.test(value)) {
    millis = Number(value) * 1000
  } else {
    const date = Date.parse(value)
    if (Number.isNaN(date)) return Option.none()
    millis = Math.max(0, date - nowMillis)
  }
  return Option.some(Duration.min(Duration.millis(millis), maxRetryAfter))
}

const loopbackHosts = new Set(["localhost", "127.0.0.1", "[::1]", "::1"])

const isLoopback = (hostname: string): boolean =>
  loopbackHosts.has(hostname) || /^127(\.\d{1,3}){3}$/.test(hostname) || hostname.endsWith(".localhost")

/**
 * Checks a base URL: it must parse, use `https:` (or `http:` to a loopback
 * host, for local servers and tests), and carry no credentials, query or
 * fragment. Returns the URL without a trailing slash, or why it was refused.
 */
export const validateBaseUrl = (input: string): Either.Either<string, string> => {
  let url: URL
  try {
    url = new URL(input)
  } catch {
    return Either.left(`is not a URL`)
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    return Either.left(`must use https: (got ${url.protocol})`)
  }
  if (url.protocol === "http:" && !isLoopback(url.hostname)) {
    return Either.left(`must use https: for a non-loopback host (http: is allowed only for localhost and 127.0.0.0/8)`)
  }
  if (url.username !== "" || url.password !== "") return Either.left("must not contain credentials")
  if (url.search !== "" || url.hash !== "") return Either.left("must not contain a query or fragment")
  return Either.right(url.href.replace(/\/+$/, ""))
}

/** Joins a validated base URL and a path, keeping any path prefix of the base. */
export const joinUrl = (base: string, path: string): string => `${base}/${path.replace(/^\/+/, "")}`

/** Checks the endpoint path: a plain path, no query or fragment (the token never goes in a URL anyway). */
export const validatePath = (path: string): Either.Either<string, string> => {
  if (!/^\/?[A-Za-z0-9\-._~!$&'()*+,;=:@%/]+$/.test(path)) {
    return Either.left(`must be a plain URL path such as "/auth/refresh" (got ${JSON.stringify(path.slice(0, 100))})`)
  }
  return Either.right(path)
}

/**
 * The `FiberRef` values under which `onHop` is called on every request the
 * transport is about to send, redirect hops included. A client that follows
 * redirects (for example `HttpClient.followRedirects()`) sends each hop
 * through the transport without passing through any wrapper of ours; the one
 * hook every hop passes is the transport's tracer predicate
 * (`HttpClient.make` consults it before sending). `onHop` may mutate the
 * request it is given, to keep a secret off a hop it must not reach; it
 * never creates a span.
 *
 * The user's own tracer settings are kept: the predicate answers what theirs
 * would have. Limit: a predicate set on the client itself with
 * `HttpClient.withTracerDisabledWhen` is applied inside `client.execute`, after
 * ours, and replaces it for every request that client sends: no hop is seen
 * then, and the platform opens its span whenever that predicate says so.
 */
const hopGuard = (
  fiber: Fiber.RuntimeFiber<unknown, unknown>,
  onHop: (request: HttpClientRequest.HttpClientRequest) => void,
  spans: "as configured" | "never"
): readonly [Entry, Entry] => {
  const enabled = fiber.getFiberRef(FiberRef.currentTracerEnabled)
  const disabledWhen = fiber.getFiberRef(HttpClient.currentTracerDisabledWhen)
  return [
    [HttpClient.currentTracerDisabledWhen, (request: HttpClientRequest.HttpClientRequest) => {
      onHop(request)
      return spans === "never" || !enabled || disabledWhen(request)
    }],
    // The transport skips the predicate when tracing is off: on, so it is always called.
    [FiberRef.currentTracerEnabled, true]
  ]
}

/**
 * Where one request that carries a bearer went: the URL of its first hop
 * (whose origin the bearer is for) and, when `fetch` followed redirects
 * itself, the URL it ended at.
 */
export interface Trip {
  first: string | undefined
  landed: string | undefined
}

// On every hop after the first: one to another origin loses the header, as
// `fetch` and curl do. The hops share one headers record, so it stays off.
const onBearerHop = (trip: Trip) => (hop: HttpClientRequest.HttpClientRequest): void => {
  if (trip.first === undefined) {
    trip.first = hop.url
  } else if (hop.url !== trip.first && originOf(hop.url) !== originOf(trip.first) && "authorization" in hop.headers) {
    delete (hop.headers as Record<string, string>)["authorization"]
  }
}

/**
 * `fetch` (the one given, else the global one at call time), noting in
 * `trip` where each call ended. `fetch` follows redirects inside one call and
 * the platform keeps the web `Response` private; its public `redirected` and
 * `url` are read here, where it passes through.
 */
const observeFetch =
  (inner: typeof globalThis.fetch | undefined, trip: Trip): typeof globalThis.fetch => (input, init) =>
    (inner ?? globalThis.fetch)(input, init).then((response) => {
      trip.landed = response.redirected && response.url !== "" ? response.url : undefined
      return response
    })

// Run as the last step of the client's request mapping, which a client runs
// inside the context it merges in (`FetchHttpClient.layer` merges the context
// it was built in, which is where a `Fetch` given to that layer lives): the
// `Fetch` read here is the one its transport would use. The context is set
// for the rest of the send; `guardBearer` puts the caller's back.
const observeFetchOf = (trip: Trip) => (request: HttpClientRequest.HttpClientRequest) =>
  Effect.as(
    FiberRef.update(FiberRef.currentContext, (context) =>
      Context.add(
        context,
        FetchHttpClient.Fetch,
        observeFetch(Option.getOrUndefined(Context.getOption(context, FetchHttpClient.Fetch)), trip)
      )),
    request
  )

/**
 * Sends `request`, which carries a bearer, through `client` so that the
 * bearer goes to its origin only, whatever the client does with redirects,
 * and records in `trip` where the answer came from (see
 * {@link answeredElsewhere}):
 *
 * - a client that follows redirects itself (`HttpClient.followRedirects()`)
 *   sends each hop through the transport: a hop to another origin than the
 *   first has its `Authorization` header removed before it leaves (seen
 *   through the tracer predicate, see {@link hopGuard}, with its limit);
 * - `fetch` follows them inside one call and drops the header itself (the
 *   Fetch standard); the send runs with a `FetchHttpClient.Fetch` that wraps
 *   the one the client would use, to see where it ended up. Not
 *   `redirect: "manual"`: in a browser that turns every redirect into an
 *   opaque response nobody can follow, and the caller's redirects would stop
 *   working; it would also replace a `RequestInit` given to the client's
 *   layer. Limit: a client that follows redirects itself on top of `fetch`
 *   maps its requests outside the context its `fetch` layer merges in, so a
 *   `Fetch` given only to that layer is replaced there by the global `fetch`.
 */
export const guardBearer = <E, R>(
  client: HttpClient.HttpClient.With<E, R>,
  request: HttpClientRequest.HttpClientRequest,
  trip: Trip
): Effect.Effect<HttpClientResponse.HttpClientResponse, E, R> =>
  locallyAll(HttpClient.mapRequestEffect(client, observeFetchOf(trip)).execute(request), (fiber) => [
    ...hopGuard(fiber, onBearerHop(trip), "as configured"),
    // Unchanged here: listed so that the one set for the send is put back.
    [FiberRef.currentContext, fiber.currentContext]
  ])

/**
 * Whether the answer to `sent` (sent under {@link guardBearer} with `trip`)
 * came from another origin than the one its bearer was for, after a
 * redirect: then its 401 says nothing about our token. `false` when either
 * origin is unknown (a relative URL the client resolves itself).
 */
export const answeredElsewhere = (
  trip: Trip,
  sent: HttpClientRequest.HttpClientRequest,
  response: HttpClientResponse.HttpClientResponse
): boolean => {
  const home = originOf(trip.first ?? sent.url)
  const from = originOf(trip.landed ?? response.request.url)
  return home !== undefined && from !== undefined && home !== from
}

const manualRedirects: globalThis.RequestInit = { redirect: "manual" }

/**
 * `context` with `fetch` told not to follow redirects (`FetchHttpClient`
 * reads its `RequestInit` from context on each request): a 3xx comes back as
 * it is (in a browser, as an opaque response of status 0). Other transports
 * do not follow redirects by themselves.
 */
const withoutFetchRedirects = (context: Context.Context<never>): Context.Context<never> => {
  const init = Context.getOption(context, FetchHttpClient.RequestInit)
  return Context.add(
    context,
    FetchHttpClient.RequestInit,
    Option.isSome(init) ? { ...init.value, redirect: "manual" } : manualRedirects
  )
}

/** Overwrites a request body's bytes, so a hop that must not get them sends blanks of the same length. */
export const blankBody = (request: HttpClientRequest.HttpClientRequest): void => {
  if (request.body._tag === "Uint8Array") request.body.body.fill(0x20)
}

/** `scheme://host:port` of a URL (relative to `base` when given), or `undefined` when it does not parse. */
export const originOf = (url: string, base?: string): string | undefined => {
  try {
    return new URL(url, base).origin
  } catch {
    return undefined
  }
}

/**
 * The `FiberRef` values under which a refresh (its POSTs and the reads of
 * the answers) sends the refresh token to `url` and nothing else, whatever
 * the client in context does with redirects:
 *
 * - `fetch` is told not to follow them (a 3xx comes back as it is);
 * - a client that follows them itself (`HttpClient.followRedirects()`) sends
 *   each hop through the transport: a hop to any other URL has its body
 *   blanked before it leaves, so it carries no token (the caller then refuses
 *   the answer, which came from elsewhere).
 *
 * No platform span, on any hop: its exit holds the raw request and response,
 * whose bodies hold the tokens, and a tracer that serialises exits would write
 * them out. `RefreshClient`'s own span carries the URL, attempts and outcome.
 * No trace headers either, even when a predicate of the user's (set on the
 * client with `HttpClient.withTracerDisabledWhen`) replaces ours and the
 * platform opens its span: a third-party auth server has no use for our trace
 * ids, and in a browser they would need its CORS to allow them.
 *
 * A fiber the HTTP stack forks and loses (a body cut mid-stream) is not
 * logged: its raw error holds the request, and the request the token. The
 * refresh's own error says what happened, without it.
 *
 * `context` is the fiber's context to run with, which gets fetch's
 * `RequestInit` (the caller may add to it, as `RefreshClient` adds its span).
 */
export const refreshGuard = (
  fiber: Fiber.RuntimeFiber<unknown, unknown>,
  url: string,
  context: Context.Context<never>
): readonly [Entry, Entry, Entry, Entry, Entry] => {
  const [predicate, tracer] = hopGuard(fiber, (hop) => {
    if (hop.url !== url) blankBody(hop)
  }, "never")
  return [
    predicate,
    tracer,
    [HttpClient.currentTracerPropagation, false],
    [FiberRef.currentContext, withoutFetchRedirects(context)],
    [FiberRef.unhandledErrorLogLevel, Option.none()]
  ]
}

/**
 * Small HTTP helpers shared by the endpoint code. Not public API.
 */
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as FetchHttpClient from "effect/http/FetchHttpClient"
import type * as Headers from "effect/http/Headers"
import * as HttpClient from "effect/http/HttpClient"
import * as HttpClientError from "effect/http/HttpClientError"
import type * as HttpClientRequest from "effect/http/HttpClientRequest"
import * as HttpClientResponse from "effect/http/HttpClientResponse"
import * as Option from "effect/Option"
import * as References from "effect/References"
import * as Result from "effect/Result"
import * as Stream from "effect/Stream"
import * as Tracer from "effect/Tracer"

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
 *
 * `HttpClientResponse` offers the body as `text` (no bound) or as an Effect
 * `Stream`. A response of `fetch` (`FetchHttpClient`, a browser) hands over
 * its web `Response` through the public `HttpClientResponse.toWeb`, whose
 * body is read with a plain reader loop, the cheapest bounded read there is;
 * `toWeb` also takes the response out of the registry that aborts the
 * request of a response dropped unread (we read or cancel the body
 * ourselves). Any other response (`NodeHttpClient`'s two clients, a test
 * double, a client of the user's) is counted through its public `stream`,
 * whatever length it declares.
 */
export const readBodyCapped = (
  response: HttpClientResponse.HttpClientResponse,
  limit: number = maxBodyBytes,
  // The platform builds a new record on each read of `response.headers`: a caller that has one passes it.
  headers: Headers.Headers = response.headers
): Effect.Effect<string, BodyTooLarge | HttpClientError.HttpClientError> => {
  const declared = Number(headers["content-length"] ?? Number.NaN)
  if (Number.isFinite(declared) && declared > limit) return Effect.fail(new BodyTooLarge(limit, response))
  const web = HttpClientResponse.toWeb(response)
  if (Option.isSome(web)) {
    const body = web.value.body
    return body === null ? Effect.succeed("") : readWeb(response, body, limit)
  }
  // Counted even under a small declared length: Node's stacks stop at it, but
  // a transport of the user's may not, and `text` would read any size.
  return readStream(response, limit)
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
  new HttpClientError.HttpClientError({
    reason: new HttpClientError.DecodeError({ request: response.request, response, cause })
  })

const ignore = () => {}

// One Effect around a reader loop instead of a Stream: the same bound at a
// fraction of the cost. Cancelling the body (past the limit, or on
// interruption) aborts the fetch and closes its connection.
const readWeb = (
  response: HttpClientResponse.HttpClientResponse,
  stream: ReadableStream<Uint8Array>,
  limit: number
): Effect.Effect<string, BodyTooLarge | HttpClientError.HttpClientError> =>
  Effect.callback((resume) => {
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
    })
  })

// Any other response: counted as it streams. Failing the stream ends it,
// which cancels the underlying read (and `HttpClient.make`'s wrapper aborts
// the request).
const readStream = (
  response: HttpClientResponse.HttpClientResponse,
  limit: number
): Effect.Effect<string, BodyTooLarge | HttpClientError.HttpClientError> =>
  Effect.suspend(() => {
    const chunks: Array<Uint8Array> = []
    let size = 0
    return response.stream.pipe(
      Stream.runForEachArray((batch): Effect.Effect<void, BodyTooLarge> => {
        for (const chunk of batch) {
          size += chunk.length
          if (size > limit) return Effect.fail(new BodyTooLarge(limit, response))
          chunks.push(chunk)
        }
        return Effect.void
      }),
      Effect.map(() => decode(chunks, size))
    )
  })

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
export const validateBaseUrl = (input: string): Result.Result<string, string> => {
  let url: URL
  try {
    url = new URL(input)
  } catch {
    return Result.fail(`is not a URL`)
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    return Result.fail(`must use https: (got ${url.protocol})`)
  }
  if (url.protocol === "http:" && !isLoopback(url.hostname)) {
    return Result.fail(`must use https: for a non-loopback host (http: is allowed only for localhost and 127.0.0.0/8)`)
  }
  if (url.username !== "" || url.password !== "") return Result.fail("must not contain credentials")
  if (url.search !== "" || url.hash !== "") return Result.fail("must not contain a query or fragment")
  return Result.succeed(url.href.replace(/\/+$/, ""))
}

/** Joins a validated base URL and a path, keeping any path prefix of the base. */
export const joinUrl = (base: string, path: string): string => `${base}/${path.replace(/^\/+/, "")}`

/** Checks the endpoint path: a plain path, no query or fragment (the token never goes in a URL anyway). */
export const validatePath = (path: string): Result.Result<string, string> => {
  if (!/^\/?[A-Za-z0-9\-._~!$&'()*+,;=:@%/]+$/.test(path)) {
    return Result.fail(`must be a plain URL path such as "/auth/refresh" (got ${JSON.stringify(path.slice(0, 100))})`)
  }
  return Result.succeed(path)
}

/**
 * Where one request that carries a bearer was first sent: the URL of its
 * first hop, as the client sends it (after the client's own request
 * mapping, which may resolve a relative URL), whose origin the bearer is for.
 */
export interface Trip {
  first: string | undefined
}

/**
 * Sends `request`, which carries a bearer, through `client`, noting in
 * `trip` the URL of its first hop (see {@link answeredElsewhere}). The
 * mapping is appended to the client's own, so it sees the request as the
 * client's transport gets it, once: a redirect hop does not pass through a
 * client's request mapping.
 *
 * Where the bearer goes after a redirect is the redirect follower's to
 * decide, and both of Effect's drop it on a hop to another origin: `fetch`
 * (`FetchHttpClient`, a browser; the Fetch standard) and
 * `HttpClient.followRedirects()` (which also drops `Cookie` and
 * `Proxy-Authorization` there). A follower of the user's own must do the
 * same: nothing here sees its hops.
 */
export const sendNoting = <E, R>(
  client: HttpClient.HttpClient.With<E, R>,
  request: HttpClientRequest.HttpClientRequest,
  trip: Trip
): Effect.Effect<HttpClientResponse.HttpClientResponse, E, R> =>
  HttpClient.mapRequest(client, (first) => {
    trip.first = first.url
    return first
  }).execute(request)

/**
 * Whether the answer to `sent` (sent with {@link sendNoting} and `trip`)
 * came from another origin than the one its bearer was for, after a
 * redirect: then its 401 says nothing about our token. The answer's
 * public `url` is where it came from: the URL `fetch` ended at, or the last
 * hop of `HttpClient.followRedirects()`. `false` when either origin is
 * unknown (a relative URL the client resolves itself).
 */
export const answeredElsewhere = (
  trip: Trip,
  sent: HttpClientRequest.HttpClientRequest,
  response: HttpClientResponse.HttpClientResponse
): boolean => {
  const home = originOf(trip.first ?? sent.url)
  const from = originOf(response.url === "" ? response.request.url : response.url)
  return home !== undefined && from !== undefined && home !== from
}

/**
 * Before the replay, the body of a 401 is read (so the connection can be
 * reused) up to this many bytes and for at most {@link drainTimeout}; past
 * either, it is abandoned, never waited for.
 */
export const maxDrainBytes = 64 * 1024

/** See {@link maxDrainBytes}. */
export const drainTimeout: Duration.Duration = Duration.seconds(1)

/**
 * Reads what is left of a 401 so the connection can be reused, within bounds:
 * a body that never ends must not hold the replay.
 */
export const drain = (response: HttpClientResponse.HttpClientResponse): Effect.Effect<void> =>
  readBodyCapped(response, maxDrainBytes).pipe(Effect.timeout(drainTimeout), Effect.ignore)

const manualRedirects: globalThis.RequestInit = { redirect: "manual" }

/**
 * How a refresh body travels. `"stream"`: an Effect `Stream` that yields the
 * token once. `"web"`: the same as a `ReadableStream` of the platform's own,
 * given to the transport as a raw body (what `fetch` takes, without the
 * plumbing `FetchHttpClient` puts around an Effect `Stream`; only a fetch
 * transport takes it: `NodeHttpClient` writes a raw body with `end()`).
 * `"bytes"`: a buffer the guard fills with the token on the first hop it
 * approves, blank otherwise.
 */
export type BodyKind = "stream" | "web" | "bytes"

// Node's stack (node:http, undici, and the fetch built on it; Bun and Deno
// have it too) sends a stream body over any HTTP version. A browser's fetch
// cannot: Chrome streams uploads over HTTP/2 only, Firefox and Safari not at all.
const nodeLike = typeof (globalThis as { process?: { versions?: { node?: unknown } } }).process?.versions?.node ===
  "string"

/**
 * The {@link BodyKind} of the refresh request. A reference so that tests on
 * Node can run the browser's kind; not public API. On Node, `"stream"` is
 * where a refresh client starts: once `fetch` has answered an attempt whose
 * hop the guard saw (see {@link OneShotBody.viaFetch}), it sends `"web"` bodies.
 */
export const RefreshBody = Context.Reference<BodyKind>("moon-refresh/internal/RefreshBody", {
  defaultValue: () => nodeLike ? "stream" : "bytes"
})

const blank = 0x20

/**
 * The body of one refresh attempt, which gives the refresh token to one hop
 * at most: a redirect or a retry that re-sends the request sends nothing.
 *
 * Why not a plain buffer guarded hop by hop: the only hook every hop passes
 * (`HttpClient.TracerDisabledWhen`) is consulted only while tracing is on and
 * propagation not disabled, and a client can turn either off, or put its own
 * predicate in place, inside its `execute`; and a transport that follows a
 * 307 or 308 itself (undici's redirect interceptor, a client of the user's)
 * re-sends the buffer it holds without any hook. So the token goes out once:
 *
 * - `"stream"`: the body yields the token on its first run and fails any
 *   other, which ends that request before a byte of the body. undici's
 *   redirect handler does not follow a request whose stream was read; fetch
 *   fails a 307 or 308 of a stream body instead of following it;
 * - `"bytes"` (a browser's fetch, which cannot stream an upload): blanks of
 *   the token's length, filled by the guard on the first hop it sees, and
 *   only when that hop goes to our URL with fetch told not to follow
 *   redirects. A hop the guard does not see carries blanks, and the answer
 *   to a body that carried no token is refused ({@link refusal}). The limit:
 *   a transport that follows a redirect itself, re-sending the buffer the
 *   guard filled, other than fetch (whose `redirect` the guard checks).
 *
 * Either way a later hop the guard sees is noted ({@link resent}), so its
 * answer (about a body without the token) is not taken for a verdict on it.
 */
const unseen =
  "the HTTP client sent the request without this library's guard seeing it (HttpClient.TracerDisabledWhen replaced, or tracing turned off, inside its execute); the next refresh sends it as an Effect stream"

/** The `"web"` bodies made, so that a test can tell one in a transport's hands; held weakly. */
const webStreams = new WeakSet<ReadableStream<Uint8Array>>()

/** Whether `body` is a `"web"` refresh body (for tests). */
export const isWebBody = (body: unknown): boolean =>
  typeof body === "object" && body !== null && webStreams.has(body as ReadableStream<Uint8Array>)

export class OneShotBody {
  readonly #token: Uint8Array
  /** What a `"bytes"` body sends: blanks until the guard approves the first hop. */
  readonly wire: Uint8Array
  #sent = false
  #seen = false
  #resent = false
  #refusal: string | undefined

  constructor(json: Uint8Array, readonly kind: BodyKind) {
    this.#token = json
    this.wire = kind === "bytes" ? new Uint8Array(json.length).fill(blank) : new Uint8Array(0)
  }

  get length(): number {
    return this.#token.length
  }

  /** The token was handed to a transport (once). */
  get sent(): boolean {
    return this.#sent
  }

  /** The request was sent again (a redirect followed, a retry inside the client): that send had no token. */
  get resent(): boolean {
    return this.#resent
  }

  /** Why the guard kept the token from the first hop, if it did. */
  get refusal(): string | undefined {
    return this.#refusal
  }

  /**
   * The `"stream"` body: the token on its first run, a failure on any other or
   * once refused. Made when asked for: most bodies on Node are `"web"` ones.
   */
  get stream(): Stream.Stream<Uint8Array, Error> {
    return Stream.suspend(() => {
      const withheld = this.take()
      return withheld === undefined ? Stream.succeed(this.#token) : Stream.fail(withheld)
    })
  }

  /**
   * The `"web"` body: a `ReadableStream` that yields the token on its first
   * read, or fails it when refused. Read only when the transport sends (no
   * read ahead: a high-water mark of 0), so after the guard has seen the hop.
   * It can be read once: a second send of the request fails on a stream
   * already read, before a byte of the body.
   */
  web(): ReadableStream<Uint8Array> {
    const stream = new ReadableStream<Uint8Array>({
      pull: (controller) => {
        // Only under the guard: it is what sees a second send of this one object (a
        // redirect followed, a retry), which fails on the stream already read without
        // saying so (see `viaFetch`).
        if (!this.#seen) this.#refusal ??= unseen
        const withheld = this.take()
        if (withheld !== undefined) return controller.error(withheld)
        controller.enqueue(this.#token)
        controller.close()
      }
    }, { highWaterMark: 0 })
    webStreams.add(stream)
    return stream
  }

  // The token for a stream's first run, or why not.
  private take(): Error | undefined {
    if (this.#refusal !== undefined) return new Error(`refresh body withheld: ${this.#refusal}`)
    if (this.#sent) {
      this.#resent = true
      return new Error("refresh body already sent: a second send is refused")
    }
    this.#sent = true
    return undefined
  }

  #answeredByFetch = false

  /**
   * The guard saw the first hop and the answer is a web `Response` (a
   * `fetch` transport's, by the public `HttpClientResponse.toWeb`): the next
   * attempt may send a `"web"` body. A second send of a `"web"` body fails
   * on the stream already read, before a byte of it and without a word the
   * library could tell from a network error; only the guard sees it, so the
   * `"web"` kind is for a client whose hops it sees.
   */
  get viaFetch(): boolean {
    return this.#seen && this.#answeredByFetch
  }

  /** Noted when the answer came from `fetch`. */
  answeredByFetch(): void {
    this.#answeredByFetch = true
  }

  /**
   * The guard's view of one hop: the first is checked (`check` says why it
   * must not have the token, if it must not); any later one gets blanks.
   */
  hop(check: () => string | undefined): void {
    if (this.#seen) {
      this.#resent = true
      this.wire.fill(blank)
      return
    }
    this.#seen = true
    this.#refusal = check()
    if (this.#refusal === undefined && this.kind === "bytes") {
      this.wire.set(this.#token)
      this.#sent = true
    }
  }

  /** Blanks every copy of the token this body holds: the attempt is over, nothing sends it any more. */
  wipe(): void {
    this.#token.fill(blank)
    this.wire.fill(blank)
  }
}

// Whether `fetch` would follow a redirect under the options in the current
// fiber's context: the guard runs in the fiber that runs the transport, just
// before it, so these are the options `FetchHttpClient` is about to read.
const fetchFollows = (): string | undefined => {
  const fiber = Fiber.getCurrent()
  const init = fiber === undefined ? undefined : Context.getOrUndefined(fiber.context, FetchHttpClient.RequestInit)
  const redirect = init?.redirect ?? "follow"
  return redirect === "manual" || redirect === "error"
    ? undefined
    : `the client's fetch options (FetchHttpClient.RequestInit) follow redirects (redirect: "${redirect}")`
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
 * The context under which a refresh (its POSTs and the reads of the answers)
 * sends the refresh token to `url` and nothing else, whatever the client in
 * context does with redirects: `context` (the attempt's) with these set.
 *
 * - `fetch` is told not to follow them (`FetchHttpClient` reads its
 *   `RequestInit` from context on each request): a 3xx comes back as it is
 *   (in a browser, as an opaque response of status 0). A `RequestInit` in
 *   `context` keeps its other options; one given only to
 *   `FetchHttpClient.layer` is replaced for the refresh (the caller's
 *   context wins over the layer's). A client that puts its own in place
 *   inside its `execute` is caught by the check below;
 * - each hop passes through the transport's wrapper (`HttpClient.make`),
 *   which asks `HttpClient.TracerDisabledWhen` whether to trace that
 *   request. Ours answers "no span" and shows the hop to `body`, which lets
 *   the first one have the token only when it goes to `url` and fetch would
 *   not follow a redirect of it, and no later one (see {@link OneShotBody}:
 *   a client that keeps this hook from running, or a transport that follows
 *   redirects itself, still cannot send the token twice). The wrapper asks
 *   only when tracing is on and propagation not disabled: both are set here,
 *   and as our predicate disables the span, that opens none.
 *
 * No platform span, on any hop: its exit holds the raw request and response,
 * whose bodies hold the tokens, and a tracer that serialises exits would write
 * them out. `RefreshClient`'s own span (`span`, the parent of anything the
 * attempt traces) carries the URL, attempts and outcome. No trace headers
 * either, even when a predicate of a client's replaces ours and the platform
 * opens its span: a third-party auth server has no use for our trace ids, and
 * in a browser they would need its CORS to allow them.
 *
 * An error the HTTP stack reports without a caller is not logged: its raw
 * error holds the request, and the request the token. The refresh's own
 * error says what happened, without it.
 */
export const refreshGuard = (
  context: Context.Context<never>,
  url: string,
  span: Tracer.AnySpan,
  body: OneShotBody
): Context.Context<never> => {
  const init = Context.getOrUndefined(context, FetchHttpClient.RequestInit)
  return context.pipe(
    Context.add(HttpClient.TracerDisabledWhen, (hop: HttpClientRequest.HttpClientRequest) => {
      body.hop(() => hop.url === url ? fetchFollows() : `its first hop went to ${originOf(hop.url) ?? "another URL"}`)
      return true
    }),
    Context.add(References.TracerEnabled, true),
    Context.add(Tracer.DisablePropagation, false),
    Context.add(HttpClient.TracerPropagationEnabled, false),
    Context.add(FetchHttpClient.RequestInit, init === undefined ? manualRedirects : { ...init, redirect: "manual" }),
    Context.add(References.UnhandledLogLevel, undefined),
    Context.add(Tracer.ParentSpan, span)
  )
}

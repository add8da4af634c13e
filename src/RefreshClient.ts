/**
 * Refreshes a Moon session: one `POST /auth/refresh` through the `HttpClient`
 * in context, decoded into a `Session`, retried by a `RefreshPolicy`, traced as
 * one span.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as HttpClient from "effect/http/HttpClient"
import type * as HttpClientError from "effect/http/HttpClientError"
import * as HttpClientResponse from "effect/http/HttpClientResponse"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Result from "effect/Result"
import type * as Tracer from "effect/Tracer"
import { retry, timeoutFail } from "./internal/attempt.js"
import {
  type BodyTooLarge,
  joinUrl,
  maxBodyBytes,
  type OneShotBody,
  readBodyCapped,
  RefreshBody,
  refreshGuard,
  validateBaseUrl,
  validatePath
} from "./internal/http.js"
import { capMessage } from "./internal/message.js"
import * as Metrics from "./internal/metrics.js"
import * as Moon from "./internal/moon.js"
import * as Options_ from "./internal/options.js"
import * as RefreshError from "./RefreshError.js"
import * as RefreshPolicy from "./RefreshPolicy.js"
import type * as Session from "./Session.js"

/**
 * The documented Moon API host.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultBaseUrl = "https://beta.usemoon.ai"

/**
 * @since 0.1.0
 * @category constants
 */
export const defaultTimeout: Duration.Duration = Duration.seconds(10)

/**
 * @since 0.1.0
 * @category models
 */
export interface Service {
  /**
   * Exchanges a refresh token for a new session. The old refresh token is
   * spent once the server answers: store the new session before using it.
   */
  readonly refresh: (
    refreshToken: Redacted.Redacted<string>
  ) => Effect.Effect<Session.Session, RefreshError.RefreshError>
}

/**
 * @since 0.1.0
 * @category tags
 */
export class RefreshClient extends Context.Service<RefreshClient, Service>()("moon-refresh/RefreshClient") {}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Default `https://beta.usemoon.ai`. `http:` is accepted for loopback hosts only. */
  readonly baseUrl?: string | undefined
  /** Default `/auth/refresh`. Appended to `baseUrl`, keeping any path prefix it has. */
  readonly path?: string | undefined
  /** Default `RefreshPolicy.defaultPolicy`. Only retryable errors are ever retried. */
  readonly policy?: RefreshPolicy.RefreshPolicy | undefined
  /** Per attempt, including reading the body. Default 10 seconds. */
  readonly timeout?: Duration.Input | undefined
}

interface Resolved {
  readonly url: string
  readonly timeout: Duration.Duration
  readonly policy: RefreshPolicy.RefreshPolicy
}

// The one validation of the options, shared by `make` (a refusal is a defect)
// and `layerConfig` and `layerFromEnv` (a refusal is a `ConfigError` naming the setting).
const resolve = (options: Options): Result.Result<Resolved, Options_.Invalid> =>
  Result.gen(function*() {
    const refused = (option: string) => (reason: string): Options_.Invalid => ({
      owner: "RefreshClient",
      option,
      reason
    })
    const baseUrl = yield* Result.mapError(validateBaseUrl(options.baseUrl ?? defaultBaseUrl), refused("baseUrl"))
    const timeout = yield* Options_.duration("RefreshClient", "timeout", options.timeout ?? defaultTimeout, "positive")
    const path = yield* Result.mapError(validatePath(options.path ?? Moon.defaultPath), refused("path"))
    return { url: joinUrl(baseUrl, path), timeout, policy: options.policy ?? RefreshPolicy.defaultPolicy }
  })

const outcome = (exit: Exit.Exit<unknown, RefreshError.RefreshError>): string =>
  Exit.match(exit, {
    onSuccess: () => "success",
    onFailure: (cause) =>
      Option.match(Cause.findErrorOption(cause), {
        onSome: (error) => error._tag,
        onNone: () => (Cause.hasInterruptsOnly(cause) ? "interrupted" : "defect")
      })
  })

// fetch reports "fetch failed" and hides the reason (ECONNREFUSED, a reset)
// one or two `cause`s down; that reason is what a reader of the error needs.
const rootCause = (error: unknown): string | undefined => {
  let current: unknown = error
  let found: string | undefined
  for (let depth = 0; depth < 4 && current instanceof globalThis.Error; depth++) {
    const code = (current as { code?: unknown }).code
    found = typeof code === "string" ? `${current.message} (${code})` : current.message
    current = current.cause
  }
  return found
}

// The HTTP stack's words, whatever they hold (a test interceptor's "no match
// for <request>" holds our body): scrubbed of the token before they are kept,
// and only the text is kept, never the error, whose request holds the token.
const describeTransport = (error: HttpClientError.HttpClientError, mask: Moon.Mask): RefreshError.TransportError => {
  const reason = error.reason
  // The reason's kind as Effect 3 named it ("Transport", "Decode"...), when nothing better is known.
  const kind = reason._tag.replace(/Error$/, "")
  const detail = Moon.scrub(rootCause(reason.cause) ?? reason.description ?? kind, mask)
  return new RefreshError.TransportError({
    reason: "Network",
    message: capMessage(
      isResponseError(reason) ? `connection lost while reading the response: ${detail}` : detail
    )
  })
}

// The kinds of `HttpClientError` that come with a response (its body failed to read).
const isResponseError = (reason: HttpClientError.HttpClientErrorReason): reason is HttpClientError.ResponseError =>
  reason._tag === "DecodeError" || reason._tag === "StatusCodeError" || reason._tag === "EmptyBodyError"

// Only interruptions (kept) and defects (scrubbed, see `Moon.scrubDefect`)
// reach here; a failure would have been recovered. Nothing of the cause
// that came in leaves: its defects may hold the request, or echo its body.
const scrubCause = (cause: Cause.Cause<unknown>, mask: Moon.Mask): Cause.Cause<never> =>
  Cause.fromReasons(
    cause.reasons.flatMap((reason): Array<Cause.Reason<never>> =>
      Cause.isInterruptReason(reason)
        ? [reason]
        : Cause.isDieReason(reason)
        ? [Cause.makeDieReason(Moon.scrubDefect(reason.defect, mask))]
        : []
    )
  )

// What an attempt failed with, as a `RefreshError`.
const recover = (
  error: HttpClientError.HttpClientError | BodyTooLarge | RefreshError.RefreshError,
  body: OneShotBody,
  mask: Moon.Mask
): Effect.Effect<never, RefreshError.RefreshError> => {
  // The client failed because the body withheld the token, or refused to be
  // sent twice: that, not the transport's words for it, is what happened.
  const unsent = error._tag === "HttpClientError" ? Moon.refuseUnsent(body, false) : undefined
  if (unsent !== undefined) return Effect.fail(unsent)
  switch (error._tag) {
    case "BodyTooLarge":
      return Moon.tooLarge(error.response, error)
    case "HttpClientError":
      // Encode and InvalidUrl cannot happen with a validated URL and a
      // string body; die without the request, whose body holds the token.
      return error.reason._tag === "EncodeError" || error.reason._tag === "InvalidUrlError"
        ? Effect.die(
          new Error(`RefreshClient: could not build the request (${error.reason._tag.replace(/Error$/, "")})`)
        )
        : Effect.fail(describeTransport(error, mask))
    default:
      return Effect.fail(error)
  }
}

// The answer to one attempt: refused (a redirect, an answer to a body that did not carry
// the token), or read within the cap and decoded.
const answerOf = (
  response: HttpClientResponse.HttpClientResponse,
  body: OneShotBody,
  url: string,
  mask: Moon.Mask
) => {
  // The platform builds a new record on each read of `headers`.
  const headers = response.headers
  const unsent = Moon.refuseUnsent(body, true)
  return Moon.refuseRedirect(response, url) ?? (unsent === undefined ? undefined : Effect.fail(unsent)) ??
    Effect.flatMap(
      // (`readBodyCapped` takes a web `Response`'s body the same way, right after.)
      Effect.suspend(() => {
        if (Option.isSome(HttpClientResponse.toWeb(response))) body.answeredByFetch()
        return readBodyCapped(response, maxBodyBytes, headers)
      }),
      (text) => {
        if (response.status >= 200 && response.status < 300) {
          const date = Date.parse(headers["date"] ?? "")
          return Moon.decodeSuccess(response.status, text, Number.isNaN(date) ? Option.none() : Option.some(date), mask)
        }
        return Moon.classifyFailure(response, text, mask)
      }
    )
}

// One handler for what an attempt ended with that is not yet a `RefreshError`
// (a frame less per attempt than one per kind).
const recoverCause = (
  cause: Cause.Cause<HttpClientError.HttpClientError | BodyTooLarge | RefreshError.RefreshError>,
  body: OneShotBody,
  mask: Moon.Mask
): Effect.Effect<never, RefreshError.RefreshError> => {
  const failure = Cause.findErrorOption(cause)
  if (Option.isSome(failure)) return recover(failure.value, body, mask)
  // A `"web"` body the client died on before sending it (`NodeHttpClient` writes a
  // raw body with `end()`): a client whose transport changed since an attempt that
  // fetch answered. Nothing was sent; the next attempt sends the Effect stream,
  // which every transport takes. What it died of is in the message.
  if (body.kind === "web" && !body.sent && !Cause.hasInterrupts(cause)) {
    return Effect.fail(
      new RefreshError.TransportError({
        reason: "Network",
        message: "the HTTP client failed before sending the refresh body as a ReadableStream " +
          `(${Moon.scrubDefect(Cause.squash(cause), mask).message}); nothing was sent, ` +
          "and the next attempt sends it as an Effect stream"
      })
    )
  }
  // A defect of the HTTP stack (an interceptor that throws "no match
  // for <request>") stays a defect, in words scrubbed of the token;
  // so does one beside an interruption, which stays one.
  return Effect.failCause(scrubCause(cause, mask))
}

/**
 * Builds the service from the `HttpClient` in context. Dies (a configuration
 * defect, at layer construction) when `baseUrl`, `path` or `timeout` is invalid.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<Service, never, HttpClient.HttpClient> =>
  Effect.flatMap(Options_.orDie(resolve(options)), build)

const build = ({ policy, timeout, url }: Resolved): Effect.Effect<Service, never, HttpClient.HttpClient> =>
  Effect.gen(function*() {
    const client = yield* HttpClient.HttpClient
    // The metrics go to the registry of the context the client was built in, and its durations
    // are on that context's clock, whichever fiber refreshes.
    const context = yield* Effect.context<never>()
    const clock = Context.get(context, Clock.Clock)

    // One POST, timed from sending it to the decoded session (or the error).
    const measured = <A>(post: Effect.Effect<A, RefreshError.RefreshError>) =>
      Effect.suspend(() => {
        const start = clock.currentTimeNanosUnsafe()
        return Effect.onExit(post, (exit) =>
          Effect.sync(() =>
            Metrics.attemptEnded(exit, Number(clock.currentTimeNanosUnsafe() - start) / 1e9, context)
          ))
      })

    // Whether the last attempt was answered by `fetch`, under the guard's eyes (see
    // `OneShotBody.viaFetch`): then the one-shot body is a `ReadableStream` of its own
    // (`"web"`), which `fetch` sends as it is, rather than an Effect `Stream` that
    // `FetchHttpClient` converts at a cost. Any other client keeps the Effect `Stream`.
    let viaFetch = false

    const attempt = (refreshToken: Redacted.Redacted<string>, span: Tracer.Span) =>
      Effect.withFiber((fiber) => {
        // A server that echoes the request must not put our token in an error message.
        const mask = Moon.maskToken(refreshToken)
        const preferred = fiber.getRef(RefreshBody)
        const body = Moon.body(refreshToken, preferred === "stream" && viaFetch ? "web" : preferred)
        return Effect.flatMap(
          client.execute(Moon.request(url, body)),
          (response) => answerOf(response, body, url, mask)
        ).pipe(
          // One handler for what is not yet a `RefreshError` (a frame less per attempt than one per kind).
          Effect.catchCause((cause) => recoverCause(cause, body, mask)),
          // Whatever still refers to the body (an error, a transport's
          // buffer) holds blanks from here on.
          Effect.ensuring(Effect.sync(() => {
            body.wipe()
            // Learnt from every attempt: one that did not go through fetch (another
            // transport, or stopped before it) goes back to the Effect `Stream`.
            if (body.kind !== "bytes") viaFetch = body.viaFetch
          })),
          timeoutFail({
            duration: timeout,
            onTimeout: () =>
              new RefreshError.TransportError({
                reason: "Timeout",
                message: `no complete response within ${Duration.format(timeout)}`
              }),
            // The attempt runs in a fiber of its own: the refresh's guard and
            // its span as parent (as `Effect.withParentSpan` sets it) are set
            // there, around the attempt alone.
            context: (context) => refreshGuard(context, url, span, body)
          })
        )
      })

    // `Effect.useSpan` captures no stack trace (one per refresh would cost more than the span itself).
    const spanOptions: Tracer.SpanOptionsNoTrace = {
      kind: "client",
      attributes: { "moon.refresh.url": url }
    }

    const refresh = (refreshToken: Redacted.Redacted<string>) =>
      Effect.useSpan("moon-refresh/refresh", spanOptions, (span) => {
        // Per run of the returned effect, not per call of `refresh`: an Effect can be run many times.
        let attempts = 0
        const run = Redacted.value(refreshToken).trim() === ""
          ? Effect.fail(new RefreshError.TokenRejectedError({ message: "refresh token is blank; no request was sent" }))
          : Effect.suspend(() => {
            attempts++
            return measured(attempt(refreshToken, span))
          }).pipe(
            Effect.tapError((error) =>
              Effect.logDebug("moon-refresh: refresh attempt failed").pipe(
                Effect.annotateLogs({ attempt: attempts, error: error._tag, message: error.message }),
                Effect.withParentSpan(span, { captureStackTrace: false })
              )
            ),
            retry({ schedule: policy, while: RefreshError.isRetryable })
          )
        return Effect.onExit(run, (exit) =>
          Effect.sync(() => {
            span.attribute("moon.refresh.attempts", attempts)
            span.attribute("moon.refresh.outcome", outcome(exit))
            Metrics.refreshEnded(exit, context)
          }))
      })

    return RefreshClient.of({ refresh })
  })

/**
 * @since 0.1.0
 * @category layers
 */
export const layer = (options?: Options): Layer.Layer<RefreshClient, never, HttpClient.HttpClient> =>
  Layer.effect(RefreshClient, make(options))

/**
 * {@link layer} with the options read from `Config`: one `Config` of them, or
 * a `Config` per option (`Config.succeed(policy)` for a policy). Nothing is
 * read that is not named: a `baseUrl` left out is `https://beta.usemoon.ai`
 * (for `MOON_BASE_URL`, see {@link layerFromEnv}). An invalid value is a
 * `Config.ConfigError` naming the option, where {@link layer} would die.
 *
 * @example
 * ```ts
 * import { Config, Layer } from "effect"
 * import { FetchHttpClient } from "effect/http"
 * import { RefreshClient } from "moon-refresh"
 *
 * const RefreshLive = RefreshClient.layerConfig({
 *   baseUrl: Config.String("MOON_BASE_URL").pipe(Config.withDefault(RefreshClient.defaultBaseUrl)),
 *   timeout: Config.Duration("MOON_REFRESH_TIMEOUT").pipe(Config.withDefault("10 seconds"))
 * }).pipe(Layer.provide(FetchHttpClient.layer))
 * ```
 *
 * @since 1.0.0
 * @category layers
 */
export function layerConfig(
  config: Config.Wrap<Options>
): Layer.Layer<RefreshClient, Config.ConfigError, HttpClient.HttpClient>
/**
 * Called without a `Config`: the base URL from `MOON_BASE_URL`, as 0.3's
 * `layerConfig()` read it.
 *
 * @deprecated Use {@link layerFromEnv}`()`, named for the variable it reads;
 * `layerConfig` reads only what its `Config` names. Kept for 0.3 code; goes in 2.0.
 *
 * @since 0.1.0
 * @category layers
 */
export function layerConfig(): Layer.Layer<RefreshClient, Config.ConfigError, HttpClient.HttpClient>
export function layerConfig(
  config?: Config.Wrap<Options>
): Layer.Layer<RefreshClient, Config.ConfigError, HttpClient.HttpClient> {
  return config === undefined
    ? layerFromEnv()
    : Layer.effect(RefreshClient, Effect.flatMap(Options_.fromConfig(config, resolve), build))
}

/**
 * The base URL from the environment variable `MOON_BASE_URL` (read through
 * the `ConfigProvider`), else `https://beta.usemoon.ai`; the other options as
 * {@link layer}'s. An invalid `MOON_BASE_URL` is a `Config.ConfigError`
 * naming it.
 *
 * @example
 * ```ts
 * import { Layer } from "effect"
 * import { FetchHttpClient } from "effect/http"
 * import { RefreshClient, RefreshPolicy } from "moon-refresh"
 *
 * // MOON_BASE_URL, when set, replaces https://beta.usemoon.ai.
 * const RefreshLive = RefreshClient.layerFromEnv({ policy: RefreshPolicy.none }).pipe(
 *   Layer.provide(FetchHttpClient.layer)
 * )
 * ```
 *
 * @since 1.0.0
 * @category layers
 */
export const layerFromEnv = (
  options: Omit<Options, "baseUrl"> = {}
): Layer.Layer<RefreshClient, Config.ConfigError, HttpClient.HttpClient> =>
  Layer.effect(
    RefreshClient,
    Effect.gen(function*() {
      const baseUrl = yield* Config.String(baseUrlVariable).pipe(Config.withDefault(defaultBaseUrl))
      return yield* Result.match(resolve({ ...options, baseUrl }), {
        // The error names the setting the value came from: the variable, or the option.
        onFailure: (invalid) =>
          Effect.fail(Options_.toConfigError(invalid.option === "baseUrl" ? baseUrlVariable : invalid.option)(invalid)),
        onSuccess: build
      })
    })
  )

const baseUrlVariable = "MOON_BASE_URL"

/**
 * The options of 0.3's `layerConfig`: a `Config` per setting, and a plain
 * policy.
 *
 * @deprecated `layerConfig` takes `Config.Wrap<Options>` (wrap a policy in
 * `Config.succeed`); {@link layerFromEnv} reads `MOON_BASE_URL`. Goes in 2.0.
 *
 * @since 0.1.0
 * @category models
 */
export interface ConfigOptions {
  /** Default: `MOON_BASE_URL`, else `https://beta.usemoon.ai`. */
  readonly baseUrl?: Config.Config<string> | undefined
  readonly path?: Config.Config<string> | undefined
  readonly timeout?: Config.Config<Duration.Duration> | undefined
  readonly policy?: RefreshPolicy.RefreshPolicy | undefined
}

/**
 * Refreshes with the `RefreshClient` in context. The token that was sent is
 * spent once the server answers: store the new session before using it.
 *
 * @example
 * ```ts
 * import { Config, Effect } from "effect"
 * import { FetchHttpClient } from "effect/http"
 * import { RefreshClient } from "moon-refresh"
 *
 * const program = Effect.gen(function*() {
 *   const token = yield* Config.Redacted("MOON_REFRESH_TOKEN")
 *   const session = yield* RefreshClient.refresh(token)
 *   yield* Effect.log(`signed in as ${session.user.id}`)
 * }).pipe(
 *   Effect.catchTags({
 *     TokenRejectedError: () => Effect.logWarning("the refresh token is dead: sign in again"),
 *     TransportError: (error) => Effect.logWarning(`network: ${error.message}`)
 *   }),
 *   Effect.provide(RefreshClient.layerFromEnv()),
 *   Effect.provide(FetchHttpClient.layer)
 * )
 * ```
 *
 * @since 0.1.0
 * @category accessors
 */
export const refresh = (
  refreshToken: Redacted.Redacted<string> | string
): Effect.Effect<Session.Session, RefreshError.RefreshError, RefreshClient> =>
  Effect.flatMap(
    RefreshClient,
    (client) => client.refresh(Redacted.isRedacted(refreshToken) ? refreshToken : Redacted.make(refreshToken))
  )

/**
 * Everything specific to Moon's `POST /auth/refresh`: the path, the request
 * body, how a 2xx body becomes a session and how a failure is classified.
 * `RefreshClient` only drives these; a port to another backend (or to
 * another HTTP module) changes this file and `http.ts`, nothing else.
 *
 * Not public API: the package's exports keep `internal/` private.
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as HttpBody from "effect/http/HttpBody"
import * as HttpClientRequest from "effect/http/HttpClientRequest"
import type * as HttpClientResponse from "effect/http/HttpClientResponse"
import * as Option from "effect/Option"
import * as Predicate from "effect/Predicate"
import * as Redacted from "effect/Redacted"
import * as Result from "effect/Result"
import * as RefreshError from "../RefreshError.js"
import type * as Session from "../Session.js"
import { type BodyKind, type BodyTooLarge, OneShotBody, originOf, parseRetryAfter } from "./http.js"
import { capMessage } from "./message.js"
import * as Wire from "./wire.js"

/**
 * Masks the secrets of the request in a text. Applied to a body before a
 * message is read from it and capped, so that not even a prefix of a token
 * survives in an error.
 */
export type Mask = (text: string) => string

/**
 * The ways a request can carry a token, each of which an echo of it may
 * show: as it is, inside a JSON string (our body), URL-encoded and
 * form-encoded. Longest first, so that no shorter form leaves a piece of a
 * longer one.
 */
const writtenForms = (secret: string): ReadonlyArray<string> =>
  [
    ...new Set([
      secret,
      JSON.stringify(secret).slice(1, -1),
      encodeURIComponent(secret),
      new URLSearchParams({ t: secret }).toString().slice(2)
    ])
  ].sort((a, b) => b.length - a.length)

/**
 * The {@link Mask} for one refresh token: every occurrence, in any of the
 * forms a request carries it in, becomes `<redacted>`. The forms are worked
 * out on first use (only a failure needs them).
 */
export const maskToken = (refreshToken: Redacted.Redacted<string>): Mask => {
  let forms: ReadonlyArray<string> | undefined
  return (text) => {
    forms ??= writtenForms(Redacted.value(refreshToken))
    return forms.reduce((masked, form) => masked.split(form).join("<redacted>"), text)
  }
}

// Supabase's messages and codes for a refresh token that can never work again.
const deadToken =
  /invalid refresh token|refresh[_ ]token[_ ]not[_ ]found|refresh[_ ]token[_ ]already[_ ]used|session[_ ]not[_ ]found|session[_ ]expired/i

const messageKeys = ["error_description", "message", "msg", "error"] as const
const codeKeys = ["error_code", "code", "error"] as const

interface ErrorBody {
  readonly message: string
  readonly codes: ReadonlyArray<string>
  /** The body was a JSON object (an API's error), not text or a page. */
  readonly json: boolean
}

const parseJson = (text: string): Option.Option<unknown> => {
  try {
    return Option.some(JSON.parse(text))
  } catch {
    return Option.none()
  }
}

const fromHtml = (html: string): string => {
  const title = /<title[^>]*>([\s\S]*?)<\/title>/i.exec(html)?.[1]?.trim()
  if (title) return title
  return html.replace(/<(script|style)[\s\S]*?<\/\1>/gi, " ").replace(/<[^>]*>/g, " ")
}

// Any value given to a token field, quoted or not, JSON or form-encoded: a
// truncated or prefixed session body must not put its tokens in a message.
// Snake, camel or kebab case, any letter case: `refresh_token`, `refreshToken`, `ID-TOKEN`.
const tokenField = /("?\b(?:access|refresh|id|provider(?:[_-]?refresh)?)[_-]?token"?\s*[:=]\s*"?)[^"\s,}&]+/gi

/**
 * `text` (a server's body, a message of the HTTP stack's) with our secrets
 * taken out: every form of the token `mask` knows, and any value given to a
 * token field. The one scrubber of text that comes from outside.
 */
export const scrub = (text: string, mask: Mask): string => mask(mask(text).replace(tokenField, "$1<redacted>"))

/**
 * A defect of the HTTP stack as an `Error` with its message and stack
 * scrubbed (see {@link scrub}) and no `cause`: the defect's own may print the
 * request, whose body holds the token.
 */
export const scrubDefect = (defect: unknown, mask: Mask): Error => {
  const scrubbed = new Error(scrub(defect instanceof Error ? defect.message : String(defect), mask))
  if (defect instanceof Error) {
    scrubbed.name = defect.name
    if (defect.stack !== undefined) scrubbed.stack = scrub(defect.stack, mask)
  }
  return scrubbed
}

/** Reads an error message from a JSON, plain-text or HTML body, with every secret masked. */
export const readErrorBody = (body: string, contentType: string | undefined, mask: Mask): ErrorBody => {
  // Applied to the message after JSON parsing, so an echo escaped in a way
  // of its own (`\u0041`) is caught once unescaped.
  const { codes, json, message } = readRawErrorBody(body, contentType)
  return { message: scrub(message, mask), codes, json }
}

const readRawErrorBody = (body: string, contentType: string | undefined): ErrorBody => {
  const json = parseJson(body)
  if (Option.isSome(json) && Predicate.isObject(json.value)) {
    const record = json.value
    const codes = codeKeys.flatMap((key) => (typeof record[key] === "string" ? [record[key] as string] : []))
    for (const key of messageKeys) {
      const value = record[key]
      if (typeof value === "string" && value.trim() !== "") return { message: value, codes, json: true }
      if (Predicate.isObject(value) && typeof value.message === "string") {
        return { message: value.message, codes, json: true }
      }
    }
    return { message: "", codes, json: true }
  }
  const looksHtml = /html/i.test(contentType ?? "") || /^\s*<(!doctype|html)/i.test(body)
  return { message: looksHtml ? fromHtml(body) : body, codes: [], json: false }
}

const isDeadToken = (error: ErrorBody): boolean =>
  deadToken.test(error.message) || error.codes.some((code) => deadToken.test(code))

/** The documented path of the refresh endpoint. */
export const defaultPath = "/auth/refresh"

const utf8 = new TextEncoder()

/**
 * The body of one attempt (see {@link OneShotBody}): the JSON text with the
 * token, as bytes of our own (a JSON text body would also keep the text,
 * token included, beside its bytes).
 */
export const body = (refreshToken: Redacted.Redacted<string>, kind: BodyKind): OneShotBody =>
  new OneShotBody(utf8.encode(JSON.stringify({ refresh_token: Redacted.value(refreshToken) })), kind)

/** Builds the request; the token goes in the body, never the URL. */
export const request = (url: string, body: OneShotBody): HttpClientRequest.HttpClientRequest =>
  HttpClientRequest.post(url).pipe(
    HttpClientRequest.acceptJson,
    body.kind === "stream"
      ? HttpClientRequest.bodyStream(body.stream, { contentType: "application/json", contentLength: body.length })
      : body.kind === "web"
      ? HttpClientRequest.setBody(HttpBody.raw(body.web(), { contentType: "application/json" }))
      : HttpClientRequest.bodyUint8Array(body.wire, "application/json")
  )

/**
 * Turns a 2xx body into a session. `serverDate` is the response's `Date`
 * header (epoch ms), used to correct the client's clock skew.
 */
export const decodeSuccess = (
  status: number,
  body: string,
  serverDate: Option.Option<number>,
  mask: Mask
): Effect.Effect<Session.Session, RefreshError.MalformedResponseError | RefreshError.TokenRejectedError> => {
  const json = parseJson(body)
  if (Option.isNone(json)) {
    return Effect.fail(new RefreshError.MalformedResponseError({ status, message: "response body is not JSON" }))
  }
  // One read of the clock and a synchronous decode: no Effect per step of a
  // decode that cannot suspend.
  return Effect.clockWith((clock) => {
    const now = clock.currentTimeMillisUnsafe()
    return Effect.fromResult(Result.mapError(
      Wire.decodeResult(json.value, now, skewMillis(serverDate, now)),
      (issue): RefreshError.MalformedResponseError | RefreshError.TokenRejectedError => {
        // A 2xx that carries a dead-token error is a verdict on the token, not a glitch.
        const error = readErrorBody(body, "application/json", mask)
        if (isDeadToken(error)) {
          return new RefreshError.TokenRejectedError({ status, message: capMessage(error.message) })
        }
        // Refused, but the server may have rotated: its new refresh token is kept.
        const rotated = Wire.salvageRefreshToken(json.value)
        return new RefreshError.MalformedResponseError({
          status,
          message: Wire.describeIssue(issue),
          ...(rotated === undefined ? {} : { rotatedRefreshToken: Redacted.make(rotated) })
        })
      }
    ))
  })
}

// A URL as the WHATWG parser writes it (fetch's `Response.url` is written so), or as it came.
const normalized = (url: string): string => {
  try {
    return new URL(url).href
  } catch {
    return url
  }
}

/**
 * Refuses an answer that is a redirect (a 3xx, or the opaque status 0 a
 * browser's `fetch` gives one), or that came from another URL than ours
 * because the client followed one: the token must never be sent anywhere
 * else, and another host's answer is not a session. Where the answer came
 * from is its `url` (where `fetch` ended up, even under options that follow
 * redirects; the last hop of `HttpClient.followRedirects()`), else the URL of
 * its request. Not retryable (a status below 500 never is); `undefined` for
 * any other answer.
 */
export const refuseRedirect = (
  response: HttpClientResponse.HttpClientResponse,
  url: string
): Effect.Effect<never, RefreshError.ServerError> | undefined => {
  const status = response.status
  const to = (location: string | undefined) => {
    const origin = location === undefined ? undefined : originOf(location, url)
    return origin === undefined ? "" : ` to ${origin}`
  }
  if ((status >= 300 && status < 400) || status === 0) {
    const what = status === 0 ? "an opaque redirect" : `${status}, a redirect${to(response.headers["location"])}`
    return Effect.fail(
      new RefreshError.ServerError({
        status,
        message: `the refresh endpoint answered ${what}; redirects are refused, the refresh token is only sent to ${
          originOf(url)
        }`
      })
    )
  }
  const from = response.url === "" ? response.request.url : response.url
  const requested = response.request.url
  // The same strings are the same URL: parsed only when they differ (four URL parses a refresh otherwise).
  if (from === url && requested === url) return undefined
  if (normalized(from) !== normalized(url) || normalized(requested) !== normalized(url)) {
    const elsewhere = normalized(from) !== normalized(url) ? from : requested
    return Effect.fail(
      new RefreshError.ServerError({
        status,
        message: `the answer came from ${
          originOf(elsewhere) ?? "another URL"
        } after a redirect, which is refused (the refresh token was not sent there)`
      })
    )
  }
  return undefined
}

/**
 * Refuses what the server answered, or the client failed with, when the
 * body it was about did not carry the token (see {@link OneShotBody}): the
 * guard kept the token back, the client sent the request again, or (a
 * `"bytes"` body) the guard never saw the request. Status 0: no status
 * applies, and retrying the same client would do the same. `undefined` when
 * the answer is about the token.
 */
export const refuseUnsent = (body: OneShotBody, answered: boolean): RefreshError.ServerError | undefined => {
  const why = body.refusal !== undefined
    ? `the refresh token was not sent: ${body.refusal}`
    : body.resent
    ? "the HTTP client sent the refresh request a second time (it followed a redirect, or retried on its own); refused: the refresh token goes once per attempt, to the first hop"
    : answered && body.kind === "bytes" && !body.sent
    ? "the refresh token was not sent: the HTTP client sent the request without this library's guard seeing it (HttpClient.TracerDisabledWhen replaced, or tracing turned off, inside its execute); refused, as a redirect could then carry the token elsewhere"
    : undefined
  return why === undefined ? undefined : new RefreshError.ServerError({ status: 0, message: why })
}

/** Turns any other answer into a typed error. */
export const classifyFailure = (
  response: HttpClientResponse.HttpClientResponse,
  body: string,
  mask: Mask
): Effect.Effect<never, RefreshError.RefreshError> =>
  Effect.flatMap(Clock.currentTimeMillis, (now) => Effect.fail(classify(response, body, now, mask)))

/**
 * A `Date` header has one-second resolution and arrives after some latency,
 * so differences under this are noise, not skew.
 */
const skewThresholdMillis = 5_000

/** How far the server's clock is ahead of ours (negative: behind), or 0 when within noise. */
const skewMillis = (serverDate: Option.Option<number>, now: number): number =>
  Option.match(serverDate, {
    onNone: () => 0,
    onSome: (date) => {
      const skew = date - now
      // Under the noise of a Date header, or so large that the header is more
      // likely broken than the clock: trust our own clock.
      return Math.abs(skew) < skewThresholdMillis || !plausible(date, now) ? 0 : skew
    }
  })

/** A Date header further than this from our clock is ignored. */
const maxSkewMillis = 366 * 24 * 60 * 60 * 1000

const plausible = (serverDate: number, now: number): boolean => Math.abs(serverDate - now) <= maxSkewMillis

/**
 * The answer's `Date` (epoch ms) when it has one that parses and is
 * plausible, else our `now`: the "now" a `Retry-After` date is measured
 * against. Both headers come from the server's clock, so their difference is
 * the wait it asked for, whatever ours says.
 */
const serverNow = (date: string | undefined, now: number): number => {
  const parsed = Date.parse(date ?? "")
  return !Number.isNaN(parsed) && plausible(parsed, now) ? parsed : now
}

const classify = (
  response: HttpClientResponse.HttpClientResponse,
  body: string,
  now: number,
  mask: Mask,
  fallback = `HTTP ${response.status}`
): RefreshError.RefreshError => {
  const status = response.status
  // The platform builds a new record on each read of `headers`.
  const headers = response.headers
  const error = readErrorBody(body, headers["content-type"], mask)
  const message = capMessage(error.message) || fallback
  // A 401 or 403 is a verdict on the token only when the auth server gave it
  // (its JSON error): an HTML page from a proxy or firewall is not proof of a
  // dead token, and signing the user out on it would be wrong. It is a
  // server error, retried by the policy.
  const fromAuthServer = status === 400 || error.json
  if (isDeadToken(error) || (fromAuthServer && (status === 400 || status === 401 || status === 403))) {
    return new RefreshError.TokenRejectedError({ status, message })
  }
  if (status === 408) return new RefreshError.TransportError({ reason: "Timeout", message })
  const retryAfter = parseRetryAfter(headers["retry-after"], serverNow(headers["date"], now))
  if (status === 429 || (status === 503 && Option.isSome(retryAfter))) {
    return new RefreshError.RateLimitedError({ status, retryAfter, message })
  }
  return new RefreshError.ServerError({ status, message })
}

/**
 * Classifies an answer whose body was refused for its size: a 2xx is
 * malformed; any other status is classified by its status and headers alone
 * (so a 429 keeps its `Retry-After`).
 */
export const tooLarge = (
  response: HttpClientResponse.HttpClientResponse,
  error: BodyTooLarge
): Effect.Effect<never, RefreshError.RefreshError> => {
  const status = response.status
  if (status >= 200 && status < 300) {
    return Effect.fail(
      new RefreshError.MalformedResponseError({ status, message: `response body is larger than ${error.limit} bytes` })
    )
  }
  return Effect.flatMap(
    Clock.currentTimeMillis,
    (now) =>
      Effect.fail(
        classify(response, "", now, (text) => text, `HTTP ${status} (body over ${error.limit} bytes, not read)`)
      )
  )
}

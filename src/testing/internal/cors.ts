/**
 * CORS for the `MockMoonServer`, so a page served from another port (another
 * origin) can call it from a browser. Off unless asked for; when on, only
 * the allowed origins get the headers, and only the request headers this
 * library's client sends are allowed, so a client that starts sending
 * another header fails in the browser here, as it would against a server
 * that allows exactly these.
 *
 * Not public API: the package's exports keep `internal/` private.
 */
import * as Result from "effect/Result"
import type * as Options_ from "../../internal/options.js"
import type { Exchange } from "./httpServer.js"
import { send } from "./httpServer.js"

/** Which origins may call: every one, or these. */
export type Policy = { readonly _tag: "Any" } | { readonly _tag: "Origins"; readonly origins: ReadonlySet<string> }

/**
 * What a page's requests carry: the token, JSON, and the trace context
 * Effect's `HttpClient` propagates (W3C `traceparent` and Zipkin `b3`).
 */
export const allowedHeaders = ["authorization", "content-type", "accept", "traceparent", "tracestate", "b3"]

/** What a page may read besides the CORS-safelisted headers: the clock and the back-off. */
const exposedHeaders = ["date", "retry-after", "www-authenticate"]

export const policy = (
  owner: string,
  input: true | { readonly origins: ReadonlyArray<string> } | undefined
): Result.Result<Policy | undefined, Options_.Invalid> => {
  if (input === undefined) return Result.succeed(undefined)
  if (input === true) return Result.succeed({ _tag: "Any" })
  const refused = input.origins.find((origin) => !isOrigin(origin))
  return refused === undefined
    ? Result.succeed({ _tag: "Origins", origins: new Set(input.origins) })
    : Result.fail({
      owner,
      option: "cors",
      reason: `lists ${JSON.stringify(refused)}, which is not an origin (scheme://host[:port], no path)`
    })
}

const isOrigin = (value: string): boolean => {
  try {
    return new URL(value).origin === value
  } catch {
    return false
  }
}

const allows = (policy: Policy, origin: string): boolean => policy._tag === "Any" || policy.origins.has(origin)

/** The headers every answer to `origin` carries, or none when it is not allowed. */
export const responseHeaders = (
  policy: Policy | undefined,
  origin: string | undefined
): Readonly<Record<string, string>> =>
  policy === undefined || origin === undefined || !allows(policy, origin) ? {} : {
    "access-control-allow-origin": origin,
    "access-control-expose-headers": exposedHeaders.join(", "),
    vary: "Origin"
  }

/**
 * Answers a preflight (`OPTIONS` with `Access-Control-Request-Method`):
 * 204 with the allowed methods and headers for an allowed origin, 403
 * without any CORS header for another. `false` when it is not a preflight.
 */
export const preflight = (policy: Policy | undefined, exchange: Exchange): boolean => {
  const { req, record } = exchange
  if (
    policy === undefined || record.method !== "OPTIONS" || req.headers["access-control-request-method"] === undefined
  ) {
    return false
  }
  req.resume()
  const origin = req.headers.origin
  if (origin === undefined || !allows(policy, origin)) {
    record.outcome = "cross-origin-refused"
    send(exchange, { status: 403, contentType: "text/plain", body: "origin not allowed" })
    return true
  }
  record.outcome = "preflight"
  send(exchange, {
    status: 204,
    contentType: "text/plain",
    body: "",
    headers: {
      "access-control-allow-methods": "GET, POST",
      "access-control-allow-headers": allowedHeaders.join(", "),
      "access-control-max-age": "600"
    }
  })
  return true
}

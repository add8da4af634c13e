/**
 * A scriptable `HttpClient` for unit tests: no network, no real time.
 *
 * Each request is answered by the next reply of a script (the last reply
 * repeats once the script is used up) and recorded, with the `TestClock` time
 * at which it was sent, so tests can assert on what was sent and when.
 */
import { Clock, Effect, Layer, Stream } from "effect"
import { HttpClient, HttpClientError, HttpClientResponse } from "effect/http"
import type { HttpClientRequest } from "effect/http"

/** What the double answers to one request. */
export type Reply =
  | {
    readonly _tag: "Respond"
    readonly status: number
    readonly body: string
    readonly headers: Readonly<Record<string, string>>
  }
  | { readonly _tag: "TransportFailure"; readonly description: string }
  | { readonly _tag: "Hang" }

/** Answers with `value` serialised as JSON. */
export const json = (status: number, value: unknown, headers: Record<string, string> = {}): Reply => ({
  _tag: "Respond",
  status,
  body: JSON.stringify(value),
  headers: { "content-type": "application/json", ...headers }
})

/** Answers with a body sent as it is (plain text unless `headers` says otherwise). */
export const text = (status: number, body: string, headers: Record<string, string> = {}): Reply => ({
  _tag: "Respond",
  status,
  body,
  headers: { "content-type": "text/plain; charset=utf-8", ...headers }
})

/** Answers with an HTML page, as a proxy in front of the service does. */
export const html = (status: number, page: string, headers: Record<string, string> = {}): Reply =>
  text(status, page, { "content-type": "text/html; charset=utf-8", ...headers })

/** Fails the request as a broken connection would (`HttpClientError`, reason `TransportError`). */
export const transportFailure = (description = "connection reset by peer"): Reply => ({
  _tag: "TransportFailure",
  description
})

/** Never answers: the request stays open until the caller interrupts it. */
export const hang: Reply = { _tag: "Hang" }

/** One request as the double received it. */
export interface RecordedRequest {
  readonly method: string
  readonly url: string
  /** Lower-cased header names, as `effect/http` stores them. */
  readonly headers: Readonly<Record<string, string>>
  /** The body decoded as UTF-8 text ("" when there is none). */
  readonly body: string
  /** The `TestClock` time, in milliseconds, at which the request was sent. */
  readonly sentAt: number
  /**
   * The signal the client handed over; it is aborted when the request is
   * interrupted. The platform may also abort it once a response has been read,
   * so it tells something only about a request that never answered.
   */
  readonly signal: AbortSignal
}

export interface TestHttpClient {
  readonly client: HttpClient.HttpClient
  readonly layer: Layer.Layer<HttpClient.HttpClient>
  /** Every request received so far, in order. */
  readonly requests: ReadonlyArray<RecordedRequest>
  /** The `sentAt` of every request, in order. */
  readonly sentAt: () => ReadonlyArray<number>
}

const utf8 = new TextDecoder()

// A transport reads the body as it sends it: a stream body (the refresh's, on
// Node) is run once here, and a failure of it fails the request as it would
// on the wire.
const bodyText = (
  request: HttpClientRequest.HttpClientRequest
): Effect.Effect<string, HttpClientError.HttpClientError> => {
  switch (request.body._tag) {
    case "Uint8Array":
      return Effect.succeed(utf8.decode(request.body.body))
    case "Raw":
      return Effect.succeed(typeof request.body.body === "string" ? request.body.body : String(request.body.body))
    case "Empty":
      return Effect.succeed("")
    case "Stream":
      return Stream.mkUint8Array(request.body.stream).pipe(
        Effect.map((bytes) => utf8.decode(bytes)),
        Effect.mapError((cause) =>
          new HttpClientError.HttpClientError({ reason: new HttpClientError.EncodeError({ request, cause }) })
        )
      )
    default:
      // FormData is not something this library sends.
      return Effect.succeed(`<${request.body._tag} body>`)
  }
}

/**
 * Builds a double that answers the `n`th request with `script[n]`, and every
 * request after the script's end with its last reply.
 */
export const make = (...script: ReadonlyArray<Reply>): TestHttpClient => {
  if (script.length === 0) throw new Error("TestHttpClient.make: give at least one reply")
  const requests: Array<RecordedRequest> = []
  const client = HttpClient.make((request, url, signal) =>
    Effect.flatMap(Effect.zip(Clock.currentTimeMillis, bodyText(request)), ([now, body]) => {
      requests.push({
        method: request.method,
        url: url.toString(),
        headers: { ...request.headers },
        body,
        sentAt: now,
        signal
      })
      const reply = script[Math.min(requests.length, script.length) - 1]!
      switch (reply._tag) {
        case "Respond":
          return Effect.succeed(
            HttpClientResponse.fromWeb(
              request,
              new Response(reply.body, { status: reply.status, headers: reply.headers })
            )
          )
        case "TransportFailure":
          return Effect.fail(
            new HttpClientError.HttpClientError({
              reason: new HttpClientError.TransportError({ request, description: reply.description })
            })
          )
        case "Hang":
          return Effect.never
      }
    })
  )
  return {
    client,
    layer: Layer.succeed(HttpClient.HttpClient, client),
    requests,
    sentAt: () => requests.map((request) => request.sentAt)
  }
}

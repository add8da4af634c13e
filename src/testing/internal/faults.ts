/**
 * How the `MockMoonServer` carries out a scripted {@link Fault} on one
 * request. A new fault is one more case in {@link apply}: it gets the
 * exchange, the normal answer (computing it rotates the token) and the
 * server's timers.
 *
 * Not public API: the package's exports keep `internal/` private.
 */
import type { Fault } from "../MockMoonServer.js"
import type { Exchange, Reply, Timers } from "./httpServer.js"
import { json, reset, send, writeHead } from "./httpServer.js"

/** What a fault may use besides the exchange. */
export interface FaultContext {
  /** The normal answer. Computing it is what rotates the token. */
  readonly answer: () => Reply
  readonly timers: Timers
}

export const apply = (fault: Fault, exchange: Exchange, context: FaultContext): void => {
  switch (fault._tag) {
    case "Status":
      return scripted(exchange, () => send(exchange, statusReply(fault)))
    case "Delay":
      return delay(fault.millis, exchange, context)
    case "Reset":
      return scripted(exchange, () => reset(exchange))
    case "ResetAfterRotate": {
      context.answer()
      return reset(exchange)
    }
    case "SlowBody": {
      const rest = sendHalf(exchange, context.answer())
      return context.timers.later(fault.millis, () => {
        if (!exchange.res.destroyed) exchange.res.end(rest)
      })
    }
    case "Truncated": {
      sendHalf(exchange, context.answer(), () => exchange.req.socket.destroy())
      return
    }
    case "RetryAfter": {
      const body = { error_code: "over_request_rate_limit", msg: "Request rate limit reached" }
      return scripted(exchange, () => send(exchange, json(fault.status, body, { "retry-after": String(fault.value) })))
    }
    case "Oversized":
      return scripted(exchange, () => oversized(fault.bytes, fault.chunked === true, exchange))
    case "WrongContentType":
      return send(exchange, { ...context.answer(), contentType: fault.contentType ?? "text/html; charset=utf-8" })
    case "Redirect":
      return scripted(exchange, () => send(exchange, redirect(fault.status, fault.location)))
    case "EndlessBody":
      return scripted(exchange, () => endless(fault.status, exchange))
    case "PatchedSession":
      return send(exchange, patched(context.answer(), fault.patch))
  }
}

// The answer with `patch` merged into its session (inside `token` when wrapped).
const patched = (reply: Reply, patch: Readonly<Record<string, unknown>>): Reply => {
  const body = JSON.parse(reply.body) as Record<string, unknown>
  const next = typeof body.token === "object" && body.token !== null
    ? { ...body, token: { ...body.token, ...patch } }
    : { ...body, ...patch }
  return { ...reply, body: JSON.stringify(next) }
}

const redirect = (status: number, location: string): Reply => ({
  status,
  contentType: "text/html; charset=utf-8",
  body: `<html><body>Moved: <a href="${location}">here</a></body></html>`,
  headers: { location }
})

// A head, one chunk, then nothing more until the client hangs up.
const endless = (status: number, exchange: Exchange): void => {
  writeHead(exchange, json(status, null))
  exchange.res.write(`{"error":"`)
}

/** Whether a fault applies to `GET /protected` (the others are for the refresh endpoint only). */
export const onProtected = (fault: Fault): boolean =>
  fault._tag === "Status" || fault._tag === "Redirect" || fault._tag === "EndlessBody" || fault._tag === "Delay"

// A fault that answers without looking at the token.
const scripted = (exchange: Exchange, respond: () => void): void => {
  exchange.record.outcome = "scripted"
  respond()
}

const statusReply = (fault: Extract<Fault, { readonly _tag: "Status" }>): Reply => {
  const { body, headers, status } = fault
  if (body === undefined) return { status, contentType: fault.contentType ?? "text/plain", body: "", headers }
  if (typeof body === "string") {
    const contentType = fault.contentType ?? (/^\s*</.test(body) ? "text/html; charset=utf-8" : "text/plain")
    return { status, contentType, body, headers }
  }
  return {
    status,
    contentType: fault.contentType ?? "application/json; charset=utf-8",
    body: JSON.stringify(body),
    headers
  }
}

// If the client hangs up during the wait, nothing is processed: the token is not spent.
const delay = (millis: number, exchange: Exchange, context: FaultContext): void => {
  const hungUp = () => {
    // Said at once, so a test can see the hang-up without waiting for the delay to end.
    exchange.record.outcome = "client-gone"
  }
  if (exchange.closed()) return hungUp()
  exchange.res.once("close", hungUp)
  context.timers.later(millis, () => {
    exchange.res.off("close", hungUp)
    if (!exchange.closed()) send(exchange, context.answer())
  })
}

// Sends the head (with the full `Content-Length`) and the first half of the body; returns the rest.
const sendHalf = (exchange: Exchange, reply: Reply, sent?: () => void): Buffer => {
  const bytes = Buffer.from(reply.body)
  const half = Math.floor(bytes.length / 2)
  writeHead(exchange, reply, bytes.length)
  // For `Truncated`, a FIN after the data (not an RST), so the client reads the half it was sent.
  exchange.res.write(bytes.subarray(0, half), sent)
  return bytes.subarray(half)
}

// A 200 JSON body of exactly `bytes` bytes that is not a session.
const oversized = (bytes: number, chunked: boolean, exchange: Exchange): void => {
  const { res } = exchange
  const size = Math.max(0, Math.floor(bytes))
  const prefix = size >= 14 ? `{"padding":"` : ""
  const suffix = size >= 14 ? `"}` : ""
  let remaining = size - prefix.length - suffix.length
  const block = Buffer.alloc(64 * 1024, "x")
  writeHead(exchange, json(200, null), chunked ? undefined : size)
  res.write(prefix)
  // Respect backpressure and stop once the client is gone: a client that
  // refuses a large body should not make the server buffer all of it.
  const pump = () => {
    while (remaining > 0) {
      if (res.destroyed) return
      const n = Math.min(block.length, remaining)
      remaining -= n
      if (!res.write(n === block.length ? block : block.subarray(0, n))) {
        res.once("drain", pump)
        return
      }
    }
    if (!res.destroyed) res.end(suffix)
  }
  pump()
}

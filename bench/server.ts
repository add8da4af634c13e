/**
 * A minimal Moon-compatible server for the benchmarks, run in a child process
 * so that its work does not share the client's event loop (and, on two cores,
 * runs on the other one). It speaks:
 *
 * - `POST /auth/refresh` with `{ "refresh_token": … }`: answers a Supabase
 *   session (bare shape, with `expires_in`, `expires_at`, `user`). Refresh
 *   tokens are single use, as Moon's are: a spent one is answered
 *   `400 refresh_token_already_used`, an unknown one `400 refresh_token_not_found`.
 * - `GET /protected` with `Authorization: Bearer …`: 200 for a live access
 *   token, 401 for a stale or unknown one.
 *
 * Every route also answers under a prefix naming how its body is framed:
 * none or `/cl` sends a `Content-Length`; `/chunked` sends the body chunked,
 * as `res.writeHead` + `res.end(body)` does and most frameworks do; `/gzip`
 * sends it gzipped with a `Content-Length`, as a CDN in front of an API does
 * (when the request accepts gzip; `node:http` does not ask for it, and gets
 * the `Content-Length` answer).
 *
 * The parent drives it over IPC (see `startServer` in `harness.ts`): mint a
 * session as if signed in, expire every access token, read and reset counters.
 */
import * as Http from "node:http"
import * as Zlib from "node:zlib"

export interface Minted {
  readonly accessToken: string
  readonly refreshToken: string
  /** Epoch ms. */
  readonly expiresAt: number
}

export interface Stats {
  readonly refreshPosts: number
  readonly refreshRejected: number
  readonly protectedOk: number
  readonly protectedUnauthorized: number
}

export type Command =
  | { readonly op: "mint"; readonly lifetimeSeconds: number }
  | { readonly op: "expireAccessTokens" }
  | { readonly op: "stats" }
  | { readonly op: "reset" }

// Real Supabase access tokens are JWTs of about 700 to 900 characters; the
// padding keeps the body the size a client really parses (about 1.9 KB).
const pad = "x".repeat(640)
let serial = 0
const token = (kind: string) => `${kind}.${++serial}.${Date.now().toString(36)}.${pad}`

const user = {
  id: "8d0e7a52-6f2a-4c1e-9a3b-4f5d6e7a8b9c",
  aud: "authenticated",
  role: "authenticated",
  email: "bench@example.com",
  email_confirmed_at: "2024-01-01T00:00:00.000000Z",
  phone: "",
  confirmed_at: "2024-01-01T00:00:00.000000Z",
  last_sign_in_at: "2024-06-01T00:00:00.000000Z",
  app_metadata: { provider: "email", providers: ["email"] },
  user_metadata: {},
  identities: [],
  created_at: "2024-01-01T00:00:00.000000Z",
  updated_at: "2024-06-01T00:00:00.000000Z"
}

/** Spent refresh tokens are kept (to tell reuse from an unknown token); live ones map to `true`. */
const refreshTokens = new Map<string, boolean>()
const accessTokens = new Map<string, number>()
let stats = { refreshPosts: 0, refreshRejected: 0, protectedOk: 0, protectedUnauthorized: 0 }

const mint = (lifetimeSeconds: number): Minted => {
  const accessToken = token("at")
  const refreshToken = token("rt")
  const expiresAt = Date.now() + lifetimeSeconds * 1000
  accessTokens.set(accessToken, expiresAt)
  refreshTokens.set(refreshToken, true)
  return { accessToken, refreshToken, expiresAt }
}

/** How a body is framed on the wire. */
export type Framing = "cl" | "chunked" | "gzip"

export const framings: ReadonlyArray<Framing> = ["cl", "chunked", "gzip"]

let framing: Framing = "cl"
let acceptsGzip = false

const send = (res: Http.ServerResponse, status: number, body: unknown) => {
  const text = JSON.stringify(body)
  if (framing === "chunked") {
    // Headers written first, then the body: Node frames it chunked.
    res.writeHead(status, { "content-type": "application/json" })
    res.end(text)
    return
  }
  if (framing === "gzip" && acceptsGzip) {
    const gzipped = Zlib.gzipSync(text)
    res.writeHead(status, {
      "content-type": "application/json",
      "content-encoding": "gzip",
      "content-length": gzipped.length
    })
    res.end(gzipped)
    return
  }
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) })
  res.end(text)
}

const rejectRefresh = (res: Http.ServerResponse, code: string, message: string) => {
  stats.refreshRejected++
  send(res, 400, { code: 400, error_code: code, msg: message })
}

const framed = /^\/(cl|chunked|gzip)(?=\/)/

const handle = (req: Http.IncomingMessage, res: Http.ServerResponse, body: string) => {
  const prefix = framed.exec(req.url ?? "")
  framing = prefix ? (prefix[1] as Framing) : "cl"
  acceptsGzip = /\bgzip\b/.test(String(req.headers["accept-encoding"] ?? ""))
  const url = prefix ? req.url!.slice(prefix[0].length) : req.url
  if (req.method === "POST" && url === "/auth/refresh") {
    stats.refreshPosts++
    let presented: unknown
    try {
      presented = (JSON.parse(body) as { refresh_token?: unknown }).refresh_token
    } catch {
      return send(res, 400, { code: 400, error_code: "bad_json", msg: "body is not JSON" })
    }
    const state = typeof presented === "string" ? refreshTokens.get(presented) : undefined
    if (state === undefined) return rejectRefresh(res, "refresh_token_not_found", "Invalid Refresh Token: Not Found")
    if (!state) return rejectRefresh(res, "refresh_token_already_used", "Invalid Refresh Token: Already Used")
    refreshTokens.set(presented as string, false)
    const next = mint(3600)
    return send(res, 200, {
      access_token: next.accessToken,
      token_type: "bearer",
      expires_in: 3600,
      expires_at: Math.floor(next.expiresAt / 1000),
      refresh_token: next.refreshToken,
      user
    })
  }
  if (req.method === "GET" && url === "/protected") {
    const auth = req.headers.authorization ?? ""
    const expiresAt = auth.startsWith("Bearer ") ? accessTokens.get(auth.slice(7)) : undefined
    if (expiresAt === undefined || expiresAt <= Date.now()) {
      stats.protectedUnauthorized++
      return send(res, 401, { code: 401, error_code: "bad_jwt", msg: "invalid JWT: token is expired" })
    }
    stats.protectedOk++
    return send(res, 200, { ok: true })
  }
  send(res, 404, { msg: "not found" })
}

const run = (command: Command): unknown => {
  switch (command.op) {
    case "mint":
      return mint(command.lifetimeSeconds)
    case "expireAccessTokens":
      accessTokens.clear()
      return null
    case "stats":
      return stats
    case "reset":
      stats = { refreshPosts: 0, refreshRejected: 0, protectedOk: 0, protectedUnauthorized: 0 }
      refreshTokens.clear()
      accessTokens.clear()
      return null
  }
}

if (process.send !== undefined) {
  const server = Http.createServer({ keepAliveTimeout: 30_000 }, (req, res) => {
    const chunks: Array<Buffer> = []
    req.on("data", (chunk: Buffer) => chunks.push(chunk))
    req.on("end", () => handle(req, res, Buffer.concat(chunks).toString("utf8")))
  })
  // The stampedes open thousands of connections at once: ask for the largest
  // accept queue the kernel allows (net.core.somaxconn caps it).
  server.listen({ host: "127.0.0.1", port: 0, backlog: 65535 }, () => {
    const address = server.address()
    process.send!({ ready: typeof address === "object" && address !== null ? address.port : 0 })
  })
  process.on("message", (message: { readonly id: number; readonly command: Command }) => {
    process.send!({ id: message.id, result: run(message.command) })
  })
  // Ends with the parent, whatever way the parent ends.
  process.on("disconnect", () => process.exit(0))
}

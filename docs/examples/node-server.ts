// docs/04-automatic-refresh.md, "From a server that is not written in Effect":
// a plain node:http server that keeps the session alive with a SessionManager,
// through a ManagedRuntime built once for the life of the server.
import { Cause, Config, DateTime, Effect, Exit, Layer, ManagedRuntime, Option } from "effect"
import { FetchHttpClient } from "effect/http"
import { RefreshClient, SessionManager } from "moon-refresh"
import { NodeSessionStore } from "moon-refresh/node"
import * as Http from "node:http"
import type { AddressInfo } from "node:net"

// [runtime]
// The layers, built once: one manager and one session file for every request,
// so the requests share one refresh per expiry.
const SessionLive = SessionManager.layer().pipe(
  Layer.provide(RefreshClient.layerFromEnv()),
  Layer.provide(NodeSessionStore.layer({ path: ".moon/session.json" })),
  Layer.provide(FetchHttpClient.layer)
)

export const runtime = ManagedRuntime.make(SessionLive)
// [/runtime]

// [handler]
// What a request needs, as an Effect: here the signed-in user and how long the
// access token is good for. A real handler would call Moon's API with
// `SessionManager.accessToken`, or through an AuthHttpClient in the same runtime.
const whoAmI = Effect.map(SessionManager.session, (session) => ({
  user: session.user.id,
  validUntil: DateTime.formatIso(session.expiresAt)
}))

const send = (res: Http.ServerResponse, status: number, body: unknown) =>
  res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body))

export const handler = (_req: Http.IncomingMessage, res: Http.ServerResponse): void => {
  // A client that hangs up interrupts its effect (a refresh it joined goes on for the others).
  const hungUp = new AbortController()
  res.once("close", () => hungUp.abort())
  void runtime.runPromiseExit(whoAmI, { signal: hungUp.signal }).then((exit) => {
    if (Exit.isSuccess(exit)) return send(res, 200, exit.value)
    if (Cause.hasInterruptsOnly(exit.cause)) return
    // The failures are typed: no session, or a token the server rejected, means
    // the user must sign in again; anything else (Moon unreachable, the store) is
    // worth a retry, and the manager keeps the session meanwhile.
    const error = Cause.findErrorOption(exit.cause)
    const signedOut = Option.exists(error, (e) => e._tag === "NoSessionError" || e._tag === "TokenRejectedError")
    return signedOut ? send(res, 401, { error: "sign in again" }) : send(res, 503, { error: "try again" })
  })
}
// [/handler]

// [lifecycle]
// Later runs start from the stored session; the first spends MOON_REFRESH_TOKEN.
const signIn = Effect.gen(function*() {
  if (Option.isNone(yield* SessionManager.current)) {
    yield* SessionManager.signInWithRefreshToken(yield* Config.Redacted("MOON_REFRESH_TOKEN"))
  }
})

export const serve = async (port: number): Promise<Http.Server> => {
  // Building the runtime's layers and signing in, before the first request: a
  // dead token or an unusable session file stops the start with its error.
  const started = await runtime.runPromiseExit(signIn)
  if (Exit.isFailure(started)) throw Cause.squash(started.cause)
  const server = Http.createServer(handler)
  await new Promise<void>((listening) => server.listen(port, "127.0.0.1", listening))
  return server
}

// Stop taking requests, let those in flight end, then release the layers: the
// manager's timers stop and the session file's watcher closes.
export const shutdown = async (server: Http.Server): Promise<void> => {
  await new Promise<void>((closed) => server.close(() => closed()))
  await runtime.dispose()
}
// [/lifecycle]

// Run as an example (`npx tsx docs/examples/node-server.ts`), it serves, asks
// itself once, and stops. A real server keeps serving until it is told to stop:
//   process.once("SIGTERM", () => void shutdown(server))
const main = async () => {
  try {
    const server = await serve(Number(process.env.PORT ?? 0))
    const { port } = server.address() as AddressInfo
    const answer = await fetch(`http://127.0.0.1:${port}/whoami`)
    console.log(`GET /whoami: ${answer.status} ${await answer.text()}`)
    await shutdown(server)
    if (answer.status !== 200) process.exitCode = 1
  } catch (error) {
    await runtime.dispose()
    // One line, as the other examples end: `TokenRejectedError: …` for a spent token.
    console.error(String(error))
    process.exitCode = 1
  }
}

void main()

/**
 * The soak's MockMoonServer, in a child process of its own, so that the soak's
 * heap numbers are the client's alone (the server keeps every token and
 * request it ever saw) and the server gets its own CPU.
 *
 * Driven over the IPC channel by soak/index.ts: one request per message
 * `{ id, op, ... }`, one answer `{ id, result }`. Tokens cross the channel in
 * clear: both ends are the soak.
 */
import { DateTime, Deferred, Duration, Effect, Redacted } from "effect"
import { MockMoonServer } from "moon-refresh/testing"

export type Request =
  | { readonly id: number; readonly op: "issueSession" }
  | { readonly id: number; readonly op: "script"; readonly fault: MockMoonServer.Fault }
  | { readonly id: number; readonly op: "stats" }
  | { readonly id: number; readonly op: "isLive"; readonly token: string }
  | { readonly id: number; readonly op: "close" }

export interface IssuedSession {
  readonly accessToken: string
  readonly refreshToken: string
  readonly expiresAtMillis: number
  readonly user: MockMoonServer.IssuedSession["user"]
}

const send = (message: unknown) => process.send!(message)

const program = Effect.gen(function*() {
  const accessTokenLifetime = Number(process.env.SOAK_TOKEN_LIFETIME ?? 2)
  const reuseWindow = Duration.millis(Number(process.env.SOAK_REUSE_WINDOW_MS ?? 10_000))
  const server = yield* MockMoonServer.make({ accessTokenLifetime, reuseWindow })
  const done = yield* Deferred.make<void>()

  const answer = (request: Request): Effect.Effect<unknown> => {
    switch (request.op) {
      case "issueSession":
        return Effect.map(server.issueSession(), (issued): IssuedSession => ({
          accessToken: Redacted.value(issued.accessToken),
          refreshToken: Redacted.value(issued.refreshToken),
          expiresAtMillis: DateTime.toEpochMillis(issued.expiresAt),
          user: issued.user
        }))
      case "script":
        return server.script(request.fault)
      case "stats":
        return server.stats
      case "isLive":
        return server.isLive(request.token)
      case "close":
        return Deferred.succeed(done, void 0)
    }
  }

  process.on("message", (request: Request) => {
    Effect.runPromise(answer(request)).then((result) => send({ id: request.id, result: result ?? null }))
  })
  process.once("disconnect", () => Effect.runSync(Deferred.succeed(done, void 0)))
  send({ ready: true, url: server.url })
  yield* Deferred.await(done)
})

Effect.runPromise(Effect.scoped(program)).then(() => process.exit(0))

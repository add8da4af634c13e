/**
 * `npm run mock-server [-- --port N]`: a Moon-compatible server on 127.0.0.1
 * to run the guides' examples against, without a Moon account.
 *
 * It prints its URL and a refresh token, then a new refresh token each time a
 * line is read from stdin (press Enter): a refresh token works once, and each
 * run of an example spends one. Ctrl-C stops it.
 */
import { Console, Effect, Redacted, Stream } from "effect"
import { MockMoonServer } from "moon-refresh/testing"
import * as Readline from "node:readline"
import { runMain } from "../docs/examples/run-main.js"

const portArgument = (argv: ReadonlyArray<string>): number => {
  const at = argv.indexOf("--port")
  if (at === -1) return 0
  const port = Number(argv[at + 1])
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`--port takes a port number from 0 to 65535, not ${JSON.stringify(argv[at + 1] ?? "")}`)
  }
  return port
}

const stdinLines = Stream.async<string>((emit) => {
  const lines = Readline.createInterface({ input: process.stdin })
  lines.on("line", (line) => emit.single(line))
  lines.on("close", () => emit.end())
  return Effect.sync(() => lines.close())
})

const main = Effect.gen(function*() {
  const port = yield* Effect.try({
    try: () => portArgument(process.argv.slice(2)),
    catch: (error) => error as Error
  })
  const server = yield* MockMoonServer.make({ port })
  // The mock's tokens are random strings that unlock nothing but this
  // server, so printing them is the point here.
  const issue = Effect.map(server.issueSession(), (session) => Redacted.value(session.refreshToken))

  yield* Console.log(`MockMoonServer listening on ${server.url} (access tokens live 1 hour)`)
  yield* Console.log("Run an example against it from another terminal:")
  yield* Console.log(`  export MOON_BASE_URL=${server.url}`)
  yield* Console.log(`  export MOON_REFRESH_TOKEN=${yield* issue}`)
  yield* Console.log("  npx tsx docs/examples/errors.ts")
  yield* Console.log("A refresh token works once: press Enter for a new one. Ctrl-C stops the server.")
  yield* stdinLines.pipe(
    Stream.runForEach(() => Effect.flatMap(issue, (token) => Console.log(`  export MOON_REFRESH_TOKEN=${token}`)))
  )
  // stdin closed (not a terminal): keep serving until interrupted.
  return yield* Effect.never
}).pipe(Effect.scoped)

runMain(main)

/**
 * `npm run demo:browser`: serves the example page on 127.0.0.1 with a
 * Moon-compatible server beside it, and prints the URL. Open it in several
 * tabs of one browser; Ctrl-C stops both servers.
 *
 * `LIFETIME` sets how many seconds access tokens live (default 10), `PORT`
 * the page's port (default: any free one).
 */
import { Console, Effect } from "effect"
import { runMain } from "../../docs/examples/run-main.js"
import { startDemo } from "./server.js"

const lifetime = Number(process.env.LIFETIME ?? 10)
const port = Number(process.env.PORT ?? 0)

const program = Effect.gen(function*() {
  const { moon, url } = yield* startDemo({ lifetime, port })
  yield* Console.log(`Moon-compatible server: ${moon.url} (access tokens live ${lifetime} s, CORS for the page)`)
  yield* Console.log(`Open in several tabs of one browser: ${url}`)
  yield* Console.log("Ctrl-C stops.")
  return yield* Effect.never
})

runMain(Effect.scoped(program))

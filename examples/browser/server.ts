/**
 * What the example page needs on 127.0.0.1: its files (the entry bundled by
 * esbuild, moon-refresh taken from src/), a stand-in for the app's sign-in,
 * and a Moon-compatible server (`MockMoonServer`) on another port that
 * allows the page's origin (CORS). The browser tests use the same pieces.
 */
import type { Scope } from "effect"
import { Effect, Schema } from "effect"
import * as esbuild from "esbuild"
import { Session } from "moon-refresh"
import { MockMoonServer } from "moon-refresh/testing"
import { readFileSync } from "node:fs"
import * as Http from "node:http"
import { fileURLToPath } from "node:url"

/** An answer of the page's server. */
export interface Asset {
  readonly type: string
  readonly body: string
}

/** Routes by `METHOD /path`. */
export type Routes = Readonly<Record<string, () => Asset | Promise<Asset>>>

/**
 * Bundles a page's entry for the browser. The tsconfig's `paths` resolve
 * `moon-refresh` and its subpaths to src/, so the page runs this checkout.
 */
export const bundle = (entry: string): Effect.Effect<string> =>
  Effect.promise(async () => {
    const result = await esbuild.build({
      entryPoints: [entry],
      bundle: true,
      write: false,
      format: "esm",
      platform: "browser",
      target: "es2022",
      tsconfig: fileURLToPath(new URL("../../tsconfig.json", import.meta.url)),
      logLevel: "silent"
    })
    return result.outputFiles[0]!.text
  })

/** A small static server on 127.0.0.1, closed with the scope. */
export const serve = (routes: Routes, port = 0): Effect.Effect<{ readonly url: string }, never, Scope.Scope> =>
  Effect.map(
    Effect.acquireRelease(
      Effect.callback<Http.Server>((resume) => {
        const server = Http.createServer((req, res) => {
          const route = routes[`${req.method} ${(req.url ?? "/").split("?")[0]}`]
          req.resume()
          if (route === undefined) {
            res.writeHead(404, { "content-type": "text/plain" }).end("not found")
            return
          }
          Promise.resolve(route()).then(
            (asset) => res.writeHead(200, { "content-type": asset.type, "cache-control": "no-store" }).end(asset.body),
            (error: unknown) => res.writeHead(500, { "content-type": "text/plain" }).end(String(error))
          )
        })
        server.once("error", (error) => resume(Effect.die(error)))
        server.listen(port, "127.0.0.1", () => resume(Effect.succeed(server)))
      }),
      (server) =>
        Effect.callback<void>((resume) => {
          server.close(() => resume(Effect.void))
          server.closeAllConnections()
        })
    ),
    (server) => {
      const address = server.address()
      return { url: `http://127.0.0.1:${typeof address === "object" && address !== null ? address.port : 0}` }
    }
  )

const here = (file: string) => fileURLToPath(new URL(file, import.meta.url))

const json = (value: unknown): Asset => ({ type: "application/json", body: JSON.stringify(value) })

/**
 * A new session issued by `moon`, as Moon's refresh endpoint would send it:
 * what the page's `/sign-in` answers, standing in for a real sign-in.
 */
export const signInRoute = (moon: MockMoonServer.Service) => (): Promise<Asset> =>
  Effect.runPromise(Effect.gen(function*() {
    const issued = yield* moon.issueSession({ user: { email: "ada@example.com" } })
    return json(yield* Schema.encodeEffect(Session.MoonResponse)(Session.unsafeMake(issued)))
  }))

export interface DemoOptions {
  /** Access tokens live this many seconds. */
  readonly lifetime: number
  /** The page's port; 0 for any free one. */
  readonly port?: number | undefined
}

/** The example page and its mock server, until the scope closes. */
export const startDemo = (
  options: DemoOptions
): Effect.Effect<{ readonly url: string; readonly moon: MockMoonServer.Service }, never, Scope.Scope> =>
  Effect.gen(function*() {
    const script = yield* bundle(here("./main.ts"))
    const html = readFileSync(here("./index.html"), "utf8")
    // The page's origin is known once it listens; the mock server must allow it.
    const mock: { server?: MockMoonServer.Service } = {}
    const page = yield* serve({
      "GET /": () => ({ type: "text/html; charset=utf-8", body: html }),
      "GET /main.js": () => ({ type: "text/javascript", body: script }),
      "GET /config.json": () => json({ moonUrl: mock.server!.url, lifetime: options.lifetime }),
      "POST /sign-in": () => signInRoute(mock.server!)()
    }, options.port)
    const moon = mock.server = yield* MockMoonServer.make({
      accessTokenLifetime: options.lifetime,
      cors: { origins: [page.url] }
    })
    return { url: `${page.url}/`, moon }
  })

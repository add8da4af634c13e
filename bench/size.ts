/**
 * 5. Size: each entry in `size/` bundled for the browser by esbuild, minified,
 * then gzipped. Our own share over a page is measured, not assumed: the page
 * and one refresh by RefreshClient bundled together, less the page alone. (A
 * bundle of the refresh alone less the page would undercount what a page
 * already holds that ours does not, and the other way round.)
 */
import * as esbuild from "esbuild"
import { fileURLToPath } from "node:url"
import { gzipSync } from "node:zlib"

export interface SizeRow {
  readonly bundle: string
  readonly entry: string
  readonly minifiedBytes: number
  readonly gzippedBytes: number
}

const entries = [
  { bundle: "moon-refresh: RefreshClient over FetchHttpClient", entry: "size/moon-refresh.ts" },
  { bundle: "effect/http: FetchHttpClient POST", entry: "size/effect-http.ts" },
  { bundle: "effect/http: POST + Schema decode", entry: "size/effect-http-schema.ts" },
  {
    bundle: "effect/http: POST + Schema decode, module imports",
    entry: "size/effect-http-schema-modules.ts"
  },
  { bundle: "moon-refresh: SessionManager + AuthHttpClient", entry: "size/session-manager.ts" },
  { bundle: "axios + axios-auth-refresh", entry: "size/axios.ts" },
  { bundle: "effect/http POST + readBodyCapped only", entry: "size/piece-read-body-capped.ts" },
  { bundle: "effect/http POST + Session decoding only", entry: "size/piece-session-schema.ts" },
  { bundle: "effect/http POST + retry with RefreshPolicy only", entry: "size/piece-retry-policy.ts" }
] as const

/** Pages that one refresh is measured on: each page's program and the refresh's, run in one bundle. */
export const pages = [
  { page: "effect/http POST", entry: "size/effect-http.ts" },
  { page: "effect/http POST + Schema", entry: "size/effect-http-schema.ts" },
  { page: "effect/http POST + Schema, module imports", entry: "size/effect-http-schema-modules.ts" }
] as const

const here = fileURLToPath(new URL(".", import.meta.url))

// Both programs imported by name: a bare `import "./x.js"` is dropped, as
// this package says it has no side effects.
const withRefresh = (page: string) => ({
  stdin: {
    contents: `import * as Effect from "effect/Effect"
import { program as page } from "./${page.replace(/\.ts$/, ".js")}"
import { program as ours } from "./size/moon-refresh.js"
Effect.runPromise(Effect.all([page, ours])).then(console.log, console.error)`,
    resolveDir: here,
    loader: "ts" as const
  }
})

/**
 * One entry bundled for the browser as in every row (esbuild, minified, ESM),
 * with its metafile; with `refresh`, the entry's program and one refresh in one bundle.
 */
const bundleOf = (entry: string, refresh = false) =>
  esbuild.build({
    ...(refresh ? withRefresh(entry) : { entryPoints: [fileURLToPath(new URL(`./${entry}`, import.meta.url))] }),
    bundle: true,
    minify: true,
    platform: "browser",
    format: "esm",
    target: "es2022",
    write: false,
    logLevel: "silent",
    metafile: true
  })

const sizeOf = async (entry: string, refresh = false) => {
  const code = (await bundleOf(entry, refresh)).outputFiles[0]!.contents
  return { minifiedBytes: code.byteLength, gzippedBytes: gzipSync(code, { level: 9 }).byteLength }
}

export const measureSizes = async (): Promise<Array<SizeRow>> => {
  const rows: Array<SizeRow> = []
  for (const { bundle, entry } of entries) {
    rows.push({ bundle, entry: `bench/${entry}`, ...await sizeOf(entry) })
  }
  return rows
}

export interface ShareRow {
  readonly page: string
  /** The page and one refresh in one bundle, gzipped. */
  readonly withRefreshGzippedBytes: number
  /** That less the page alone: what the library adds to it. */
  readonly shareGzippedBytes: number
  readonly shareMinifiedBytes: number
}

/** Our share over each of {@link pages}, from sizes of the pages measured by {@link measureSizes}. */
export const measureShares = async (sizes: ReadonlyArray<SizeRow>): Promise<Array<ShareRow>> => {
  const rows: Array<ShareRow> = []
  for (const { entry, page } of pages) {
    const alone = sizes.find((row) => row.entry === `bench/${entry}`)!
    const both = await sizeOf(entry, true)
    rows.push({
      page,
      withRefreshGzippedBytes: both.gzippedBytes,
      shareGzippedBytes: both.gzippedBytes - alone.gzippedBytes,
      shareMinifiedBytes: both.minifiedBytes - alone.minifiedBytes
    })
  }
  return rows
}

export interface AddedModule {
  readonly module: string
  /** Minified bytes it puts in the RefreshClient bundle beyond what the Schema page already has. */
  readonly addedBytes: number
}

const inputs = async (entry: string, refresh = false) => {
  const result = await bundleOf(entry, refresh)
  return Object.values(result.metafile.outputs)[0]!.inputs
}

/**
 * Where our share over the `Schema` page with module imports goes (the page
 * our share is largest over): the modules (ours and effect's) with more bytes
 * in that page with a refresh on it than in the page alone,
 * largest first (minified, from esbuild's metafile; gzip does not split by
 * module).
 */
export const largestAdditions = async (count: number): Promise<Array<AddedModule>> => {
  const ours = await inputs("size/effect-http-schema-modules.ts", true)
  const page = await inputs("size/effect-http-schema-modules.ts")
  return Object.entries(ours)
    .map(([module, input]) => ({
      module: module.replace(/^node_modules\//, ""),
      addedBytes: input.bytesInOutput - (page[module]?.bytesInOutput ?? 0)
    }))
    .filter((row) => row.addedBytes > 0)
    .sort((a, b) => b.addedBytes - a.addedBytes)
    .slice(0, count)
}

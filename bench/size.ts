/**
 * 5. Size: each entry in `size/` bundled for the browser by esbuild, minified,
 * then gzipped. Our own share is the difference to the same POST with effect
 * and its HTTP client (effect/http) alone.
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
  { bundle: "moon-refresh: SessionManager + AuthHttpClient", entry: "size/session-manager.ts" },
  { bundle: "axios + axios-auth-refresh", entry: "size/axios.ts" },
  { bundle: "effect/http POST + readBodyCapped only", entry: "size/piece-read-body-capped.ts" },
  { bundle: "effect/http POST + Session decoding only", entry: "size/piece-session-schema.ts" },
  { bundle: "effect/http POST + retry with RefreshPolicy only", entry: "size/piece-retry-policy.ts" }
] as const

/** One entry bundled for the browser as in every row (esbuild, minified, ESM), with its metafile. */
const bundleOf = (entry: string) =>
  esbuild.build({
    entryPoints: [fileURLToPath(new URL(`./${entry}`, import.meta.url))],
    bundle: true,
    minify: true,
    platform: "browser",
    format: "esm",
    target: "es2022",
    write: false,
    logLevel: "silent",
    metafile: true
  })

export const measureSizes = async (): Promise<Array<SizeRow>> => {
  const rows: Array<SizeRow> = []
  for (const { bundle, entry } of entries) {
    const result = await bundleOf(entry)
    const code = result.outputFiles[0]!.contents
    rows.push({
      bundle,
      entry: `bench/${entry}`,
      minifiedBytes: code.byteLength,
      gzippedBytes: gzipSync(code, { level: 9 }).byteLength
    })
  }
  return rows
}

export interface AddedModule {
  readonly module: string
  /** Minified bytes it puts in the RefreshClient bundle beyond what the Schema page already has. */
  readonly addedBytes: number
}

const inputs = async (entry: string) => {
  const result = await bundleOf(entry)
  return Object.values(result.metafile.outputs)[0]!.inputs
}

/**
 * Where our share over the `Schema` page goes: the modules (ours and
 * effect's) with more bytes in the RefreshClient bundle than in that page,
 * largest first (minified, from esbuild's metafile; gzip does not split by
 * module).
 */
export const largestAdditions = async (count: number): Promise<Array<AddedModule>> => {
  const ours = await inputs("size/moon-refresh.ts")
  const page = await inputs("size/effect-http-schema.ts")
  return Object.entries(ours)
    .map(([module, input]) => ({
      module: module.replace(/^node_modules\//, ""),
      addedBytes: input.bytesInOutput - (page[module]?.bytesInOutput ?? 0)
    }))
    .filter((row) => row.addedBytes > 0)
    .sort((a, b) => b.addedBytes - a.addedBytes)
    .slice(0, count)
}

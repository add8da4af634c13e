// `npm run build` (and `prepack`): ESM and CommonJS, each with its own
// declarations, into dist/.
import { spawnSync } from "node:child_process"
import { chmodSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { createRequire } from "node:module"
import { staleFields } from "./entries.mjs"

const root = new URL("..", import.meta.url)
const stale = staleFields(JSON.parse(readFileSync(new URL("package.json", root), "utf8")))
if (stale.length > 0) {
  console.error(`build: package.json's ${stale.join(", ")} differ from scripts/entries.mjs; run \`npm run exports\``)
  process.exit(1)
}

rmSync(new URL("dist", root), { recursive: true, force: true })
const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc")
for (const project of ["tsconfig.build.json", "tsconfig.cjs.json"]) {
  const { status } = spawnSync(process.execPath, [tsc, "-p", project], { cwd: root, stdio: "inherit" })
  if (status !== 0) {
    console.error(`build: tsc -p ${project} failed`)
    process.exit(1)
  }
}
// The package is "type": "module": without this marker Node (and TypeScript)
// would read dist/cjs/*.js (and *.d.ts) as ES modules.
writeFileSync(new URL("dist/cjs/package.json", root), JSON.stringify({ type: "commonjs" }) + "\n")
// package.json's `bin`: npm makes it executable when it installs the package;
// this does the same for a run from the repository (`./dist/esm/bin/…`).
const pkg = JSON.parse(readFileSync(new URL("package.json", root), "utf8"))
for (const path of Object.values(pkg.bin ?? {})) chmodSync(new URL(path, root), 0o755)

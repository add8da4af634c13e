// `npm run build` (and `prepack`): ESM, with its declarations, into dist/.
// (1.0 is ESM only, as Effect 4 is; 0.x also built CommonJS.)
import { spawnSync } from "node:child_process"
import { chmodSync, readFileSync, rmSync } from "node:fs"
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
for (const project of ["tsconfig.build.json"]) {
  const { status } = spawnSync(process.execPath, [tsc, "-p", project], { cwd: root, stdio: "inherit" })
  if (status !== 0) {
    console.error(`build: tsc -p ${project} failed`)
    process.exit(1)
  }
}
// package.json's `bin`: npm makes it executable when it installs the package;
// this does the same for a run from the repository (`./dist/esm/bin/…`).
const pkg = JSON.parse(readFileSync(new URL("package.json", root), "utf8"))
for (const path of Object.values(pkg.bin ?? {})) chmodSync(new URL(path, root), 0o755)

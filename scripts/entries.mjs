/**
 * The package's entry points: the one list to edit when adding one. Each line
 * maps a subpath of `moon-refresh` to a module under src/ (without ".ts"), or
 * to `null` to keep it private. A `*` in both stands for any path.
 *
 * `npm run exports` writes package.json's `exports`, `main` and `types` from
 * this list; `npm run build` stops while they differ,
 * and `npm run check:pack` imports every entry of the packed package.
 */
export const entries = {
  ".": "index",
  "./testing": "testing/index",
  "./node": "node/index",
  "./browser": "browser/index",
  "./redis": "redis/index",
  "./*": "*",
  "./internal/*": null,
  "./testing/internal/*": null,
  "./browser/internal/*": null,
  "./node/internal/*": null,
  "./redis/internal/*": null,
  // The moon-mock-server command (package.json \`bin\`): run, never imported.
  "./bin/*": null
}

// ESM only (Effect 4 is): one build in dist/, its declarations beside it.
const target = (module) => ({ types: `./dist/${module}.d.ts`, default: `./dist/${module}.js` })

/** The fields of package.json that follow from `entries`. */
export const packageFields = () => {
  const exports = { "./package.json": "./package.json" }
  for (const [subpath, module] of Object.entries(entries)) {
    exports[subpath] = module === null ? null : target(module)
  }
  const root = target(entries["."])
  // `main` and `types` for the tools that still read them; `exports` decides for Node and TypeScript.
  return { main: root.default, types: root.types, exports }
}

/** The fields of package.json that differ from `packageFields()`, and those it must no longer have. */
export const staleFields = (pkg) => {
  const fields = packageFields()
  const differing = Object.keys(fields).filter((name) => JSON.stringify(pkg[name]) !== JSON.stringify(fields[name]))
  return [...differing, ...retiredFields.filter((name) => name in pkg)]
}

/** Fields of the CommonJS build of 0.x, gone with it. */
export const retiredFields = ["module", "typesVersions"]

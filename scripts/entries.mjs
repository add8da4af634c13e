/**
 * The package's entry points: the one list to edit when adding one. Each line
 * maps a subpath of `moon-refresh` to a module under src/ (without ".ts"), or
 * to `null` to keep it private. A `*` in both stands for any path.
 *
 * `npm run exports` writes package.json's `exports`, `typesVersions`, `main`,
 * `module` and `types` from this list; `npm run build` stops while they differ,
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
  // The moon-mock-server command (package.json \`bin\`): run, never imported.
  "./bin/*": null
}

// ESM and CommonJS each get their own declarations: dist/cjs/package.json says
// "type": "commonjs", so TypeScript reads dist/cjs/*.d.ts as CommonJS types.
const target = (module) => ({
  import: { types: `./dist/esm/${module}.d.ts`, default: `./dist/esm/${module}.js` },
  require: { types: `./dist/cjs/${module}.d.ts`, default: `./dist/cjs/${module}.js` }
})

/** The fields of package.json that follow from `entries`. */
export const packageFields = () => {
  const exports = { "./package.json": "./package.json" }
  // moduleResolution "node10" ignores `exports`; `typesVersions` finds the
  // types of a subpath for it. The catch-all falls back to the path itself so
  // that `types` and package.json still resolve.
  const typesVersions = {}
  for (const [subpath, module] of Object.entries(entries)) {
    exports[subpath] = module === null ? null : target(module)
    if (module === null || subpath === ".") continue
    const key = subpath.slice(2)
    typesVersions[key] = key === "*" ? [target(module).require.types, "*"] : [target(module).require.types]
  }
  const root = target(entries["."])
  return {
    main: root.require.default,
    module: root.import.default,
    types: root.require.types,
    exports,
    typesVersions: { "*": typesVersions }
  }
}

/** The names of the fields of `pkg` (package.json, parsed) that differ from `packageFields()`. */
export const staleFields = (pkg) => {
  const fields = packageFields()
  return Object.keys(fields).filter((name) => JSON.stringify(pkg[name]) !== JSON.stringify(fields[name]))
}

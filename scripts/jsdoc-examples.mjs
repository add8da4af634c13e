// Writes every `@example` block of the library's JSDoc to .tmp/jsdoc-examples/,
// one module per block, so that `npm run check` type-checks them with the rest
// of the repository (tsconfig.json includes that folder). An example that no
// longer compiles fails the check, as the guides' examples do.
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { join, relative } from "node:path"

const root = new URL("..", import.meta.url).pathname
const out = join(root, ".tmp/jsdoc-examples")

const sources = (dir) =>
  readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory()
      ? sources(join(dir, entry.name))
      : entry.name.endsWith(".ts")
      ? [join(dir, entry.name)]
      : []
  )

rmSync(out, { recursive: true, force: true })
mkdirSync(out, { recursive: true })
let count = 0
for (const file of sources(join(root, "src"))) {
  const text = readFileSync(file, "utf8")
  // An @example tag followed by a fenced ts block, inside a JSDoc comment.
  const pattern = /@example\s*\n\s*\*\s*```ts\n([\s\S]*?)\n\s*\*\s*```/g
  for (const match of text.matchAll(pattern)) {
    const code = match[1].split("\n").map((line) => line.replace(/^\s*\* ?/, "")).join("\n")
    const line = text.slice(0, match.index).split("\n").length
    const name = `${relative(join(root, "src"), file).replace(/[/.]/g, "_")}_${line}.ts`
    // Top-level names are exported, so noUnusedLocals does not flag what an example only shows.
    const names = [...code.matchAll(/^(?:const|let|class|function) (\w+)/gm)].map((found) => found[1])
    writeFileSync(
      join(out, name),
      `// From ${relative(root, file)}:${line}\n${code}\nexport { ${names.join(", ")} }\n`
    )
    count++
  }
}
console.log(`jsdoc examples: ${count} written to ${relative(root, out)}`)

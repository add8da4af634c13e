// `npm run check` (and `node scripts/closures.mjs`): no function in src/ is
// longer than 120 lines, so that every rule can be read, and tested, on its
// own. Prints the longest few; exits 1 when one is over the limit.
import { readdirSync, readFileSync, statSync } from "node:fs"
import { join } from "node:path"
import ts from "typescript"

const limit = 120
const root = new URL("../src", import.meta.url).pathname
const files = []
const walk = (dir) => {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name)
    if (statSync(path).isDirectory()) walk(path)
    else if (path.endsWith(".ts")) files.push(path)
  }
}
walk(root)

const functions = []
for (const file of files) {
  const source = ts.createSourceFile(file, readFileSync(file, "utf8"), ts.ScriptTarget.Latest, true)
  const visit = (node) => {
    if (ts.isFunctionLike(node) && node.body !== undefined) {
      const first = source.getLineAndCharacterOfPosition(node.getStart()).line
      const last = source.getLineAndCharacterOfPosition(node.end).line
      functions.push({ lines: last - first + 1, where: `src${file.slice(root.length)}:${first + 1}` })
    }
    ts.forEachChild(node, visit)
  }
  visit(source)
}
functions.sort((a, b) => b.lines - a.lines)
const over = functions.filter((f) => f.lines > limit)
console.log(
  `closures: the longest of ${functions.length} functions in src/: ${
    functions.slice(0, 3).map((f) => `${f.where} (${f.lines} lines)`).join(", ")
  }`
)
if (over.length > 0) {
  console.error(`closures: over ${limit} lines: ${over.map((f) => `${f.where} (${f.lines})`).join(", ")}`)
  process.exit(1)
}

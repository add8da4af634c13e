// `npm run check`: fails when modules of src/ import each other in a cycle at
// run time. Type-only imports (`import type`) are left out: they are erased,
// and an internal module naming its public module's types is the shape Effect's
// own packages use. Relative imports only.
import * as Fs from "node:fs"
import * as Path from "node:path"

const root = Path.resolve("src")
const files = []
const walk = (dir) => {
  for (const entry of Fs.readdirSync(dir, { withFileTypes: true })) {
    const path = Path.join(dir, entry.name)
    if (entry.isDirectory()) walk(path)
    else if (entry.name.endsWith(".ts")) files.push(path)
  }
}
walk(root)

const importsOf = (file) => {
  const text = Fs.readFileSync(file, "utf8")
  const found = new Set()
  for (const match of text.matchAll(/(?:import|export)\s(?!type\s)[^'"]*?from\s+["'](\.{1,2}\/[^"']+)["']/g)) {
    const target = Path.resolve(Path.dirname(file), match[1].replace(/\.js$/, ".ts"))
    if (Fs.existsSync(target)) found.add(target)
  }
  return [...found]
}
const graph = new Map(files.map((file) => [file, importsOf(file)]))

// Tarjan's strongly connected components: every component of more than one module is a cycle.
let index = 0
const stack = []
const meta = new Map()
const cycles = []
const connect = (node) => {
  meta.set(node, { index, low: index, onStack: true })
  index++
  stack.push(node)
  for (const next of graph.get(node) ?? []) {
    if (!meta.has(next)) {
      connect(next)
      meta.get(node).low = Math.min(meta.get(node).low, meta.get(next).low)
    } else if (meta.get(next).onStack) {
      meta.get(node).low = Math.min(meta.get(node).low, meta.get(next).index)
    }
  }
  if (meta.get(node).low === meta.get(node).index) {
    const component = []
    let member
    do {
      member = stack.pop()
      meta.get(member).onStack = false
      component.push(member)
    } while (member !== node)
    if (component.length > 1) cycles.push(component.map((file) => Path.relative(process.cwd(), file)))
  }
}
for (const file of files) if (!meta.has(file)) connect(file)

if (cycles.length > 0) {
  console.error(`import cycles in src/ (${cycles.length}):`)
  for (const cycle of cycles) console.error(`  ${cycle.sort().join(" <-> ")}`)
  process.exit(1)
}
console.log(`import cycles: none among ${files.length} modules`)

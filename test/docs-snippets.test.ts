// The guides quote their examples: a ```ts block whose first line names a file
// (`// docs/examples/x.ts`) must appear in that file as it is, so that what a
// reader copies is what `npm run check` compiles and the tests run.
import { describe, expect, it } from "@effect/vitest"
import { readdirSync, readFileSync } from "node:fs"
import { join } from "node:path"

const root = new URL("..", import.meta.url).pathname
const guides = [
  "README.md",
  ...readdirSync(join(root, "docs")).filter((name) => name.endsWith(".md")).map((name) => `docs/${name}`)
]

// Whole-line comments (a guide may leave some out, and `// [use]` markers) and
// trailing spaces do not count; every line of code does, in order.
const normalize = (code: string) =>
  code.split("\n").filter((line) => !/^\s*\/\//.test(line)).map((line) => line.trimEnd()).join("\n").trim()

const quotes = (markdown: string) =>
  [...markdown.matchAll(/```ts\n\/\/ (\S+\.ts)[^\n]*\n([\s\S]*?)```/g)].map(([, file, code]) => ({
    file: file!,
    code: code!
  }))

describe("snippets in the guides", () => {
  for (const guide of guides) {
    const found = quotes(readFileSync(join(root, guide), "utf8"))
    for (const [i, { code, file }] of found.entries()) {
      it(`${guide}, snippet ${i + 1}, is in ${file} as quoted`, () => {
        const source = normalize(readFileSync(join(root, file), "utf8"))
        const lines = normalize(code).split("\n")
        // Every line of the snippet, in order and contiguous, in the example.
        expect(source).toContain(lines.join("\n"))
      })
    }
  }

  it("finds snippets to check", () => {
    const total = guides.reduce((n, guide) => n + quotes(readFileSync(join(root, guide), "utf8")).length, 0)
    expect(total).toBeGreaterThan(10)
  })
})

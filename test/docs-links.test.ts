// The guides ship in the package (package.json `files`), and are read there as
// well as in the repository: a relative link must lead to a file that exists
// and that the package holds. A link to the tests or the demo, which stay in
// the repository, goes to the repository's URL instead.
import { describe, expect, it } from "@effect/vitest"
import { existsSync, readdirSync, readFileSync } from "node:fs"
import { dirname, join, normalize, relative } from "node:path"

const root = new URL("..", import.meta.url).pathname
const shipped: ReadonlyArray<string> = JSON.parse(readFileSync(join(root, "package.json"), "utf8")).files
const guides = [
  "README.md",
  ...readdirSync(join(root, "docs")).filter((name) => name.endsWith(".md")).map((name) => `docs/${name}`)
]

// Markdown links `[text](target)`, outside code blocks, that are neither a URL nor an anchor.
const relativeLinks = (markdown: string) =>
  [...markdown.replace(/```[\s\S]*?```/g, "").matchAll(/\]\(([^)\s]+)\)/g)]
    .map(([, target]) => target!.split("#")[0]!)
    .filter((target) => target !== "" && !/^[a-z]+:/i.test(target))

const isShipped = (path: string) => shipped.some((entry) => path === entry || path.startsWith(`${entry}/`))

describe("links in the shipped guides", () => {
  for (const guide of guides) {
    it(`${guide}: every relative link leads to a file the package holds`, () => {
      const broken = relativeLinks(readFileSync(join(root, guide), "utf8"))
        .map((target) => normalize(relative(root, join(root, dirname(guide), target))))
        .filter((path) => !isShipped(path) || !existsSync(join(root, path)))
      expect(broken).toStrictEqual([])
    })
  }

  it("finds links to check, and would flag one to the tests", () => {
    expect(relativeLinks(readFileSync(join(root, "README.md"), "utf8")).length).toBeGreaterThan(10)
    expect(isShipped(normalize(relative(root, join(root, "docs", "../test/bad-input.test.ts"))))).toBe(false)
    expect(isShipped("docs/examples/testing.ts")).toBe(true)
  })
})

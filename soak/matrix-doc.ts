/**
 * Rewrites the fault matrix in docs/reliability.md from the table the tests
 * run (test/support/FaultMatrix.ts). `test/fault-matrix.test.ts` fails when
 * the doc and the table disagree.
 *
 *     npx tsx soak/matrix-doc.ts
 */
import { readFileSync, writeFileSync } from "node:fs"
import { withMatrix } from "../test/support/FaultMatrix.js"

const path = new URL("../docs/reliability.md", import.meta.url)
const before = readFileSync(path, "utf8")
const after = withMatrix(before)
if (after === before) {
  console.log("docs/reliability.md: the matrix is up to date")
} else {
  writeFileSync(path, after)
  console.log("docs/reliability.md: matrix rewritten")
}

// `npm run exports`: writes the entry points of scripts/entries.mjs into
// package.json, keeping every other field where it is.
import { readFileSync, writeFileSync } from "node:fs"
import { packageFields, retiredFields, staleFields } from "./entries.mjs"

const path = new URL("../package.json", import.meta.url)
const pkg = JSON.parse(readFileSync(path, "utf8"))
const stale = staleFields(pkg)
if (stale.length === 0) {
  console.log("package.json: entry points up to date")
} else {
  const fields = packageFields()
  const updated = {}
  for (const [name, value] of Object.entries(pkg)) {
    if (retiredFields.includes(name)) continue
    updated[name] = name in fields ? fields[name] : value
    // A field package.json lacks goes right after `exports`.
    if (name === "exports") {
      for (const missing of stale.filter((field) => !(field in pkg))) updated[missing] = fields[missing]
    }
  }
  writeFileSync(path, JSON.stringify(updated, null, 2) + "\n")
  console.log(`package.json: rewrote ${stale.join(", ")}`)
}

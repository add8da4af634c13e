// `npm run test:browser`: finds Chromium, then runs the browser tests
// (vitest.browser.config.ts) in it, headless. playwright-core brings no
// browser of its own: this uses CHROME_PATH, or the first of the usual
// install paths that exists, and says how to get one when none does.
import { spawnSync } from "node:child_process"
import { accessSync, constants } from "node:fs"

const candidates = [
  process.env.CHROME_PATH,
  "/usr/bin/chromium",
  "/usr/bin/chromium-browser",
  "/usr/bin/google-chrome",
  "/usr/bin/google-chrome-stable"
].filter((path) => path !== undefined && path !== "")

const executable = (path) => {
  try {
    accessSync(path, constants.X_OK)
    return true
  } catch {
    return false
  }
}

const found = candidates.find(executable)
if (found === undefined) {
  console.error(
    [
      "test:browser: no Chromium found. Looked at: " + candidates.join(", ") + ".",
      "Install one, then run npm run test:browser again:",
      "  Debian/Ubuntu:  sudo apt-get update && sudo apt-get install -y chromium",
      "  elsewhere:      install Chromium or Chrome and set CHROME_PATH=/path/to/the/executable"
    ].join("\n")
  )
  process.exit(1)
}
if (process.env.CHROME_PATH !== undefined && process.env.CHROME_PATH !== "" && found !== process.env.CHROME_PATH) {
  console.error(`test:browser: CHROME_PATH=${process.env.CHROME_PATH} is not an executable file`)
  process.exit(1)
}

console.log(`test:browser: Chromium at ${found}`)
const vitest = spawnSync(
  "npx",
  ["vitest", "run", "--config", "vitest.browser.config.ts", ...process.argv.slice(2)],
  { stdio: "inherit", env: { ...process.env, CHROME_PATH: found } }
)
process.exit(vitest.status ?? 1)

import { defineConfig } from "vitest/config"
import base from "./vitest.config.js"

// `npm run test:system`: real processes in real time (SIGSTOP, SIGKILL, the
// lock's timestamps moved under a holder). They count outcomes; `npm test`
// leaves them out.
export default defineConfig({
  resolve: base.resolve!,
  test: {
    include: ["test/system/**/*.test.ts"],
    fileParallelism: false,
    testTimeout: 180_000,
    hookTimeout: 30_000
  }
})

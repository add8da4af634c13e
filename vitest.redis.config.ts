import { defineConfig } from "vitest/config"
import base from "./vitest.config.js"

// `npm run test:redis`: the tests against a real redis-server, which the
// global setup starts from PATH (and `npm test` leaves out).
export default defineConfig({
  resolve: base.resolve!,
  test: {
    include: ["test/redis/**/*.test.ts"],
    globalSetup: ["test/redis/globalSetup.ts"],
    // Several tests start servers and Node processes: one file at a time.
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 30_000
  }
})

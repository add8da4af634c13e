import { defineConfig } from "vitest/config"
import base from "./vitest.config.js"

// `npm run test:system`: tests that run real processes in real time (and
// `npm test` leaves out). They count outcomes, never how fast they came.
export default defineConfig({
  resolve: base.resolve!,
  test: {
    include: ["test/system/**/*.test.ts"],
    // Each file starts processes of its own: one file at a time.
    fileParallelism: false,
    testTimeout: 120_000
  }
})

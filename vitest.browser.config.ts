import { defineConfig } from "vitest/config"
import base from "./vitest.config.js"

// `npm run test:browser` (scripts/test-browser.mjs): the tests that drive
// headless Chromium. Not part of `npm test`. Real time: tokens live seconds.
export default defineConfig({
  resolve: base.resolve!,
  test: {
    include: ["test/browser/**/*.browser.ts"],
    // Hang guards: a test that takes seconds on a quiet machine takes minutes on a busy one.
    testTimeout: 600_000,
    hookTimeout: 600_000,
    // One Chromium at a time on a 2-core machine; the timings mean something then.
    fileParallelism: false
  }
})

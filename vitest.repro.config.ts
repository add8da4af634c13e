import { defineConfig } from "vitest/config"
import base from "./vitest.config.js"

// Reproductions and diagnoses kept out of every suite (test/repro/README.md):
// `npx vitest run --config vitest.repro.config.ts [file]`.
export default defineConfig({
  resolve: base.resolve!,
  test: {
    include: ["test/repro/**/*.test.ts"],
    fileParallelism: false,
    testTimeout: 180_000
  }
})

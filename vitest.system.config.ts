import { defineConfig } from "vitest/config"
import base from "./vitest.config.js"

// `npm run test:system`: the whole stack in real time, with real processes
// (test/system/). Not part of `npm test`. These tests count outcomes (refresh
// POSTs, rotations, reuse rejections, sign-outs) once a number of rotations
// has happened; no assertion is "at least N in T seconds" or a wall-clock
// window, and every deadline is a hang guard.
export default defineConfig({
  resolve: base.resolve!,
  test: {
    include: ["test/system/**/*.test.ts"],
    // Several tests start Node processes and pace themselves on short token
    // lifetimes: one file at a time, so they do not load each other.
    fileParallelism: false,
    testTimeout: 180_000,
    hookTimeout: 60_000
  }
})

import { fileURLToPath } from "node:url"
import { configDefaults, defineConfig } from "vitest/config"

export default defineConfig({
  resolve: {
    // Tests import the package by its name, as users do, but from src/ (no build needed).
    alias: [
      { find: /^moon-refresh$/, replacement: fileURLToPath(new URL("./src/index.ts", import.meta.url)) },
      // A subpath whose module is a folder: listed before the one-file-per-subpath rule.
      {
        find: /^moon-refresh\/testing$/,
        replacement: fileURLToPath(new URL("./src/testing/index.ts", import.meta.url))
      },
      { find: /^moon-refresh\/node$/, replacement: fileURLToPath(new URL("./src/node/index.ts", import.meta.url)) },
      {
        find: /^moon-refresh\/browser$/,
        replacement: fileURLToPath(new URL("./src/browser/index.ts", import.meta.url))
      },
      { find: /^moon-refresh\/redis$/, replacement: fileURLToPath(new URL("./src/redis/index.ts", import.meta.url)) },
      { find: /^moon-refresh\/(.*)$/, replacement: fileURLToPath(new URL("./src/$1.ts", import.meta.url)) }
    ]
  },
  test: {
    include: ["test/**/*.test.ts"],
    exclude: [
      ...configDefaults.exclude,
      // They need a redis-server: `npm run test:redis` (vitest.redis.config.ts).
      "test/redis/**",
      // Real time and real processes: `npm run test:system` (vitest.system.config.ts).
      "test/system/**",
      // Diagnoses kept out of every suite (vitest.repro.config.ts).
      "test/repro/**"
    ],
    // Nothing here may depend on how fast the machine is: time is TestClock's,
    // and a real wait is a hang guard. So is this: a test that takes seconds on
    // a quiet machine takes minutes on one loaded many times over (the TestClock
    // waits on real event-loop turns), and only a hang may fail it.
    testTimeout: 600_000,
    hookTimeout: 600_000,
    // Two files at a time (vitest's default is one on a 2-core machine): most
    // files wait on timer turns and sockets more than they compute, and none
    // depends on having the machine to itself. (Vitest 5 has no `minWorkers`.)
    maxWorkers: 2
  }
})

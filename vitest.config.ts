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
    // They need a redis-server: `npm run test:redis` (vitest.redis.config.ts).
    // Real processes in real time: `npm run test:system` (vitest.system.config.ts).
    exclude: [...configDefaults.exclude, "test/redis/**", "test/system/**"],
    // Tests drive time with TestClock; a real-time test that needs more than this is a bug.
    testTimeout: 20_000
  }
})

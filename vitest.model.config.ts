// `npm run test:model`: the model checker's schedules, as many as MODEL_RUNS
// says (50,000 by the script); `npm run test:model:survey`: its survey
// (test/model/survey.model.ts), which counts and shrinks instead of stopping.
import { defineConfig } from "vitest/config"
import base from "./vitest.config.js"

export default defineConfig({
  ...base,
  test: {
    ...base.test,
    include: process.env.MODEL_SURVEY === undefined
      ? ["test/model/schedules-*.test.ts", "test/protocol.test.ts"]
      : ["test/model/survey.model.ts"],
    testTimeout: 3_600_000
  }
})

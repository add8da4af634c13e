/**
 * `npm run test:redis` starts one `redis-server` for all the Redis tests and
 * hands its URL to them (`inject("redisUrl")`). Tests that restart or freeze
 * a server start their own.
 */
import type { TestProject } from "vitest/node"
import { findRedisServer, installHint, startRedisServer } from "../support/RedisServer.js"

declare module "vitest" {
  export interface ProvidedContext {
    redisUrl: string
  }
}

export default async function setup(project: TestProject) {
  if (findRedisServer() === undefined) {
    console.error(`\nThe Redis tests need redis-server on PATH, and there is none: ${installHint}\n`)
    process.exit(1)
  }
  const server = await startRedisServer()
  project.provide("redisUrl", server.url)
  return () => server.stop()
}

/**
 * 2b. The join path alone: what each caller of a stampede after the first
 * costs, with no network in it. A refresh is held open (a `RefreshClient`
 * that waits on a gate), 9,999 more callers ask for the token, and the time
 * to start them all is compared with the floor: as many fibers forked,
 * each awaiting one `Deferred`. Each side runs in rounds of its own (the
 * other's fibers alive beside it would make the collector's work theirs).
 */
import { Deferred, Effect, Fiber, Layer } from "effect"
import { performance } from "node:perf_hooks"
import * as RefreshClient from "../src/RefreshClient.js"
import * as Session from "../src/Session.js"
import * as SessionManager from "../src/SessionManager.js"
import * as SessionStore from "../src/SessionStore.js"
import { median } from "./harness.js"

export interface JoinOptions {
  readonly callers: number
  readonly rounds: number
  readonly warmupRounds: number
}

export interface JoinRow {
  readonly flow: string
  /** Median over rounds: starting every caller (each forked, run to its wait). */
  readonly millis: number
  /** `millis` / the floor's. */
  readonly ratioToFloor: number
  readonly rounds: number
}

const expired = () =>
  Session.unsafeMake({ accessToken: "old", refreshToken: "r1", expiresAt: Date.now() - 1000, user: { id: "u" } })
const next = () =>
  Session.unsafeMake({ accessToken: "new", refreshToken: "r2", expiresAt: Date.now() + 3_600_000, user: { id: "u" } })

/** Forks `count` fibers of `effect` in a loop; the milliseconds it took; then lets them finish. */
const forkAll = <A, E>(count: number, effect: Effect.Effect<A, E>) => {
  const fibers: Array<Fiber.Fiber<A, E>> = []
  const start = performance.now()
  for (let i = 0; i < count; i++) fibers.push(Effect.runFork(effect))
  return { millis: performance.now() - start, fibers }
}

const floorRound = (callers: number) =>
  Effect.runPromise(Effect.gen(function*() {
    const gate = yield* Deferred.make<Session.Session>()
    const { fibers, millis } = forkAll(callers, Deferred.await(gate))
    yield* Deferred.succeed(gate, next())
    yield* Fiber.awaitAll(fibers)
    return millis
  }))

const managerRound = (callers: number) =>
  Effect.runPromise(Effect.gen(function*() {
    const gate = yield* Deferred.make<void>()
    const answer = next()
    const layer = SessionManager.layer({ autoRefresh: false }).pipe(
      Layer.provide(SessionStore.layerMemory(expired())),
      Layer.provide(
        Layer.succeed(RefreshClient.RefreshClient, { refresh: () => Effect.as(Deferred.await(gate), answer) })
      )
    )
    return yield* Effect.gen(function*() {
      const manager = yield* SessionManager.SessionManager
      // The first caller starts the refresh, which waits for the gate once it has the lock.
      const first = Effect.runFork(manager.accessToken)
      yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 0)))
      const { fibers, millis } = forkAll(callers - 1, manager.accessToken)
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.awaitAll([first, ...fibers])
      return millis
    }).pipe(Effect.provide(layer))
  }))

export const measureJoin = async (options: JoinOptions): Promise<Array<JoinRow>> => {
  for (let round = 0; round < options.warmupRounds; round++) {
    await floorRound(options.callers)
    await managerRound(options.callers)
  }
  const floor: Array<number> = []
  const manager: Array<number> = []
  for (let round = 0; round < options.rounds; round++) {
    floor.push(await floorRound(options.callers))
    manager.push(await managerRound(options.callers))
  }
  const floorMillis = median(floor)
  const managerMillis = median(manager)
  return [
    {
      flow: `floor: ${options.callers} fibers forked, each awaiting one Deferred`,
      millis: floorMillis,
      ratioToFloor: 1,
      rounds: floor.length
    },
    {
      flow: `SessionManager: ${options.callers - 1} callers of accessToken joining a refresh held open`,
      millis: managerMillis,
      ratioToFloor: managerMillis / floorMillis,
      rounds: manager.length
    }
  ]
}

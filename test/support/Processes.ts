/**
 * Real Node processes for the multi-process tests: each runs
 * `nodeStoreChild.ts` under tsx, reports JSON lines, takes JSON commands, and
 * is killed (SIGKILL) when the test's scope closes if it is still running.
 */
import { Deferred, Duration, Effect, Option, Queue, Result, Stream, SubscriptionRef } from "effect"
import type { Scope } from "effect"
import { spawn } from "node:child_process"
import * as Readline from "node:readline"
import { fileURLToPath } from "node:url"
import type { ChildCommand, ChildConfig, ChildMessage } from "./ChildProtocol.js"

const script = fileURLToPath(new URL("./nodeStoreChild.ts", import.meta.url))
const repo = fileURLToPath(new URL("../..", import.meta.url))

export interface Child {
  readonly pid: number
  /** Everything it reported so far, in order. */
  readonly messages: Effect.Effect<ReadonlyArray<ChildMessage>>
  /** The first message (reported already or to come) that `pick` accepts; fails after `within`. */
  readonly waitFor: <A>(
    pick: (message: ChildMessage) => A | undefined,
    within: Duration.Input
  ) => Effect.Effect<A, string>
  readonly send: (command: ChildCommand) => Effect.Effect<void>
  readonly kill: (signal: NodeJS.Signals) => Effect.Effect<void>
  /** Its exit code, or the signal that ended it. */
  readonly exited: Effect.Effect<number | NodeJS.Signals>
}

export const spawnChild = (mode: string, config: ChildConfig): Effect.Effect<Child, never, Scope.Scope> =>
  Effect.gen(function*() {
    const exited = yield* Deferred.make<number | NodeJS.Signals>()
    const incoming = yield* Queue.unbounded<ChildMessage>()
    const log = yield* SubscriptionRef.make<ReadonlyArray<ChildMessage>>([])
    const child = yield* Effect.acquireRelease(
      Effect.sync(() => {
        const child = spawn(process.execPath, ["--import", "tsx", script, mode, JSON.stringify(config)], {
          cwd: repo,
          stdio: ["pipe", "pipe", "inherit"]
        })
        Readline.createInterface({ input: child.stdout! }).on("line", (line) => {
          try {
            Queue.offerUnsafe(incoming, JSON.parse(line) as ChildMessage)
          } catch {
            // Not a report (a stray log line): shown, not parsed.
            process.stdout.write(`[child ${child.pid}] ${line}\n`)
          }
        })
        child.on("exit", (code, signal) => Deferred.doneUnsafe(exited, Effect.succeed(signal ?? code ?? 0)))
        return child
      }),
      (child) =>
        Effect.suspend(() =>
          child.exitCode === null && child.signalCode === null
            ? Effect.andThen(Effect.sync(() => child.kill("SIGKILL")), Deferred.await(exited))
            : Effect.void
        )
    )
    // One fiber moves reports into the log, so they stay in order.
    yield* Queue.take(incoming).pipe(
      Effect.flatMap((message) => SubscriptionRef.update(log, (all) => [...all, message])),
      Effect.forever,
      Effect.forkScoped
    )
    return {
      pid: child.pid!,
      messages: SubscriptionRef.get(log),
      waitFor: <A>(pick: (message: ChildMessage) => A | undefined, within: Duration.Input) =>
        SubscriptionRef.changes(log).pipe(
          Stream.map((all) =>
            Option.firstSomeOf(all.map((message) =>
              message.type === "error"
                // The child failed: no point waiting for anything else.
                ? Option.some(Result.fail(`child ${child.pid} (${mode}) failed: ${message.message}`))
                : Option.map(Option.fromNullishOr(pick(message)), Result.succeed)
            ))
          ),
          Stream.filterMap(Result.fromOption(() => undefined)),
          Stream.runHead,
          Effect.flatMap(Option.match({
            onNone: () => Effect.fail(`child ${child.pid} ended its reports`),
            onSome: Effect.fromResult
          })),
          Effect.timeoutOrElse({
            duration: within,
            orElse: () =>
              Effect.fail(
                `child ${child.pid} (${mode}) did not report it within ${
                  Duration.format(Duration.fromInputUnsafe(within))
                }`
              )
          })
        ),
      send: (command: ChildCommand) => Effect.sync(() => child.stdin!.write(`${JSON.stringify(command)}\n`)),
      kill: (signal: NodeJS.Signals) => Effect.sync(() => child.kill(signal)),
      exited: Deferred.await(exited)
    }
  })

/** Fails the test with a child's own report of a failure, if it made one. */
export const noChildError = (children: ReadonlyArray<Child>): Effect.Effect<void, string> =>
  Effect.forEach(children, (child) =>
    Effect.flatMap(child.messages, (messages) => {
      const error = messages.find((message) => message.type === "error")
      return error === undefined ? Effect.void : Effect.fail(`child ${child.pid}: ${error.message}`)
    }), { discard: true })

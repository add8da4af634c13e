/**
 * Starts `lockWorker.ts` processes and reads their shared log: see that
 * file. A worker still running when the test's scope closes is killed
 * (SIGCONT first, in case the test left it stopped).
 */
import { expect } from "@effect/vitest"
import { Deferred, Duration, Effect, Queue } from "effect"
import type { Scope } from "effect"
import { spawn } from "node:child_process"
import * as Fs from "node:fs"
import * as Readline from "node:readline"
import { fileURLToPath } from "node:url"
import type { LogLine, WorkerConfig } from "./lockWorker.js"

const script = fileURLToPath(new URL("./lockWorker.ts", import.meta.url))
const repo = fileURLToPath(new URL("../../..", import.meta.url))

export interface Report {
  readonly type: string
  readonly at: number
  readonly section?: number
  readonly message?: string
  readonly sections?: number
  readonly lockErrors?: ReadonlyArray<string>
}

export interface Worker {
  readonly pid: number
  /** Every report so far. */
  readonly reports: () => ReadonlyArray<Report>
  /** The first report from now on (or already made, when `past`) that `pick` accepts. */
  readonly next: (pick: (report: Report) => boolean, within: Duration.Input) => Effect.Effect<Report, string>
  readonly signal: (signal: NodeJS.Signals) => Effect.Effect<void>
  readonly exited: Effect.Effect<number | NodeJS.Signals>
}

export const startWorker = (config: WorkerConfig): Effect.Effect<Worker, never, Scope.Scope> =>
  Effect.gen(function*() {
    const exited = yield* Deferred.make<number | NodeJS.Signals>()
    const incoming = yield* Queue.unbounded<Report>()
    const all: Array<Report> = []
    const child = yield* Effect.acquireRelease(
      Effect.sync(() => {
        const child = spawn(process.execPath, ["--import", "tsx", script, JSON.stringify(config)], {
          cwd: repo,
          stdio: ["ignore", "pipe", "inherit"]
        })
        Readline.createInterface({ input: child.stdout! }).on("line", (line) => {
          try {
            const report = JSON.parse(line) as Report
            all.push(report)
            Queue.offerUnsafe(incoming, report)
          } catch {
            process.stdout.write(`[worker ${child.pid}] ${line}\n`)
          }
        })
        child.on("exit", (code, signal) => Deferred.doneUnsafe(exited, Effect.succeed(signal ?? code ?? 0)))
        return child
      }),
      (child) =>
        Effect.suspend(() => {
          if (child.exitCode !== null || child.signalCode !== null) return Effect.void
          child.kill("SIGCONT")
          child.kill("SIGKILL")
          return Deferred.await(exited)
        })
    )
    const next = (pick: (report: Report) => boolean, within: Duration.Input) =>
      Queue.take(incoming).pipe(
        Effect.flatMap((report) =>
          report.type === "error"
            ? Effect.fail(`worker ${child.pid} failed: ${report.message}`)
            : Effect.succeed(pick(report) ? report : undefined)
        ),
        Effect.repeat({ until: (found) => found !== undefined }),
        Effect.map((found) => found!),
        Effect.timeoutOrElse({
          duration: within,
          orElse: () =>
            Effect.fail(
              `worker ${child.pid} did not report it within ${Duration.format(Duration.fromInputUnsafe(within))}`
            )
        })
      )
    return {
      pid: child.pid!,
      reports: () => all,
      next,
      signal: (signal) => Effect.sync(() => void child.kill(signal)),
      exited: Deferred.await(exited)
    }
  })

/** The shared log, line by line, in the order the lines were appended. */
export const readLog = (path: string): ReadonlyArray<LogLine> =>
  Fs.readFileSync(path, "utf8").split("\n").filter((line) => line !== "").map((line) => JSON.parse(line) as LogLine)

/** One critical section as the log shows it: from its `in` to its last `act` (its own `in` if none). */
export interface Section {
  readonly pid: number
  readonly section: number
  readonly start: number
  readonly end: number
  readonly acts: number
}

export const sectionsOf = (log: ReadonlyArray<LogLine>): ReadonlyArray<Section> => {
  const sections = new Map<string, { pid: number; section: number; start: number; end: number; acts: number }>()
  log.forEach((line, at) => {
    const id = `${line.pid}/${line.section}`
    const found = sections.get(id)
    if (line.ev === "in") sections.set(id, { pid: line.pid, section: line.section, start: at, end: at, acts: 0 })
    else if (line.ev === "act" && found !== undefined) {
      found.end = at
      found.acts++
    }
  })
  return [...sections.values()].sort((a, b) => a.start - b.start)
}

/**
 * Pairs of critical sections of different workers that acted at once: one
 * began before the other's last act. 0 when the lock held.
 */
export const overlaps = (sections: ReadonlyArray<Section>): ReadonlyArray<string> => {
  const found: Array<string> = []
  sections.forEach((a, i) =>
    sections.slice(i + 1).forEach((b) => {
      if (b.pid !== a.pid && b.start < a.end) {
        found.push(`${a.pid}#${a.section} [${a.start}..${a.end}] and ${b.pid}#${b.section} [${b.start}..${b.end}]`)
      }
    })
  )
  return found
}

/** What {@link frozenHolder} saw. */
export interface FrozenOutcome {
  /** From the SIGSTOP to another worker's first `in`. */
  readonly takenOverMs: number
  /** From the SIGSTOP to the resumed victim's report that it lost the lock. */
  readonly resumedMs: number
  readonly lostMessage: string
  readonly sections: ReadonlyArray<Section>
  readonly overlapping: ReadonlyArray<string>
  /** Critical sections of the others that began after the victim learnt it had lost the lock. */
  readonly afterResume: number
  readonly lockErrors: ReadonlyArray<string>
}

/**
 * A victim in one long critical section, acting every 1.5 s, stopped
 * (SIGSTOP) right after an action while two others wait; resumed (SIGCONT)
 * two leases after another took over; then the others go on for a while.
 */
export const frozenHolder = (base: WorkerConfig): Effect.Effect<FrozenOutcome, string, Scope.Scope> =>
  Effect.gen(function*() {
    const startup = "60 seconds"
    const victim = yield* startWorker({ ...base, runMs: 1, actions: 1_000, actMs: 1_500 })
    yield* victim.next((r) => r.type === "act", startup)
    const others = yield* Effect.all([
      startWorker({ ...base, runMs: 20_000, actions: 3, actMs: 50 }),
      startWorker({ ...base, runMs: 20_000, actions: 3, actMs: 50 })
    ])
    yield* Effect.forEach(others, (worker) => worker.next((r) => r.type === "ready", startup))
    yield* victim.next((r) => r.type === "act", "10 seconds")
    yield* victim.signal("SIGSTOP")
    const stoppedAt = Date.now()
    const takenOver = yield* Effect.raceAll(
      others.map((worker) => worker.next((r) => r.type === "in" && r.at >= stoppedAt, "30 seconds"))
    )
    yield* Effect.sleep(base.leaseMs * 2)
    yield* victim.signal("SIGCONT")
    const lost = yield* victim.next((r) => r.type === "lost", "30 seconds")
    const done = yield* Effect.forEach(others, (worker) => worker.next((r) => r.type === "done", "60 seconds"))
    const lines = readLog(base.log)
    const sections = sectionsOf(lines)
    const resumed = lines.findIndex((line) => line.pid === victim.pid && line.ev === "lost")
    return {
      takenOverMs: takenOver.at - stoppedAt,
      resumedMs: lost.at - stoppedAt,
      lostMessage: lost.message ?? "",
      sections,
      overlapping: overlaps(sections),
      afterResume: sections.filter((s) => s.pid !== victim.pid && s.start > resumed && s.acts > 0).length,
      lockErrors: done.flatMap((d) => d.lockErrors ?? [])
    }
  })

/**
 * Prints what {@link frozenHolder} saw and checks it: no two workers acted at
 * once, the victim learnt it had lost the lock, and the others went on after
 * its release (it freed nothing of theirs) without a failure.
 */
export const expectFrozenHolderHarmless = (what: string, leaseMs: number, outcome: FrozenOutcome): void => {
  console.log(
    `${what} (lease ${leaseMs} ms): taken over ${outcome.takenOverMs} ms after SIGSTOP; ` +
      `resumed after ${outcome.resumedMs} ms and found it had lost the lock ("${outcome.lostMessage}"); ` +
      `${outcome.sections.length} critical sections, ${outcome.overlapping.length} overlapping`
  )
  expect(outcome.overlapping).toStrictEqual([])
  expect(outcome.lostMessage).toContain("no longer this holder's")
  expect(outcome.afterResume).toBeGreaterThan(0)
  expect(outcome.lockErrors).toStrictEqual([])
}

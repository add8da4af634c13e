/**
 * The `moon-mock-server` command: a `MockMoonServer` run by hand, to point a
 * program at without a Moon account. It prints its URL, a refresh token and
 * the URL of its counters, logs one line per request, and reads commands from
 * stdin (Enter: another refresh token).
 *
 * The arguments are parsed by a pure function and the program takes its
 * input and output as values, so the tests drive it without a process; the
 * bin (`src/bin/moon-mock-server.ts`) only hands it `process.argv` and stdio.
 *
 * Not public API: the package's exports keep `internal/` private.
 */
import * as Cause from "effect/Cause"
import * as Console from "effect/Console"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Logger from "effect/Logger"
import type * as LogLevel from "effect/LogLevel"
import * as Queue from "effect/Queue"
import * as Redacted from "effect/Redacted"
import * as References from "effect/References"
import * as Result from "effect/Result"
import * as Stream from "effect/Stream"
import * as Readline from "node:readline"
import { parseArgs } from "node:util"
import * as Options_ from "../../internal/options.js"
import * as MockMoonServer from "../MockMoonServer.js"
import * as Cors from "./cors.js"
import * as TokenFamily from "./tokenFamily.js"

const command = "moon-mock-server"

/** What the command line asks for. */
export interface Invocation {
  readonly server: MockMoonServer.Options
  readonly faults: ReadonlyArray<MockMoonServer.Fault>
  readonly help: boolean
}

const { Fault } = MockMoonServer

const faultSpecs: ReadonlyArray<readonly [string, string, (args: ReadonlyArray<number>) => MockMoonServer.Fault]> = [
  ["status:CODE", "answer CODE without looking at the token", ([status]) => Fault.Status({ status: status! })],
  ["delay:MS", "answer normally after MS milliseconds", ([millis]) => Fault.Delay({ millis: millis! })],
  ["reset", "drop the connection without answering", () => Fault.Reset()],
  ["reset-after-rotate", "rotate, then drop the connection: the answer is lost", () => Fault.ResetAfterRotate()],
  [
    "slow-body:MS",
    "rotate, send half the body, the rest MS milliseconds later",
    ([millis]) => Fault.SlowBody({ millis: millis! })
  ],
  ["truncated", "rotate, send half the body, close", () => Fault.Truncated()],
  [
    "retry-after:CODE:S",
    "answer CODE (429, 503) with Retry-After: S",
    ([status, value]) => Fault.RetryAfter({ status: status!, value: value! })
  ],
  ["wrong-content-type", "the normal answer as text/html", () => Fault.WrongContentType({})]
]

const faultHelp = faultSpecs.map(([spec, what]) => `                             ${spec.padEnd(20)} ${what}`).join("\n")

/** What `--help` prints. */
export const usage = `Usage: ${command} [options]

A Moon-compatible server on 127.0.0.1 (POST /auth/refresh, GET /protected),
with one-time refresh tokens and reuse detection, to run a program against.

Options:
  --port N                 the port (default: a free one)
  --token-lifetime S       access tokens live S whole seconds (default 3600)
  --reuse MODE             which reuses of a spent refresh token are forgiven:
                           window (default): the token spent last, within --reuse-window
                           gotrue: Supabase's rules (the parent of the active token always,
                           an older one within --reuse-window); anything else revokes the session
  --reuse-window D         milliseconds, or a duration such as "10 seconds"
                           (default 0 with window: every reuse is rejected; 10 seconds with gotrue)
  --body-shape SHAPE       bare (default) or wrapped: the session inside { "token": ... }
  --cors                   let pages on any origin call it from a browser
  --cors-origin ORIGIN     let pages on ORIGIN call it (repeat for more)
  --date-offset=MS         send a Date header MS milliseconds off the server's clock
                           (negative: behind; write it with "=")
  --fault SPEC             fault the next refresh request (repeat: one per request, in order):
${faultHelp}
  -h, --help               this text

While it runs, type a line and Enter:
  (an empty line)          print a new refresh token (each one works once)
  fault SPEC               fault the next refresh request
  stats                    print the counters
Ctrl-C stops it.`

/** A fault from its spec (`status:503`, `reset`), or why not. */
export const parseFault = (spec: string): Result.Result<MockMoonServer.Fault, string> => {
  const [name, ...args] = spec.trim().split(":")
  const found = faultSpecs.find(([pattern]) => pattern.split(":")[0] === name)
  if (found === undefined) {
    return Result.fail(`unknown fault "${spec}"; one of ${faultSpecs.map(([pattern]) => pattern).join(", ")}`)
  }
  const [pattern, , make] = found
  const numbers = args.map(Number)
  const wanted = pattern.split(":").length - 1
  return numbers.length === wanted && numbers.every((n) => Number.isInteger(n) && n >= 0)
    ? Result.succeed(make(numbers))
    : Result.fail(`fault "${spec}" must look like ${pattern}, with whole numbers`)
}

// Each flag's check, worded as the library's options are (`moon-mock-server: option "--port" …`).
const wholeNumber = (flag: string, min: number, max?: number) => (text: string) =>
  Result.mapError(
    Options_.integer(command, flag, /^-?\d+$/.test(text) ? Number(text) : Number.NaN, { min, max }),
    Options_.describe
  )

const oneOf = <const L extends string>(flag: string, allowed: ReadonlyArray<L>) => (text: string) =>
  Result.mapError(Options_.oneOf(command, flag, text, allowed), Options_.describe)

// A bare number is milliseconds, as the option takes it; else a duration ("10 seconds").
const duration = (flag: string) => (text: string) =>
  Result.mapError(
    Options_.duration(command, flag, /^\d+$/.test(text) ? Number(text) : text as Duration.Input, "nonNegative"),
    Options_.describe
  )

const flags = {
  port: { type: "string" },
  "token-lifetime": { type: "string" },
  reuse: { type: "string" },
  "reuse-window": { type: "string" },
  "body-shape": { type: "string" },
  cors: { type: "boolean" },
  "cors-origin": { type: "string", multiple: true },
  "date-offset": { type: "string" },
  fault: { type: "string", multiple: true },
  help: { type: "boolean", short: "h" }
} as const

const optional = <A>(text: string | undefined, parse: (text: string) => Result.Result<A, string>) =>
  text === undefined ? Result.succeed(undefined) : parse(text)

// `parseArgs` throws on a flag it does not know or a value it cannot take.
const readFlags = (argv: ReadonlyArray<string>) => {
  try {
    return Result.succeed(parseArgs({ args: [...argv], options: flags, strict: true, allowPositionals: false }))
  } catch (error) {
    return Result.fail(`${command}: ${(error as Error).message}`)
  }
}

/** Reads the command line (without `node` and the script), or says what is wrong with it. */
export const parseArguments = (argv: ReadonlyArray<string>): Result.Result<Invocation, string> =>
  Result.gen(function*() {
    const { values } = yield* readFlags(argv)
    const origins = values["cors-origin"]
    const server: MockMoonServer.Options = {
      port: yield* optional(values.port, wholeNumber("--port", 0, 65535)),
      accessTokenLifetime: yield* optional(values["token-lifetime"], wholeNumber("--token-lifetime", 1)),
      reuse: yield* optional(values.reuse, oneOf("--reuse", TokenFamily.reuseModes)),
      reuseWindow: yield* optional(values["reuse-window"], duration("--reuse-window")),
      bodyShape: yield* optional(values["body-shape"], oneOf("--body-shape", ["bare", "wrapped"])),
      cors: values.cors === true ? true : origins === undefined ? undefined : { origins },
      dateOffset: yield* optional(values["date-offset"], wholeNumber("--date-offset", Number.MIN_SAFE_INTEGER))
    }
    // Checked here too, so that a bad origin is a usage error, not a failure at start.
    yield* Result.mapError(Cors.policy(command, server.cors), Options_.describe)
    const faults = yield* Result.all((values.fault ?? []).map(parseFault))
    return { server, faults, help: values.help === true }
  })

/** Where the program reads its commands and writes its lines: stdio, or a test's. */
export interface Io {
  readonly lines: Stream.Stream<string>
  readonly print: (line: string) => Effect.Effect<void>
}

const describeReuse = (options: MockMoonServer.Options): string => {
  const mode = options.reuse ?? "window"
  // In milliseconds, whether the window came as a number or as a duration ("5 seconds").
  const window = Duration.toMillis(options.reuseWindow ?? TokenFamily.defaultReuseWindowMillis(mode))
  return mode === "gotrue"
    ? `reuse: gotrue (the parent of the active token always, an older one within ${window} ms)`
    : window === 0
    ? "reuse: none forgiven (every reuse revokes the session)"
    : `reuse: the token spent last, within ${window} ms`
}

const onCommand = (server: MockMoonServer.Service, io: Io, issue: Effect.Effect<string>) => (line: string) => {
  const text = line.trim()
  if (text === "") return Effect.flatMap(issue, (token) => io.print(`  export MOON_REFRESH_TOKEN=${token}`))
  if (text === "stats") return Effect.flatMap(server.stats, (stats) => io.print(JSON.stringify(stats)))
  if (text.startsWith("fault ")) {
    return Result.match(parseFault(text.slice(6)), {
      onFailure: (why) => io.print(why),
      onSuccess: (fault) => Effect.andThen(server.script(fault), io.print(`the next refresh request: ${fault._tag}`))
    })
  }
  return io.print(`unknown command "${text}": an empty line, "fault SPEC" or "stats"`)
}

/** Runs the server until interrupted: prints how to use it, then answers commands. */
export const program = (invocation: Invocation, io: Io): Effect.Effect<never, never, never> =>
  Effect.gen(function*() {
    const server = yield* MockMoonServer.make(invocation.server)
    yield* server.script(...invocation.faults)
    // The mock's tokens are random strings that unlock nothing but this
    // server, so printing them is the point here.
    const issue = Effect.map(server.issueSession(), (session) => Redacted.value(session.refreshToken))
    const lifetime = invocation.server.accessTokenLifetime ?? 3600
    yield* io.print(`${command}: listening on ${server.url}`)
    yield* io.print(`  access tokens live ${lifetime} s; ${describeReuse(invocation.server)}`)
    if (invocation.faults.length > 0) {
      yield* io.print(`  faults for the next refresh requests: ${invocation.faults.map((f) => f._tag).join(", ")}`)
    }
    yield* io.print(`Counters (POSTs, rotations, reuse rejections): curl ${server.statsUrl}`)
    yield* io.print("Point your program at it:")
    yield* io.print(`  export MOON_BASE_URL=${server.url}`)
    yield* io.print(`  export MOON_REFRESH_TOKEN=${yield* issue}`)
    yield* io.print(`A refresh token works once: press Enter for another. "stats", "fault SPEC"; Ctrl-C stops.`)
    yield* Stream.runForEach(io.lines, onCommand(server, io, issue))
    // stdin closed (not a terminal): keep serving until interrupted.
    return yield* Effect.never
  }).pipe(Effect.scoped)

// One line per request, from the server's debug log: what a person watching wants to see.
const requestLogger = (print: (line: string) => void) =>
  Logger.make(({ date, fiber, logLevel, message }) => {
    const annotations = fiber.getRef(References.CurrentLogAnnotations)
    const field = (name: string) => name in annotations ? String(annotations[name]) : ""
    const text = Array.isArray(message) ? message.join(" ") : String(message)
    if (text !== "MockMoonServer: request") return print(`${date.toISOString()} ${levelLabel(logLevel)} ${text}`)
    const fault = field("fault")
    print(
      `${date.toISOString()} ${field("method")} ${field("path")} ${field("status")} ${field("outcome")}` +
        (fault === "none" ? "" : ` (fault ${fault})`)
    )
  })

// The level as the line shows it: `ERROR`, `WARN`, … (`OFF` for `None`, as before Effect 4).
const levelLabel = (level: LogLevel.LogLevel): string => level === "None" ? "OFF" : level.toUpperCase()

const stdinLines = Stream.callback<string>((queue) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const lines = Readline.createInterface({ input: process.stdin })
      lines.on("line", (line) => Queue.offerUnsafe(queue, line))
      lines.on("close", () => Queue.endUnsafe(queue))
      return lines
    }),
    (lines) => Effect.sync(() => lines.close())
  )
)

/** The bin's whole job: parse `argv`, run {@link program} on stdio, stop on SIGINT and SIGTERM. */
export const main = (argv: ReadonlyArray<string>): void => {
  const parsed = parseArguments(argv)
  if (Result.isFailure(parsed)) {
    console.error(`${parsed.failure}\n(${command} --help lists the options)`)
    process.exitCode = 2
    return
  }
  if (parsed.success.help) return console.log(usage)
  const io: Io = { lines: stdinLines, print: (line) => Console.log(line) }
  const fiber = Effect.runFork(
    program(parsed.success, io).pipe(
      Effect.provide(Logger.layer([requestLogger((line) => console.log(line))])),
      Effect.provideService(References.MinimumLogLevel, "Debug")
    )
  )
  const stop = () => Effect.runFork(Fiber.interrupt(fiber))
  process.once("SIGINT", stop)
  process.once("SIGTERM", stop)
  fiber.addObserver((exit) => {
    if (Exit.isFailure(exit) && !Cause.hasInterruptsOnly(exit.cause)) {
      console.error(`${command}: ${String(Cause.squash(exit.cause))}`)
      process.exitCode = 1
    }
  })
}

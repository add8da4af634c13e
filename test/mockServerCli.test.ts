import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Queue, Result, Schedule, Stream } from "effect"
import * as Cli from "../src/testing/internal/mockServerCli.js"

// The moon-mock-server command without a process: its arguments parsed by a
// pure function, its program run on lines and a printer the test holds.
// (scripts/check-pack.ts runs the installed command itself.)

const parsed = (...argv: ReadonlyArray<string>) => Result.getOrThrow(Cli.parseArguments(argv))
const refused = (...argv: ReadonlyArray<string>) => Result.flip(Cli.parseArguments(argv)).pipe(Result.getOrThrow)

describe("moon-mock-server", () => {
  describe("arguments", () => {
    it("without any, leaves every option to MockMoonServer's defaults", () => {
      const { faults, help, server } = parsed()
      expect({ faults, help }).toStrictEqual({ faults: [], help: false })
      expect(Object.values(server).every((value) => value === undefined)).toBe(true)
    })

    it("maps each flag to its MockMoonServer option", () => {
      const invocation = parsed(
        "--port",
        "8787",
        "--token-lifetime",
        "60",
        "--reuse",
        "gotrue",
        "--reuse-window",
        "5 seconds",
        "--body-shape",
        "wrapped",
        "--cors-origin",
        "http://127.0.0.1:5173",
        "--date-offset=-7200000",
        "--fault",
        "status:503",
        "--fault",
        "reset-after-rotate"
      )
      expect(invocation.server).toMatchObject({
        port: 8787,
        accessTokenLifetime: 60,
        reuse: "gotrue",
        bodyShape: "wrapped",
        cors: { origins: ["http://127.0.0.1:5173"] },
        dateOffset: -7_200_000
      })
      expect(Duration.toMillis(Duration.fromInputUnsafe(invocation.server.reuseWindow!))).toBe(5000)
      expect(invocation.faults.map((fault) => fault._tag)).toStrictEqual(["Status", "ResetAfterRotate"])
      expect(Duration.toMillis(Duration.fromInputUnsafe(parsed("--reuse-window", "2500").server.reuseWindow!))).toBe(
        2500
      )
      expect(parsed("--cors").server.cors).toBe(true)
      expect(parsed("-h").help).toBe(true)
    })

    it("refuses a bad value with a line naming the flag", () => {
      expect(refused("--port", "70000")).toBe(
        `moon-mock-server: option "--port" must be a whole number from 0 to 65535`
      )
      expect(refused("--token-lifetime", "0")).toBe(
        `moon-mock-server: option "--token-lifetime" must be a whole number >= 1`
      )
      expect(refused("--reuse", "sometimes")).toBe(
        `moon-mock-server: option "--reuse" must be one of "window", "gotrue"`
      )
      expect(refused("--reuse-window=-5 seconds")).toContain(`option "--reuse-window" must be a finite`)
      expect(refused("--cors-origin", "http://127.0.0.1:5173/app")).toContain("which is not an origin")
      expect(refused("--fault", "status")).toBe(`fault "status" must look like status:CODE, with whole numbers`)
      expect(refused("--fault", "explode")).toContain(`unknown fault "explode"`)
      expect(refused("--verbose")).toContain("--verbose")
    })

    it("reads every fault the help lists", () => {
      const specs = ["status:500", "delay:10", "reset", "reset-after-rotate", "slow-body:10", "truncated"]
      const more = ["retry-after:429:5", "wrong-content-type"]
      expect([...specs, ...more].map((spec) => Result.getOrThrow(Cli.parseFault(spec))._tag)).toStrictEqual([
        "Status",
        "Delay",
        "Reset",
        "ResetAfterRotate",
        "SlowBody",
        "Truncated",
        "RetryAfter",
        "WrongContentType"
      ])
      for (const spec of [...specs, ...more]) expect(Cli.usage).toContain(spec.replace(/\d+/g, "").split(":")[0])
    })
  })

  describe("the program", () => {
    // Starts the command on lines the test sends, and gives what it printed so far.
    const start = (...argv: ReadonlyArray<string>) =>
      Effect.gen(function*() {
        const input = yield* Queue.unbounded<string>()
        const output: Array<string> = []
        const io: Cli.Io = {
          lines: Stream.fromQueue(input),
          print: (line) => Effect.sync(() => void output.push(line))
        }
        yield* Effect.forkScoped(Cli.program(parsed(...argv), io))
        // Waits, in real time, for the nth line the program prints that matches
        // (its first group); never asserts on how long it took.
        const waitFor = (pattern: RegExp, nth = 1) =>
          Effect.suspend(() => {
            const line = output.filter((printed) => pattern.test(printed))[nth - 1]
            return line === undefined ? Effect.fail("not yet") : Effect.succeed(pattern.exec(line)![1]!)
          }).pipe(
            Effect.retry(Schedule.spaced("10 millis").pipe(Schedule.upTo({ duration: "10 seconds" }))),
            Effect.orDie
          )
        return { input, output, waitFor }
      })

    // A refresh POST: its status and JSON body, or "reset" when the connection was cut.
    const post = (baseUrl: string, token: string) =>
      Effect.promise(() =>
        fetch(`${baseUrl}/auth/refresh`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ refresh_token: token })
        }).then(async (response) => ({ status: response.status, body: await response.text() }), () => "reset" as const)
      )

    const statusOf = (answer: { readonly status: number } | "reset") => answer === "reset" ? answer : answer.status

    const getJson = (url: string) => Effect.promise(() => fetch(url).then((response) => response.json()))

    it.live("prints the URL, a token and the stats URL, which then reports the rotation and the reuse", () =>
      Effect.gen(function*() {
        const { waitFor } = yield* start()
        const statsUrl = yield* waitFor(/curl (\S+)/)
        const baseUrl = yield* waitFor(/export MOON_BASE_URL=(\S+)/)
        const token = yield* waitFor(/export MOON_REFRESH_TOKEN=(\S+)/)
        expect(statsUrl).toBe(`${baseUrl}/mock/stats`)

        expect(statusOf(yield* post(baseUrl, token))).toBe(200)
        const reuse = yield* post(baseUrl, token)
        expect(reuse !== "reset" && [reuse.status, JSON.parse(reuse.body).error_code]).toStrictEqual([
          500,
          "refresh_token_already_used"
        ])
        expect(yield* getJson(statsUrl)).toMatchObject({ refreshRequests: 2, rotations: 1, reuseRejections: 1 })
      }))

    it.live("answers its commands: a new token, a fault for the next refresh, the counters", () =>
      Effect.gen(function*() {
        const { input, output, waitFor } = yield* start("--fault", "status:503")
        const baseUrl = yield* waitFor(/export MOON_BASE_URL=(\S+)/)
        const first = yield* waitFor(/export MOON_REFRESH_TOKEN=(\S+)/)
        expect(output.join("\n")).toContain("faults for the next refresh requests: Status")
        // The fault given on the command line answers the first refresh, without spending the token.
        expect(statusOf(yield* post(baseUrl, first))).toBe(503)
        expect(statusOf(yield* post(baseUrl, first))).toBe(200)

        yield* Queue.offer(input, "")
        const second = yield* waitFor(/export MOON_REFRESH_TOKEN=(\S+)/, 2)
        expect(second).not.toBe(first)
        yield* Queue.offer(input, "fault reset")
        yield* waitFor(/the next refresh request: (Reset)/)
        expect(statusOf(yield* post(baseUrl, second))).toBe("reset")

        yield* Queue.offer(input, "stats")
        const printed = yield* waitFor(/^(\{.*"refreshRequests".*\})$/)
        expect(JSON.parse(printed)).toMatchObject({ refreshRequests: 3, rotations: 1, faults: 2 })
        yield* Queue.offer(input, "dance")
        expect(yield* waitFor(/^(unknown command "dance")/)).toBe(`unknown command "dance"`)
      }))

    it.live("with --reuse gotrue, forgives the retry of a token whose answer was lost", () =>
      Effect.gen(function*() {
        const { waitFor } = yield* start("--reuse", "gotrue", "--fault", "reset-after-rotate")
        const baseUrl = yield* waitFor(/export MOON_BASE_URL=(\S+)/)
        const token = yield* waitFor(/export MOON_REFRESH_TOKEN=(\S+)/)
        expect(yield* waitFor(/(reuse: gotrue)/)).toBe("reuse: gotrue")
        // The server rotates, then cuts the connection: the answer is lost.
        expect(statusOf(yield* post(baseUrl, token))).toBe("reset")
        expect(statusOf(yield* post(baseUrl, token))).toBe(200)
        const stats = yield* getJson(`${baseUrl}/mock/stats`)
        expect(stats).toMatchObject({ rotations: 1, reusesTolerated: 1, reuseRejections: 0 })
      }))
  })
})

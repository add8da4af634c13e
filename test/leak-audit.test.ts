/**
 * The secret-leak audit: the whole fault matrix again (every fault at every
 * entry point), with everything a user could print captured: logs at every
 * level in four formats; every span's name, attributes and events, and its
 * end as an OpenTelemetry exporter records it; every error as `String`,
 * `JSON.stringify`, `util.inspect` and `Cause.pretty`; every value returned;
 * every `SessionManager` event; the mock server's own records. None of it may
 * contain a token the server issued (the seeded ones included), nor a
 * recognisable piece of one.
 *
 * The outcomes are the fault matrix's business (test/fault-matrix.test.ts):
 * here a case whose outcome is wrong is still searched for leaks. Leaks found
 * outside the matrix (a chunked answer cut mid-body) are regression cases in
 * test/regressions/secrets.test.ts.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Effect, Exit } from "effect"
import { type Case, cases, entryPointTitle } from "./support/FaultMatrix.js"
import { makeCapture, renderExit, runCase } from "./support/FaultMatrixRunner.js"

/**
 * What must not appear: each token whole, and the parts of it that identify
 * it. A JWT's header is the same for every token, so only its payload and
 * signature count; a refresh token also by its first 12 characters (72 random
 * bits), so that a truncated message cannot carry a usable prefix.
 */
const fragments = (token: string): ReadonlyArray<string> =>
  token.includes(".")
    ? [token, ...token.split(".").slice(1).filter((part) => part.length >= 16)]
    : [token, token.slice(0, 12)]

/** Where each token (or a piece of one) appears in `text`, without printing any token. */
const findLeaks = (tokens: ReadonlyArray<string>, text: string): ReadonlyArray<string> => {
  const mask = (context: string) =>
    tokens.flatMap(fragments).reduce((masked, fragment) => masked.split(fragment).join("<TOKEN>"), context)
  return tokens.flatMap((token) =>
    fragments(token).filter((fragment) => text.includes(fragment)).map((fragment) => {
      const at = text.indexOf(fragment)
      return `${fragment === token ? "token" : "token fragment"} after: ${
        mask(text.slice(Math.max(0, at - 160), at)).replace(/\s+/g, " ")
      }<TOKEN>`
    })
  )
}

/** Lets the mock server's last log lines (written when its sockets close) arrive. */
const drain = Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 20)))

/** Runs a case with everything captured; its outcome assertions may fail, the capture is kept. */
const sweep = (c: Case) =>
  Effect.gen(function*() {
    const capturing = makeCapture()
    const exit = yield* Effect.exit(runCase(c, capturing))
    yield* drain
    return { capturing, exit }
  })

describe("no token in any log, span, error, value or event", () => {
  for (const c of cases) {
    if (c.expected._tag === "NotApplicable") continue
    const posts = c.expected.posts
    it.effect(`${c.fault.id} at ${entryPointTitle[c.entryPoint]}`, () =>
      Effect.gen(function*() {
        const { capturing, exit } = yield* sweep(c)
        const { capture } = capturing
        // A broken runner would make this audit vacuous.
        expect(Exit.isFailure(exit) ? Cause.pretty(exit.cause) : "").not.toContain("fault matrix: never saw")
        expect(capture.issued.length).toBeGreaterThanOrEqual(2)
        expect(capture.texts.length).toBeGreaterThan(0)
        if (posts > 0) expect(capture.spans.map((span) => span.name)).toContain("moon-refresh/refresh")

        const everything = [...capture.texts, ...capturing.spanTexts()].join("\n")
        expect(findLeaks(capture.issued, everything)).toStrictEqual([])
      }))
  }
})

describe("the raw exits of spans", () => {
  // A tracer that serialises a span's whole exit (not only `Cause.pretty`,
  // which is what @effect/opentelemetry records) sees the platform's
  // `http.client POST` span end with the refresh request and its response:
  // inside the RequestError / ResponseError of a failed attempt, and as the
  // value of a successful one. Printed, a request shows its JSON body (the
  // refresh token sent), and a response whose body was read shows that body
  // (the new tokens).
  for (
    const id of ["reset-once", "truncated-reuse-window", "status-500-once"] as const
  ) {
    const c = cases.find((c) => c.fault.id === id && c.entryPoint === "RefreshClient")!
    it.effect(`${id}: no span ends with a value or error that renders a token`, () =>
      Effect.gen(function*() {
        const { capturing } = yield* sweep(c)
        const { issued, spans } = capturing.capture
        expect(spans.map((span) => span.name)).toContain("moon-refresh/refresh")
        const leaking = spans.flatMap((span) =>
          span.status._tag === "Ended" && findLeaks(issued, renderExit(span.status.exit).join("\n")).length > 0
            ? [`${span.name} (${span.status.exit._tag})`]
            : []
        )
        expect(leaking).toStrictEqual([])
      }))
  }
})

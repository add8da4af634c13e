import { describe, expect, it, layer } from "@effect/vitest"
import { Arbitrary, Cause, Clock, DateTime, Duration, Effect, Exit, Layer, Option, Redacted, Schema } from "effect"
import { HttpClient, HttpClientResponse } from "effect/http"
import { TestClock } from "effect/testing"
import { RefreshClient, RefreshError, RefreshPolicy, Session } from "moon-refresh"
import { capMessage, maxMessageLength } from "../src/internal/message.js"
import { SupabaseSession } from "../src/internal/sessionSchema.js"
import * as fc from "./support/Arb.js"
import { tracked } from "./support/Sleeps.js"
import * as TestHttpClient from "./support/TestHttpClient.js"

// Property-based tests of `RefreshClient.refresh` against whatever a server (or
// a proxy in front of it) might answer. Whatever the status, headers and body,
// a refresh ends in a `Session` or a typed `RefreshError`: never a defect, never
// an expired session, never a token in an error.
// Counterexamples these properties found are regression cases, each named by
// its cause, in test/regressions/.

// ---------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------

// Effect 4 ships no fast-check: the generators are Effect's `Arbitrary`, through
// test/support/Arb.ts (fast-check's names) and the few below that it lacks.

/** Strings of `pattern` (Effect's `Arbitrary` builds them from the regular expression). */
const stringMatching = (pattern: RegExp): fc.Arb<string> =>
  Arbitrary.schema(Schema.String.check(Schema.isPattern(pattern)))

/** Any finite double, -0 and the extremes included. */
const finiteDouble: fc.Arb<number> = Arbitrary.schema(Schema.Finite)

/** A double from `min` to `max`, both included. */
const doubleBetween = (min: number, max: number): fc.Arb<number> =>
  Arbitrary.schema(Schema.Finite.check(Schema.isBetween({ minimum: min, maximum: max })))

/** Short strings of printable ASCII and a few edge cases (fast-check's default string). */
const asciiString = (maxLength?: number): fc.Arb<string> =>
  Arbitrary.schema(maxLength === undefined ? Schema.String : Schema.String.check(Schema.isMaxLength(maxLength)))

// A code point from all of Unicode; with `surrogates`, a lone surrogate half too.
const codePoint = (surrogates: boolean): fc.Arb<string> =>
  fc.oneof(
    { weight: 3, arbitrary: fc.integer({ min: 0x20, max: 0x7e }) },
    { weight: 2, arbitrary: fc.integer({ min: 0, max: 0xffff - (surrogates ? 0 : 0x800) }) },
    { weight: 1, arbitrary: fc.integer({ min: 0x10000, max: 0x10ffff }) }
  ).pipe(fc.map((n) => String.fromCodePoint(!surrogates && n >= 0xd800 && n <= 0xffff - 0x800 ? n + 0x800 : n)))

/** One character anywhere in Unicode, never half a surrogate pair (fast-check's `fullUnicode`). */
const fullUnicode: fc.Arb<string> = codePoint(false)

/** What a user sees as one character: a code point, or a cluster of them. */
const grapheme: fc.Arb<string> = fc.oneof(
  { weight: 8, arbitrary: fullUnicode },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      "e\u0301",
      "\u{1F44D}\u{1F3FD}",
      "\u{1F1EB}\u{1F1F7}",
      "\u{1F468}\u200D\u{1F469}\u200D\u{1F467}",
      "\u1100\u1161\u11A8"
    )
  }
)

/**
 * Up to `maxLength` graphemes, or (`binary`) code points including lone
 * surrogate halves; without `maxLength`, as many as the check's size.
 */
const unicodeString = (unit: "grapheme" | "binary", maxLength?: number): fc.Arb<string> =>
  Arbitrary.array(unit === "grapheme" ? grapheme : codePoint(true), { maxLength }).pipe(
    fc.map((units) => units.join(""))
  )

/** Any value: JSON, `undefined`, the numbers JSON has not, objects with any keys (fast-check's `anything`). */
const anything: fc.Arb<unknown> = fc.oneof(
  { weight: 4, arbitrary: Arbitrary.schema(Schema.Unknown) },
  { weight: 1, arbitrary: fc.constantFrom(undefined, Number.NaN, Infinity, -Infinity, -0, 2n ** 64n) },
  {
    weight: 1,
    arbitrary: Arbitrary.array(
      Arbitrary.all([
        fc.oneof(asciiString(), fc.constantFrom("__proto__", "_tag", "constructor")),
        Arbitrary.schema(Schema.Unknown)
      ]),
      { maxLength: 4 }
    ).pipe(fc.map((entries): unknown => Object.fromEntries(entries)))
  }
)

/** An object of up to `maxKeys` entries. */
const dictionary = <A>(key: fc.Arb<string>, value: fc.Arb<A>, options: { readonly maxKeys: number }) =>
  Arbitrary.array(Arbitrary.all([key, value]), { maxLength: options.maxKeys }).pipe(
    fc.map((entries): Record<string, A> => Object.fromEntries(entries))
  )

// Marks a field to leave out of a generated object.
const absent = Symbol("absent")
type Maybe<A> = A | typeof absent

const strip = (record: Record<string, unknown>): Record<string, unknown> =>
  Object.fromEntries(Object.entries(record).filter(([, value]) => value !== absent))

/** `arbitrary`, or (`absentWeight` times in `weight + absentWeight`) nothing. */
const maybe = <A>(arbitrary: fc.Arb<A>, weight = 1, absentWeight = 1): fc.Arb<Maybe<A>> =>
  fc.oneof({ weight, arbitrary }, { weight: absentWeight, arbitrary: fc.constant(absent) })

// 1970 to 2100: the TestClock's now for one run.
const nowArb = fc.integer({ min: 0, max: 4_102_444_800_000 })

// Refresh tokens as Supabase issues them (short base64url strings).
const requestTokenArb = stringMatching(/^[A-Za-z0-9_-]{12,64}$/)

// Tokens planted in bodies: long and random, so that finding one in a message
// is a leak, not a coincidence.
const bodyTokenArb = stringMatching(/^[A-Za-z0-9_-]{24,64}$/).pipe(fc.map((s) => `tok.${s}`))

// Far over the 500-character cap of a message, without making each run slow.
const hugeString = Arbitrary.all([fc.integer({ min: 1_000, max: 20_000 }), fullUnicode]).pipe(
  fc.map(([n, c]) => c.repeat(n))
)

const oddNumber = fc.oneof(
  fc.constantFrom(0, -0, -1, 0.5, 1e-9, 1e12, 1e300, -1e300, 2 ** 53, 8.64e12, 8.64e15, Number.MAX_VALUE),
  finiteDouble,
  fc.integer({ min: -0x80000000, max: 0x7fffffff })
)

const oddString = fc.oneof(
  fc.constantFrom("", " ", "\t\n", "null", "3600", "\u0000", "😀", "\u202e", "bearer"),
  unicodeString("grapheme", 40),
  unicodeString("binary", 20),
  { weight: 1, arbitrary: hugeString }
)

// Any JSON value (Effect's recursive schemas bound the depth themselves).
const anyJson: fc.Arb<unknown> = Arbitrary.schema(Schema.Json)

// A value of any JSON type, biased towards the edges.
const oddValue: fc.Arb<unknown> = fc.oneof(
  oddNumber,
  oddString,
  anyJson,
  fc.constant(null),
  fc.boolean(),
  fc.array(anyJson, { maxLength: 3 }),
  dictionary(asciiString(8), anyJson, { maxKeys: 3 })
)

const oddKey = fc.oneof(
  asciiString(12),
  fc.constantFrom("__proto__", "constructor", "toString", "hasOwnProperty", "id ", "app_metadata", "identities")
)

const uuidArb = Arbitrary.schema(Schema.String.check(Schema.isUUID()))
const emailArb = stringMatching(/^[a-z0-9][a-z0-9._+-]{0,19}@[a-z0-9-]{1,20}\.[a-z]{2,6}$/)

const userArb: fc.Arb<unknown> = fc.oneof(
  {
    weight: 19,
    arbitrary: fc.record({
      id: fc.oneof({ weight: 8, arbitrary: uuidArb }, { weight: 1, arbitrary: oddValue }, {
        weight: 1,
        arbitrary: fc.constant(absent)
      }),
      email: fc.oneof(
        { weight: 6, arbitrary: emailArb },
        { weight: 2, arbitrary: fc.constant(null) },
        { weight: 2, arbitrary: fc.constant(absent) },
        { weight: 1, arbitrary: oddValue }
      ),
      extra: dictionary(oddKey, oddValue, { maxKeys: 4 })
    }).pipe(fc.map(({ email, extra, id }) => ({ ...extra, ...strip({ id, email }) })))
  },
  { weight: 1, arbitrary: oddValue }
)

// Expiry fields, relative to the run's now: mostly sensible, often not.
const expiryArb = (now: number) =>
  fc.record({
    expires_in: fc.oneof(
      { weight: 8, arbitrary: fc.integer({ min: 1, max: 86_400 }) },
      { weight: 1, arbitrary: fc.constantFrom(0, -1, -3600, 0.0001, 1e-9, 1e12, 1e300, 8.64e12) },
      { weight: 1, arbitrary: oddValue },
      { weight: 2, arbitrary: fc.constant(absent) }
    ),
    expires_at: fc.oneof(
      { weight: 5, arbitrary: fc.integer({ min: 60, max: 86_400 }).pipe(fc.map((d) => Math.floor(now / 1000) + d)) },
      { weight: 1, arbitrary: fc.integer({ min: -3_600, max: 60 }).pipe(fc.map((d) => Math.floor(now / 1000) + d)) },
      { weight: 1, arbitrary: fc.constantFrom(0, -1, 1e-9, 1e12, 1e300, 8.64e12, 8.64e15) },
      { weight: 1, arbitrary: oddValue },
      { weight: 6, arbitrary: fc.constant(absent) }
    )
  })

// A valid-looking Supabase session (tokens planted), then 0 to 4 mutations.
type Mutation =
  | { readonly _tag: "Remove"; readonly key: string }
  | { readonly _tag: "Retype"; readonly key: string; readonly value: unknown }
  | { readonly _tag: "Extra"; readonly key: string; readonly value: unknown }
  | { readonly _tag: "UserField"; readonly key: string; readonly value: unknown }

const sessionKeys = [
  "access_token",
  "refresh_token",
  "expires_in",
  "expires_at",
  "token_type",
  "user",
  "provider_token",
  "provider_refresh_token"
] as const

const mutationArb: fc.Arb<Mutation> = fc.oneof(
  fc.record({ _tag: fc.constant("Remove" as const), key: fc.constantFrom(...sessionKeys) }),
  fc.record({ _tag: fc.constant("Retype" as const), key: fc.constantFrom(...sessionKeys), value: oddValue }),
  fc.record({
    _tag: fc.constant("Extra" as const),
    key: fc.oneof(oddKey, fc.constantFrom("error", "msg", "message", "code", "error_code", "data", "session")),
    value: fc.oneof(oddValue, fc.constantFrom("Invalid Refresh Token: Already Used", "session_not_found"))
  }),
  fc.record({
    _tag: fc.constant("UserField" as const),
    key: fc.oneof(oddKey, fc.constantFrom("id", "email")),
    value: oddValue
  })
)

const mutate = (session: Record<string, unknown>, mutation: Mutation): Record<string, unknown> => {
  switch (mutation._tag) {
    case "Remove": {
      const { [mutation.key]: _, ...rest } = session
      return rest
    }
    case "Retype":
    case "Extra":
      return { ...session, [mutation.key]: mutation.value }
    case "UserField": {
      const user = session.user
      return typeof user === "object" && user !== null && !Array.isArray(user)
        ? { ...session, user: { ...user, [mutation.key]: mutation.value } }
        : session
    }
  }
}

type Shape = "bare" | "wrapped" | "double-wrapped" | "data" | "array" | "wrapped-and-bare"
const shape = (session: Record<string, unknown>, how: Shape): unknown => {
  switch (how) {
    case "bare":
      return session
    case "wrapped":
      return { token: session }
    case "double-wrapped":
      return { token: { token: session } }
    case "data":
      return { data: { session } }
    case "array":
      return [session]
    case "wrapped-and-bare":
      return { ...session, token: session }
  }
}

// What can happen to the text on the way: nothing, mostly.
type TextEdit = "none" | "truncate" | "bom" | "xssi-prefix" | "trailing-garbage"
const editText = (text: string, edit: TextEdit, at: number): string => {
  switch (edit) {
    case "none":
      return text
    case "truncate":
      return text.slice(0, Math.floor(text.length * at))
    case "bom":
      return `\uFEFF${text}`
    case "xssi-prefix":
      return `)]}',\n${text}`
    case "trailing-garbage":
      return `${text}}garbage`
  }
}

interface Body {
  readonly text: string
  /** Tokens the body carries (or carried before a mutation): none may appear in an error message. */
  readonly planted: ReadonlyArray<string>
}

// A counterexample prints its body shortened: a 1 MiB body would bury the report.
// (Effect's report prints a value through its own `toString`.)
const makeBody = (text: string, planted: ReadonlyArray<string> = []): Body & { readonly toString: () => string } => ({
  text,
  planted,
  toString: () =>
    `{ text: ${JSON.stringify(text.length > 400 ? `${text.slice(0, 400)}…` : text)}${
      text.length > 400 ? ` (${text.length} chars)` : ""
    }, planted: ${JSON.stringify(planted)} }`
})

const sessionBodyArb = (now: number): fc.Arb<Body> =>
  fc.record({
    planted: fc.record({ accessToken: bodyTokenArb, refreshToken: bodyTokenArb }),
    expiry: expiryArb(now),
    tokenType: maybe(fc.constantFrom("bearer", "Bearer"), 4),
    user: userArb,
    providerToken: maybe(fc.oneof(fc.constant(null), bodyTokenArb), 1),
    mutations: fc.oneof(
      { weight: 2, arbitrary: fc.constant([]) },
      { weight: 1, arbitrary: Arbitrary.array(mutationArb, { minLength: 1, maxLength: 4 }) }
    ),
    shape: fc.oneof(
      { weight: 8, arbitrary: fc.constantFrom("bare", "wrapped") },
      { weight: 1, arbitrary: fc.constantFrom("double-wrapped", "data", "array", "wrapped-and-bare") }
    ),
    edit: fc.oneof(
      { weight: 12, arbitrary: fc.constant("none") },
      { weight: 1, arbitrary: fc.constantFrom("truncate", "bom", "xssi-prefix", "trailing-garbage") }
    ),
    at: doubleBetween(0, 1)
  }).pipe(fc.map(({ at, edit, expiry, mutations, planted, providerToken, shape: how, tokenType, user }) => {
    const base = strip({
      access_token: planted.accessToken,
      refresh_token: planted.refreshToken,
      ...expiry,
      token_type: tokenType,
      user,
      provider_token: providerToken
    })
    const session = mutations.reduce(mutate, base)
    const tokens = [planted.accessToken, planted.refreshToken]
    if (typeof providerToken === "string") tokens.push(providerToken)
    return makeBody(editText(JSON.stringify(shape(session, how)), edit, at), tokens)
  }))

const deadTokenPhrases = [
  "Invalid Refresh Token: Already Used",
  "Invalid Refresh Token: Refresh Token Not Found",
  "Invalid Refresh Token: Session Expired"
]

// An error message a server might write, sometimes echoing the request's token.
const messageArb = (requestToken: string) =>
  Arbitrary.all([
    fc.constantFrom(
      "",
      "Internal Server Error",
      "Bad Gateway",
      "rate limited",
      "upstream timed out",
      ...deadTokenPhrases
    ),
    fc.oneof(unicodeString("grapheme", 60), { weight: 1, arbitrary: hugeString }),
    fc.boolean()
  ]).pipe(
    fc.map((
      [phrase, noise, echo]
    ) => (echo ? `${phrase} ${noise} refresh_token=${requestToken}` : `${phrase} ${noise}`))
  )

const errorBodyArb = (requestToken: string): fc.Arb<Body> =>
  fc.oneof(
    fc.record({
      key: fc.constantFrom("error", "message", "msg", "error_description"),
      message: messageArb(requestToken),
      nested: fc.boolean()
    }).pipe(fc.map(({ key, message, nested }) => JSON.stringify({ [key]: nested ? { message } : message }))),
    fc.record({
      code: fc.constantFrom(
        "refresh_token_not_found",
        "refresh_token_already_used",
        "session_expired",
        "over_request_rate_limit",
        "unexpected_failure"
      ),
      msg: messageArb(requestToken)
    }).pipe(fc.map(({ code, msg }) => JSON.stringify({ error_code: code, msg }))),
    messageArb(requestToken),
    messageArb(requestToken).pipe(fc.map((m) =>
      `<!DOCTYPE html><html><head><title>${m}</title><style>p{}</style></head><body><h1>${m}</h1></body></html>`
    )),
    fc.constant("")
  ).pipe(fc.map((text) =>
    makeBody(text)
  ))

// Just over 1 MiB. Rare here (reading it is the slow part of a run); the
// limit itself is tested exactly in bad-input.test.ts.
const oversizedArb: fc.Arb<Body> = fc.constant(null).pipe(
  fc.map(() => makeBody(`{"padding":"${"x".repeat(1024 * 1024)}"}`))
)

const bodyArb = (now: number, requestToken: string): fc.Arb<Body> =>
  fc.oneof(
    { weight: 60, arbitrary: sessionBodyArb(now) },
    { weight: 15, arbitrary: anyJson.pipe(fc.map((value) => makeBody(JSON.stringify(value)))) },
    { weight: 25, arbitrary: errorBodyArb(requestToken) },
    { weight: 5, arbitrary: unicodeString("grapheme", 200).pipe(fc.map((text) => makeBody(text))) },
    { weight: 1, arbitrary: oversizedArb }
  )

const statusArb = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(200, 200, 200, 201, 204) },
  { weight: 2, arbitrary: fc.constantFrom(400, 401, 403, 404, 408, 429, 500, 502, 503, 504) },
  { weight: 2, arbitrary: fc.integer({ min: 100, max: 599 }) }
)

const headerText = stringMatching(/^[\x20-\x7e]{0,40}$/)

const headersArb = (now: number): fc.Arb<Record<string, string>> =>
  fc.record({
    "content-type": maybe(
      fc.oneof(
        fc.constantFrom(
          "application/json",
          "application/json; charset=utf-8",
          "text/html; charset=utf-8",
          "text/plain",
          "application/octet-stream",
          "application/problem+json"
        ),
        headerText
      ),
      4
    ),
    "retry-after": maybe(
      fc.oneof(
        fc.nat({ max: 100_000_000 }).pipe(fc.map(String)),
        doubleBetween(0, 1e6).pipe(fc.map((n) => n.toFixed(3))),
        fc.constantFrom("9".repeat(40), "-5", "soon", "", " 120 ", "Wed, 21 Oct 2015 07:28:00 GMT"),
        fc.integer({ min: -86_400_000, max: 366 * 86_400_000 }).pipe(fc.map((d) => new Date(now + d).toUTCString())),
        headerText
      )
    ),
    date: maybe(
      fc.oneof(
        {
          weight: 4,
          arbitrary: fc.integer({ min: -3_000, max: 3_000 }).pipe(fc.map((d) => new Date(now + d).toUTCString()))
        },
        { weight: 1, arbitrary: nowArb.pipe(fc.map((t) => new Date(t).toUTCString())) },
        {
          weight: 1,
          arbitrary: fc.constantFrom("Fri, 31 Dec 9999 23:59:59 GMT", "Thu, 01 Jan 1970 00:00:00 GMT", "yesterday")
        },
        { weight: 1, arbitrary: headerText }
      )
    ),
    "content-length": maybe(fc.constantFrom("0", "12", "abc", "-1", String(2 ** 31)), 1, 4)
  }).pipe(fc.map((headers) => strip(headers) as Record<string, string>))

interface Scenario {
  readonly now: number
  readonly requestToken: string
  readonly status: number
  readonly headers: Record<string, string>
  readonly body: Body
}

const scenarioArb: fc.Arb<Scenario> = Arbitrary.all([nowArb, requestTokenArb]).pipe(
  fc.chain(([now, requestToken]) =>
    fc.record({
      now: fc.constant(now),
      requestToken: fc.constant(requestToken),
      status: statusArb,
      headers: headersArb(now),
      body: bodyArb(now, requestToken)
    })
  )
)

// ---------------------------------------------------------------------------
// The HTTP double
// ---------------------------------------------------------------------------

// `new Response` refuses a 1xx status and any body (even "") on 204, 205 and
// 304, all of which a raw socket or a misbehaving proxy can still deliver. Those go
// through a `Response` whose status is overridden; the rest through TestHttpClient.
const refusedByResponse = (status: number) => status < 200 || status === 204 || status === 205 || status === 304

const anyStatusClient = (status: number, body: string, headers: Record<string, string>) =>
  HttpClient.make((request) =>
    Effect.sync(() => {
      const inner = new Response(body, { status: 200, headers })
      const response = new Proxy(inner, {
        get: (target, key) => {
          if (key === "status") return status
          const value = Reflect.get(target, key, target)
          return typeof value === "function" ? value.bind(target) : value
        }
      })
      return HttpClientResponse.fromWeb(request, response)
    })
  )

const serverFor = (scenario: Scenario): HttpClient.HttpClient =>
  refusedByResponse(scenario.status)
    ? anyStatusClient(scenario.status, scenario.body.text, scenario.headers)
    : TestHttpClient.make({
      _tag: "Respond",
      status: scenario.status,
      body: scenario.body.text,
      headers: scenario.headers
    }).client

// One attempt: the outcome of a single answer, not of a retry schedule. The
// service is built with `make` rather than through a layer: thousands of runs
// should spend their time refreshing, not building layers.
const refreshOnce = (scenario: Scenario) =>
  RefreshClient.make({ policy: RefreshPolicy.none }).pipe(
    Effect.provideService(HttpClient.HttpClient, serverFor(scenario)),
    Effect.flatMap((client) => client.refresh(Redacted.make(scenario.requestToken))),
    Effect.exit
  )

// ---------------------------------------------------------------------------
// What every outcome must satisfy
// ---------------------------------------------------------------------------

const describeScenario = (scenario: Scenario) =>
  `status ${scenario.status}, headers ${JSON.stringify(scenario.headers)}, body ${
    JSON.stringify(scenario.body.text.slice(0, 300))
  }${scenario.body.text.length > 300 ? `… (${scenario.body.text.length} chars)` : ""}`

const expectSession = (session: Session.Session, now: number) => {
  expect(session).toBeInstanceOf(Session.Session)
  expect(Redacted.value(session.accessToken).trim()).not.toBe("")
  expect(Redacted.value(session.refreshToken).trim()).not.toBe("")
  expect(DateTime.toEpochMillis(session.expiresAt)).toBeGreaterThan(now)
}

const expectTypedError = (cause: Cause.Cause<RefreshError.RefreshError>, secrets: ReadonlyArray<string>) => {
  const failure = Cause.findErrorOption(cause)
  // Exactly one typed failure: no defect, no interruption beside it.
  expect(Cause.hasDies(cause), Cause.pretty(cause)).toBe(false)
  expect(Cause.hasInterrupts(cause)).toBe(false)
  expect(Option.isSome(failure)).toBe(true)
  const error = Option.getOrThrow(failure)
  expect(RefreshError.isRefreshError(error)).toBe(true)
  expect(typeof error.message).toBe("string")
  expect(error.message.length).toBeLessThanOrEqual(maxMessageLength)
  const renderings = [error.message, String(error), JSON.stringify(error)]
  for (const secret of secrets) {
    for (const rendering of renderings) expect(rendering).not.toContain(secret)
  }
  return error
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

// Each run gets a TestClock of its own, set to the run's now: no run sees what
// another left on the clock.
const isJsonObject = (text: string): boolean => {
  try {
    const value: unknown = JSON.parse(text)
    return typeof value === "object" && value !== null && !Array.isArray(value)
  } catch {
    return false
  }
}

const atTime = (now: number) => <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.provide(Effect.andThen(TestClock.setTime(now), effect), TestClock.layer())

/**
 * Ends each run with a turn of the event loop. Under the TestClock a run never
 * waits on a timer or a socket, and fast-check chains runs through promises
 * (microtasks), so without this 2,000 runs would hold the worker's event loop
 * for their whole length: about 10 s on a quiet machine, over the minute in
 * which vitest's worker must answer its main process on a loaded one ("Timeout
 * calling onTaskUpdate").
 */
const turn = Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))
const breathe = <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.tap(effect, () => turn)

/**
 * Moves the TestClock (the one `tracked` lists the sleeps of) to `millis`, as
 * Effect 3's `TestClock.adjust` did: before each sleep that falls due is
 * woken, every fiber runs until it waits on something, a response body read
 * through promises included. Effect 4's `adjust` wakes the next sleep as soon
 * as the woken fiber's own scheduler tasks are done, so an attempt whose body
 * is still being read would start its next sleep after the clock had moved
 * past it. A few turns of the event loop per step: the double answers
 * without I/O, so no run needs more whatever the machine's load.
 */
const settleTurns = 10
const settle = Effect.repeat(turn, { times: settleTurns - 1 })
const advanceTo = (sleeps: Effect.Effect<ReadonlyArray<number>>, millis: number): Effect.Effect<void> =>
  Effect.gen(function*() {
    for (;;) {
      yield* settle
      const [next] = yield* sleeps
      if (next === undefined || next > millis) break
      yield* TestClock.setTime(next)
    }
    yield* TestClock.setTime(millis)
    yield* settle
  })

// The library's SupabaseSession schema, its tokens also checked non-empty. Only
// to guide generation: Effect's Arbitrary cannot see through the schema's own
// non-blank filter, so at the size a check starts from (0) it makes nothing but
// "" tokens, all rejected, and never grows past it. The sessions generated are
// the same set: what the extra check refuses, the schema refuses too.
const supabaseSessionArb = Arbitrary.schema(Schema.Struct({
  ...SupabaseSession.fields,
  access_token: SupabaseSession.fields.access_token.check(Schema.isMinLength(1)),
  refresh_token: SupabaseSession.fields.refresh_token.check(Schema.isMinLength(1))
}))

// One set of test services for all runs (`it.effect.prop` outside a `layer`
// builds them anew for each run); the clock is per run, above.
layer(Layer.empty)("RefreshClient.refresh over random answers", (it) => {
  it.effect.prop(
    "ends in a Session or a typed RefreshError, never a defect; sessions are usable; errors are short and secret-free",
    { scenario: scenarioArb },
    ({ scenario }) =>
      Effect.gen(function*() {
        const exit = yield* refreshOnce(scenario)
        const now = yield* Clock.currentTimeMillis
        const context = describeScenario(scenario)
        if (Exit.isSuccess(exit)) {
          expect(scenario.status >= 200 && scenario.status < 300, context).toBe(true)
          expectSession(exit.value, now)
        } else {
          const error = expectTypedError(exit.cause, [scenario.requestToken, ...scenario.body.planted])
          const status = scenario.status
          // The classification follows the status where the status decides.
          if (status >= 200 && status < 300) {
            expect(["MalformedResponseError", "TokenRejectedError"], context).toContain(error._tag)
          } else if (status === 400) {
            expect(error._tag, context).toBe("TokenRejectedError")
          } else if (status === 401 || status === 403) {
            // A verdict on the token only from the auth server (a JSON error) or
            // a dead-token message; a proxy's page is a retryable ServerError.
            expect(["TokenRejectedError", "ServerError"], context).toContain(error._tag)
            if (error._tag === "ServerError") {
              // (A body over the cap is not read at all: then only the status is known.)
              const unread = Number(scenario.headers["content-length"] ?? 0) > 1024 * 1024 ||
                Buffer.byteLength(scenario.body.text) > 1024 * 1024
              expect(isJsonObject(scenario.body.text) && !unread, context).toBe(false)
              expect(RefreshError.isRetryable(error), context).toBe(true)
            }
          } else {
            expect(error._tag, context).not.toBe("MalformedResponseError")
          }
          if (error._tag === "RateLimitedError") {
            expect([429, 503]).toContain(status)
            for (const delay of Option.toArray(error.retryAfter)) {
              expect(Duration.isLessThanOrEqualTo(delay, Duration.hours(1))).toBe(true)
            }
          }
        }
      }).pipe(atTime(scenario.now), breathe),
    // CPU-bound: 2,000 runs take about 20 s on a busy 2-core machine, minutes on a very busy one (the
    // global testTimeout, a hang guard, covers it).
    { arbitrary: { runs: 2000 } }
  )

  it.effect.prop(
    "decodes every well-typed Supabase session (Schema's Arbitrary) with a future expiry into that session",
    {
      wire: supabaseSessionArb,
      now: nowArb,
      wrapped: fc.boolean(),
      requestToken: requestTokenArb
    },
    ({ now, requestToken, wire, wrapped }) =>
      Effect.gen(function*() {
        const body = JSON.stringify(wrapped ? { token: wire } : wire)
        const exit = yield* refreshOnce({
          now,
          requestToken,
          status: 200,
          headers: { "content-type": "application/json" },
          body: makeBody(body)
        })
        // Through JSON, as on the wire (JSON.stringify drops what JSON cannot carry).
        const sent = JSON.parse(body)
        const wireSent: SupabaseSession = wrapped ? sent.token : sent
        // expires_in wins (a duration needs no clock); expires_at only when alone.
        const expiresAt = wireSent.expires_in !== undefined
          ? now + wireSent.expires_in * 1000
          : wireSent.expires_at !== undefined
          ? wireSent.expires_at * 1000
          : undefined
        if (Exit.isSuccess(exit)) {
          const session = exit.value
          expectSession(session, now)
          expect(Redacted.value(session.accessToken)).toBe(wireSent.access_token)
          expect(Redacted.value(session.refreshToken)).toBe(wireSent.refresh_token)
          expect(session.tokenType).toBe(wireSent.token_type ?? "bearer")
          expect(session.user.id).toBe(wireSent.user.id)
        } else {
          // Schema's tokens can be a single character; only long ones cannot appear by coincidence.
          const tokens = [wireSent.access_token, wireSent.refresh_token].filter((token) => token.length >= 12)
          const error = expectTypedError(exit.cause, [requestToken, ...tokens])
          // Only the expiry can make a well-typed session unusable: missing, not in
          // the future, or more than 30 days away.
          expect(error._tag).toBe("MalformedResponseError")
          expect(error.message).toMatch(/expires_(in|at)/)
          expect(expiresAt === undefined || expiresAt <= now + 1 || expiresAt - now > 30 * 24 * 3_600_000).toBe(true)
        }
      }).pipe(atTime(now), breathe),
    { arbitrary: { runs: 200 } }
  )

  it.effect.prop(
    "with the default policy, any run of answers ends within 2 minutes, after at most 6 requests",
    {
      scenarios: Arbitrary.array(scenarioArb, { minLength: 1, maxLength: 8 }),
      transportFailures: Arbitrary.array(fc.boolean(), { minLength: 8, maxLength: 8 })
    },
    ({ scenarios, transportFailures }) =>
      tracked((sleeps) =>
        Effect.gen(function*() {
          const first = scenarios[0]!
          const server = TestHttpClient.make(
            ...scenarios.map((scenario, i): TestHttpClient.Reply =>
              transportFailures[i] || refusedByResponse(scenario.status)
                ? TestHttpClient.transportFailure()
                : { _tag: "Respond", status: scenario.status, body: scenario.body.text, headers: scenario.headers }
            )
          )
          const fiber = yield* RefreshClient.refresh(first.requestToken).pipe(
            Effect.provide(RefreshClient.layer()),
            Effect.provide(server.layer),
            Effect.forkChild
          )
          yield* advanceTo(sleeps, first.now + Duration.toMillis(Duration.minutes(2)))
          const exit = Option.fromUndefinedOr(fiber.pollUnsafe())
          expect(Option.isSome(exit)).toBe(true)
          expect(server.requests.length).toBeGreaterThanOrEqual(1)
          expect(server.requests.length).toBeLessThanOrEqual(6)
          const planted = scenarios.flatMap((scenario) => scenario.body.planted)
          Option.map(exit, (exit) => {
            if (Exit.isSuccess(exit)) return expect(exit.value).toBeInstanceOf(Session.Session)
            expectTypedError(exit.cause, [first.requestToken, ...planted])
          })
        })
      ).pipe(atTime(scenarios[0]!.now), breathe),
    { arbitrary: { runs: 60 } }
  )
})

describe("Arbitrary values of the library's own schemas", () => {
  it.prop(
    "every RefreshError is recognised by isRefreshError, and only 5xx, a proxy's 401/403, transport and rate limits are retryable",
    { error: RefreshError.RefreshError },
    ({ error }) => {
      expect(RefreshError.isRefreshError(error)).toBe(true)
      const retryable = error._tag === "TransportError" || error._tag === "RateLimitedError" ||
        (error._tag === "ServerError" && (error.status >= 500 || error.status === 401 || error.status === 403))
      expect(RefreshError.isRetryable(error)).toBe(retryable)
    },
    { arbitrary: { runs: 500 } }
  )

  it.prop(
    "capMessage never returns more than 500 characters, and cuts only the end",
    { message: fc.oneof(unicodeString("grapheme"), hugeString) },
    ({ message }) => {
      const capped = capMessage(message)
      expect(capped.length).toBeLessThanOrEqual(maxMessageLength)
      expect(message.replace(/\s+/g, " ").trim().startsWith(capped.replace(/…$/, ""))).toBe(true)
    },
    { arbitrary: { runs: 500 } }
  )

  it.prop(
    "isRefreshError refuses anything that is not one",
    { value: anything },
    ({ value }) => {
      expect(RefreshError.isRefreshError(value)).toBe(false)
    },
    { arbitrary: { runs: 500 } }
  )
})

/**
 * The fault matrix as data: every fault, every entry point, and the outcome
 * each must have. `test/fault-matrix.test.ts` runs it, `test/leak-audit.test.ts`
 * runs it again with everything captured, and `renderMatrix` turns it into the
 * table of `docs/reliability.md` (a test checks that the doc says the same).
 *
 * Pure data and formatting: no test runner, no I/O, so `soak/matrix-doc.ts`
 * can import it too.
 */
import type { MockMoonServer } from "moon-refresh/testing"

// ---------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------

/** Where a program meets a refresh. */
export type EntryPoint = "RefreshClient" | "SessionManager" | "AuthHttpClient"

export const entryPoints: ReadonlyArray<EntryPoint> = ["RefreshClient", "SessionManager", "AuthHttpClient"]

export const entryPointTitle: Record<EntryPoint, string> = {
  RefreshClient: "`RefreshClient.refresh`",
  SessionManager: "`SessionManager.accessToken`",
  AuthHttpClient: "`AuthHttpClient` GET /protected"
}

/** The steps of one refresh at which it can be interrupted. */
export type Step = "before-send" | "headers" | "body" | "backoff" | "save"

export const stepTitle: Record<Step, string> = {
  "before-send": "before the request is sent",
  headers: "while waiting for the response headers",
  body: "while reading the response body",
  backoff: "during the backoff sleep between attempts",
  save: "during the store's save of the new session"
}

/** What is done to the refresh. */
export type Scenario =
  /** Faults queued on the MockMoonServer, one per `POST /auth/refresh`. */
  | {
    readonly _tag: "Script"
    readonly faults: ReadonlyArray<MockMoonServer.Fault>
    /** The server's reuse window in ms. Default 10 000 (Supabase's). */
    readonly reuseWindowMillis?: number
  }
  /** The store's next save of a session fails once. */
  | { readonly _tag: "SaveFails" }
  /**
   * The refresh is interrupted at `step`: by interrupting the caller's fiber,
   * or by closing the scope the `SessionManager` was built in (a shutdown).
   */
  | { readonly _tag: "Interrupt"; readonly step: Step; readonly by: "caller" | "scope" }
  /** The client's clock jumps by `millis` (the server's does not) before the entry point is called. */
  | { readonly _tag: "ClockJump"; readonly millis: number }

export interface Fault {
  /** A stable id, used as the test name's prefix. */
  readonly id: string
  /** What the fault is, in the doc's words (markdown). */
  readonly title: string
  readonly scenario: Scenario
  /** Set while src/ does not yet do what the row says: the doc flags the row, the test fails. */
  readonly failsToday?: string
}

/**
 * Where the refresh token is afterwards: in the store for the manager (and the
 * AuthHttpClient over it); for `RefreshClient.refresh`, in the caller's hands
 * (the returned session's token on success, the one it passed otherwise).
 *
 * - `new`: the newest token the server issued (live).
 * - `old`: the token from before, still live (the server did not rotate).
 * - `old-spent`: the token from before, spent by a rotation whose answer never
 *   arrived; a refresh with it inside the server's reuse window gets the session
 *   (the runner checks that it does).
 * - `cleared`: the refresh token was rejected; the manager signed out and cleared
 *   the store (for `RefreshClient`, the caller must sign in again).
 * - `new-after-save-retry`: the store kept the old token when the save failed;
 *   the manager's background retry stored the new one.
 */
export type Held = "new" | "old" | "old-spent" | "cleared" | "new-after-save-retry"

/** A typed error, by the fields a caller decides on. */
export interface ErrorSpec {
  readonly _tag:
    | "TransportError"
    | "ServerError"
    | "RateLimitedError"
    | "TokenRejectedError"
    | "MalformedResponseError"
  readonly status?: number
  readonly reason?: "Network" | "Timeout"
  readonly retryAfterMillis?: number
  readonly message?: string
}

export type Expected =
  /** A valid session (for AuthHttpClient: a 200 from /protected). `posts`: requests to /auth/refresh. */
  | { readonly _tag: "Session"; readonly posts: number; readonly held: Held }
  | { readonly _tag: "Fail"; readonly error: ErrorSpec; readonly posts: number; readonly held: Held }
  | { readonly _tag: "Interrupted"; readonly posts: number; readonly held: Held }
  | { readonly _tag: "NotApplicable"; readonly why: string }

export interface Case {
  readonly fault: Fault
  readonly entryPoint: EntryPoint
  readonly expected: Expected
}

// ---------------------------------------------------------------------------
// The test setup every case shares (stated in the doc)
// ---------------------------------------------------------------------------

/** Per attempt. Every fault that stalls longer than this is a timeout. */
export const attemptTimeoutMillis = 300

/** The fast policy: 10, 20, 40 ms between 4 attempts in all. */
export const fastPolicy = {
  base: "10 millis",
  maxRetries: 3,
  maxDelay: "50 millis",
  maxElapsed: "2 seconds",
  jitter: false
} as const

/** The policy of the backoff-interruption cases: long enough a sleep to interrupt. */
export const slowBackoffPolicy = {
  base: "250 millis",
  maxRetries: 3,
  maxDelay: "250 millis",
  maxElapsed: "2 seconds",
  jitter: false
} as const

/** Supabase's default reuse interval. */
export const defaultReuseWindowMillis = 10_000

/** How far the clock jumps in the clock cases. */
export const clockJumpMillis = 2 * 60 * 60 * 1000

// ---------------------------------------------------------------------------
// The faults
// ---------------------------------------------------------------------------

const proxyHtml = (status: number, text: string) =>
  `<html><head><title>${status} ${text}</title></head><body><center><h1>${status} ${text}</h1></center>` +
  `<hr><center>nginx</center></body></html>`

const times = <A>(n: number, a: A): ReadonlyArray<A> => Array.from({ length: n }, () => a)

/** Every attempt of one refresh (1 + `fastPolicy.maxRetries`). */
const everyAttempt = fastPolicy.maxRetries + 1

const script = (faults: ReadonlyArray<MockMoonServer.Fault>, reuseWindowMillis?: number): Scenario =>
  reuseWindowMillis === undefined
    ? { _tag: "Script", faults }
    : { _tag: "Script", faults, reuseWindowMillis }

const session = (posts: number, held: Held = "new"): Expected => ({ _tag: "Session", posts, held })
const fail = (error: ErrorSpec, posts: number, held: Held): Expected => ({ _tag: "Fail", error, posts, held })
const interrupted = (posts: number, held: Held): Expected => ({ _tag: "Interrupted", posts, held })
const notApplicable = (why: string): Expected => ({ _tag: "NotApplicable", why })

const alreadyUsed: ErrorSpec = {
  _tag: "TokenRejectedError",
  status: 500,
  message: "Invalid Refresh Token: Already Used"
}

/** One fault with the same outcome at every entry point. */
const everywhere = (fault: Fault, expected: Expected): ReadonlyArray<Case> =>
  entryPoints.map((entryPoint) => ({ fault, entryPoint, expected }))

/** One fault with an outcome per entry point. */
const perEntryPoint = (fault: Fault, expected: Record<EntryPoint, Expected>): ReadonlyArray<Case> =>
  entryPoints.map((entryPoint) => ({ fault, entryPoint, expected: expected[entryPoint] }))

const serverFaults: ReadonlyArray<Case> = [
  ...everywhere(
    {
      id: "status-500-once",
      title: "`Status` 500 `{\"message\":\"Internal server error\"}`, once",
      scenario: script([{ _tag: "Status", status: 500, body: { message: "Internal server error" } }])
    },
    session(2)
  ),
  ...everywhere(
    {
      id: "status-502-html-always",
      title: "`Status` 502 with a proxy's HTML page, on every attempt",
      scenario: script(times(everyAttempt, { _tag: "Status", status: 502, body: proxyHtml(502, "Bad Gateway") }))
    },
    fail({ _tag: "ServerError", status: 502, message: "502 Bad Gateway" }, everyAttempt, "old")
  ),
  ...everywhere(
    {
      id: "status-500-dead-token",
      title: "`Status` 500 `refresh_token_not_found` (a dead-token verdict)",
      scenario: script([{
        _tag: "Status",
        status: 500,
        body: { error_code: "refresh_token_not_found", msg: "Invalid Refresh Token: Refresh Token Not Found" }
      }])
    },
    fail(
      { _tag: "TokenRejectedError", status: 500, message: "Invalid Refresh Token: Refresh Token Not Found" },
      1,
      "cleared"
    )
  ),
  ...everywhere(
    {
      id: "status-404",
      title: "`Status` 404 (a wrong base URL): not retried",
      scenario: script([{
        _tag: "Status",
        status: 404,
        body: { statusCode: 404, message: "Cannot POST /auth/refresh" }
      }])
    },
    fail({ _tag: "ServerError", status: 404, message: "Cannot POST /auth/refresh" }, 1, "old")
  ),
  ...everywhere(
    {
      id: "delay-short",
      title: "`Delay` 50 ms",
      scenario: script([{ _tag: "Delay", millis: 50 }])
    },
    session(1)
  ),
  ...everywhere(
    {
      id: "delay-past-timeout-once",
      title: "`Delay` 60 s (past the 300 ms attempt timeout), once: the server sees the hang-up and does not rotate",
      scenario: script([{ _tag: "Delay", millis: 60_000 }])
    },
    session(2)
  ),
  ...everywhere(
    {
      id: "delay-past-timeout-always",
      title: "`Delay` 60 s on every attempt",
      scenario: script(times(everyAttempt, { _tag: "Delay", millis: 60_000 }))
    },
    fail({ _tag: "TransportError", reason: "Timeout" }, everyAttempt, "old")
  ),
  ...everywhere(
    { id: "reset-once", title: "`Reset` before answering, once", scenario: script([{ _tag: "Reset" }]) },
    session(2)
  ),
  ...everywhere(
    {
      id: "reset-always",
      title: "`Reset` before answering, on every attempt",
      scenario: script(times(everyAttempt, { _tag: "Reset" }))
    },
    fail({ _tag: "TransportError", reason: "Network" }, everyAttempt, "old")
  ),
  ...everywhere(
    {
      id: "reset-after-rotate-reuse-window",
      title: "`ResetAfterRotate` with a 10 s reuse window (Supabase's default)",
      scenario: script([{ _tag: "ResetAfterRotate" }])
    },
    session(2)
  ),
  ...everywhere(
    {
      id: "reset-after-rotate-no-reuse-window",
      title: "`ResetAfterRotate` with no reuse window",
      scenario: script([{ _tag: "ResetAfterRotate" }], 0)
    },
    fail(alreadyUsed, 2, "cleared")
  ),
  ...everywhere(
    { id: "slow-body", title: "`SlowBody` 50 ms", scenario: script([{ _tag: "SlowBody", millis: 50 }]) },
    session(1)
  ),
  ...everywhere(
    {
      id: "slow-body-past-timeout-reuse-window",
      title: "`SlowBody` 60 s (past the attempt timeout, after rotating), 10 s reuse window",
      scenario: script([{ _tag: "SlowBody", millis: 60_000 }])
    },
    session(2)
  ),
  ...everywhere(
    {
      id: "slow-body-past-timeout-no-reuse-window",
      title: "`SlowBody` 60 s (past the attempt timeout, after rotating), no reuse window",
      scenario: script([{ _tag: "SlowBody", millis: 60_000 }], 0)
    },
    fail(alreadyUsed, 2, "cleared")
  ),
  ...everywhere(
    {
      id: "truncated-reuse-window",
      title: "`Truncated` (after rotating), 10 s reuse window",
      scenario: script([{ _tag: "Truncated" }])
    },
    session(2)
  ),
  ...everywhere(
    {
      id: "truncated-no-reuse-window",
      title: "`Truncated` (after rotating), no reuse window",
      scenario: script([{ _tag: "Truncated" }], 0)
    },
    fail(alreadyUsed, 2, "cleared")
  ),
  ...everywhere(
    {
      id: "retry-after-429-zero",
      title: "`RetryAfter` 429, `Retry-After: 0`, once",
      scenario: script([{ _tag: "RetryAfter", status: 429, value: 0 }])
    },
    session(2)
  ),
  ...everywhere(
    {
      id: "retry-after-503-zero",
      title: "`RetryAfter` 503, `Retry-After: 0`, once",
      scenario: script([{ _tag: "RetryAfter", status: 503, value: 0 }])
    },
    session(2)
  ),
  ...everywhere(
    {
      id: "retry-after-429-hour",
      title: "`RetryAfter` 429, `Retry-After: 3600` (past the policy's 2 s budget: not retried)",
      scenario: script([{ _tag: "RetryAfter", status: 429, value: 3600 }])
    },
    fail(
      { _tag: "RateLimitedError", status: 429, retryAfterMillis: 3_600_000, message: "Request rate limit reached" },
      1,
      "old"
    )
  ),
  ...everywhere(
    {
      id: "oversized",
      title: "`Oversized` 2 MiB 200 with a `Content-Length`",
      scenario: script([{ _tag: "Oversized", bytes: 2 * 1024 * 1024 }])
    },
    fail(
      { _tag: "MalformedResponseError", status: 200, message: "response body is larger than 1048576 bytes" },
      1,
      "old"
    )
  ),
  ...everywhere(
    {
      id: "oversized-chunked",
      title: "`Oversized` 2 MiB 200, chunked (no `Content-Length`)",
      scenario: script([{ _tag: "Oversized", bytes: 2 * 1024 * 1024, chunked: true }])
    },
    fail(
      { _tag: "MalformedResponseError", status: 200, message: "response body is larger than 1048576 bytes" },
      1,
      "old"
    )
  ),
  ...everywhere(
    {
      id: "wrong-content-type",
      title: "`WrongContentType` (a session under `text/html`)",
      scenario: script([{ _tag: "WrongContentType" }])
    },
    session(1)
  ),
  ...everywhere(
    {
      id: "redirect-302",
      title: "`Redirect` 302 to another host: refused, not retried, the token never sent there",
      scenario: script([{ _tag: "Redirect", status: 302, location: "https://attacker.example/auth/refresh" }])
    },
    fail({ _tag: "ServerError", status: 302 }, 1, "old")
  ),
  ...everywhere(
    {
      id: "status-403-html-once",
      title: "`Status` 403 with a proxy's HTML page (not the auth server's verdict), once",
      scenario: script([{ _tag: "Status", status: 403, body: proxyHtml(403, "Forbidden") }])
    },
    session(2)
  ),
  ...everywhere(
    {
      id: "status-403-html-always",
      title: "`Status` 403 with a proxy's HTML page, on every attempt: retried, the session kept",
      scenario: script(times(everyAttempt, { _tag: "Status", status: 403, body: proxyHtml(403, "Forbidden") }))
    },
    fail({ _tag: "ServerError", status: 403, message: "403 Forbidden" }, everyAttempt, "old")
  ),
  ...perEntryPoint(
    {
      id: "rotated-expired-on-arrival",
      title:
        "`PatchedSession` `expires_in: 0` (rotates, but the session is expired on arrival): the new refresh token is kept",
      scenario: script([{ _tag: "PatchedSession", patch: { expires_in: 0, expires_at: 0 } }])
    },
    {
      // The caller gets the new token in the error (`rotatedRefreshToken`); the one it passed is spent.
      RefreshClient: fail(
        {
          _tag: "MalformedResponseError",
          status: 200,
          message: "response is not a session: invalid field \"expires_in\""
        },
        1,
        "old-spent"
      ),
      SessionManager: fail(
        {
          _tag: "MalformedResponseError",
          status: 200,
          message: "response is not a session: invalid field \"expires_in\""
        },
        1,
        "new"
      ),
      AuthHttpClient: fail(
        {
          _tag: "MalformedResponseError",
          status: 200,
          message: "response is not a session: invalid field \"expires_in\""
        },
        1,
        "new"
      )
    }
  )
]

const noStore = "`RefreshClient` has no store: the caller saves"

const storeFaults: ReadonlyArray<Case> = perEntryPoint(
  {
    id: "store-save-fails",
    title: "The store fails the save of the new session, once",
    scenario: { _tag: "SaveFails" }
  },
  {
    RefreshClient: notApplicable(noStore),
    SessionManager: session(1, "new-after-save-retry"),
    AuthHttpClient: session(1, "new-after-save-retry")
  }
)

const callerInterrupted = (step: Step): Fault => ({
  id: `caller-interrupted-${step}`,
  title: `The caller is interrupted ${stepTitle[step]}`,
  scenario: { _tag: "Interrupt", step, by: "caller" }
})

const scopeClosed = (step: Step, failsToday?: string): Fault => ({
  id: `scope-closed-${step}`,
  title: `The manager's scope closes (shutdown) ${stepTitle[step]}`,
  scenario: { _tag: "Interrupt", step, by: "scope" },
  ...(failsToday === undefined ? {} : { failsToday })
})

// A waiting caller that gives up does not abort the refresh the others wait
// for: the refresh finishes and is stored. The RefreshClient caller owns its
// refresh: interrupting it aborts the request.
const callerInterruptions: ReadonlyArray<Case> = [
  ...perEntryPoint(callerInterrupted("before-send"), {
    RefreshClient: interrupted(0, "old"),
    SessionManager: interrupted(1, "new"),
    AuthHttpClient: interrupted(1, "new")
  }),
  ...perEntryPoint(callerInterrupted("headers"), {
    RefreshClient: interrupted(1, "old"),
    SessionManager: interrupted(1, "new"),
    AuthHttpClient: interrupted(1, "new")
  }),
  ...perEntryPoint(callerInterrupted("body"), {
    RefreshClient: interrupted(1, "old-spent"),
    SessionManager: interrupted(1, "new"),
    AuthHttpClient: interrupted(1, "new")
  }),
  ...perEntryPoint(callerInterrupted("backoff"), {
    RefreshClient: interrupted(1, "old"),
    SessionManager: interrupted(2, "new"),
    AuthHttpClient: interrupted(2, "new")
  }),
  ...perEntryPoint(callerInterrupted("save"), {
    RefreshClient: notApplicable(noStore),
    SessionManager: interrupted(1, "new"),
    AuthHttpClient: interrupted(1, "new")
  })
]

const noScope = "`RefreshClient.refresh` runs in the caller's fiber: see \"the caller is interrupted\""

// A shutdown aborts the refresh in flight (its request included).
const scopeClosings: ReadonlyArray<Case> = [
  ...perEntryPoint(scopeClosed("before-send"), {
    RefreshClient: notApplicable(noScope),
    SessionManager: interrupted(0, "old"),
    AuthHttpClient: interrupted(0, "old")
  }),
  ...perEntryPoint(scopeClosed("headers"), {
    RefreshClient: notApplicable(noScope),
    SessionManager: interrupted(1, "old"),
    AuthHttpClient: interrupted(1, "old")
  }),
  ...perEntryPoint(scopeClosed("body"), {
    RefreshClient: notApplicable(noScope),
    SessionManager: interrupted(1, "old-spent"),
    AuthHttpClient: interrupted(1, "old-spent")
  }),
  ...perEntryPoint(scopeClosed("backoff"), {
    RefreshClient: notApplicable(noScope),
    SessionManager: interrupted(1, "old"),
    AuthHttpClient: interrupted(1, "old")
  }),
  // The response is in hand and the server has rotated: the save must finish.
  ...perEntryPoint(scopeClosed("save"), {
    RefreshClient: notApplicable(noScope),
    SessionManager: interrupted(1, "new"),
    AuthHttpClient: interrupted(1, "new")
  })
]

const clockFaults: ReadonlyArray<Case> = [
  ...perEntryPoint(
    {
      id: "clock-forward",
      title: "The client's clock jumps 2 h forward (a sleeping laptop, an NTP step)",
      scenario: { _tag: "ClockJump", millis: clockJumpMillis }
    },
    { RefreshClient: session(1), SessionManager: session(1), AuthHttpClient: session(1) }
  ),
  ...perEntryPoint(
    {
      id: "clock-backward",
      title: "The client's clock jumps 2 h backward",
      scenario: { _tag: "ClockJump", millis: -clockJumpMillis }
    },
    // The stored token still looks valid (and is): no refresh needed.
    { RefreshClient: session(1), SessionManager: session(0, "old"), AuthHttpClient: session(0, "old") }
  )
]

/** Every case, in the doc's order. */
export const cases: ReadonlyArray<Case> = [
  ...serverFaults,
  ...storeFaults,
  ...callerInterruptions,
  ...scopeClosings,
  ...clockFaults
]

/** The faults, once each, in order. */
export const faults: ReadonlyArray<Fault> = cases.reduce<Array<Fault>>(
  (all, c) => (all.some((f) => f.id === c.fault.id) ? all : [...all, c.fault]),
  []
)

// ---------------------------------------------------------------------------
// The doc's table
// ---------------------------------------------------------------------------

const heldText = (entryPoint: EntryPoint, held: Held): string => {
  const subject = entryPoint === "RefreshClient" ? "caller holds" : "store"
  switch (held) {
    case "new":
      return `${subject}: new token`
    case "old":
      return `${subject}: old token (still live)`
    case "old-spent":
      return `${subject}: old token, spent; a refresh within the reuse window recovers the session`
    case "cleared":
      return entryPoint === "RefreshClient" ? "the caller must sign in again" : "signed out, store cleared"
    case "new-after-save-retry":
      return `${subject}: old token until the background save retry stores the new one`
  }
}

const errorText = (error: ErrorSpec): string => {
  const details = [
    error.status === undefined ? undefined : String(error.status),
    error.reason,
    error.retryAfterMillis === undefined ? undefined : `retry after ${error.retryAfterMillis / 1000} s`,
    error.message === undefined ? undefined : `"${error.message}"`
  ].filter((detail) => detail !== undefined)
  return `\`${error._tag}\`${details.length === 0 ? "" : ` (${details.join(", ")})`}`
}

const posts = (n: number) => `${n} POST${n === 1 ? "" : "s"}`

/** One cell of the table. */
export const outcomeText = (entryPoint: EntryPoint, expected: Expected): string => {
  switch (expected._tag) {
    case "Session":
      return [
        entryPoint === "AuthHttpClient" ? "200" : "session",
        posts(expected.posts),
        heldText(entryPoint, expected.held)
      ].join("; ")
    case "Fail":
      return [errorText(expected.error), posts(expected.posts), heldText(entryPoint, expected.held)].join("; ")
    case "Interrupted":
      return ["interrupted", posts(expected.posts), heldText(entryPoint, expected.held)].join("; ")
    case "NotApplicable":
      return `n/a: ${expected.why}`
  }
}

const escapeCell = (text: string) => text.replace(/\|/g, "\\|")

/** The markdown table: one row per fault, one column per entry point. */
export const renderMatrix = (all: ReadonlyArray<Case> = cases): string => {
  const header = `| Fault | ${entryPoints.map((entryPoint) => entryPointTitle[entryPoint]).join(" | ")} |`
  const rule = `| --- | ${entryPoints.map(() => "---").join(" | ")} |`
  const ids = [...new Set(all.map((c) => c.fault.id))]
  const rows = ids.map((id) => {
    const row = all.filter((c) => c.fault.id === id)
    const cells = entryPoints.map((entryPoint) => {
      const found = row.find((c) => c.entryPoint === entryPoint)
      return found === undefined ? "" : escapeCell(outcomeText(entryPoint, found.expected))
    })
    const fault = row[0]!.fault
    const title = fault.failsToday === undefined ? fault.title : `${fault.title} **(fails today: ${fault.failsToday})**`
    return `| ${escapeCell(title)} | ${cells.join(" | ")} |`
  })
  return [header, rule, ...rows].join("\n")
}

export const matrixStart =
  "<!-- fault-matrix:start (generated from test/support/FaultMatrix.ts by `npx tsx soak/matrix-doc.ts`) -->"
export const matrixEnd = "<!-- fault-matrix:end -->"

/** The doc with its generated block replaced by the current table. */
export const withMatrix = (doc: string): string => {
  const start = doc.indexOf(matrixStart)
  const end = doc.indexOf(matrixEnd)
  if (start === -1 || end === -1 || end < start) {
    throw new globalThis.Error("docs/reliability.md has no fault-matrix markers")
  }
  return `${doc.slice(0, start + matrixStart.length)}\n${renderMatrix()}\n${doc.slice(end)}`
}

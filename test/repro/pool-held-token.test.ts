/**
 * Kept out of every suite (`npx vitest run --config vitest.repro.config.ts`):
 * the diagnosis of the failure once seen at test/SessionPool.integration.test.ts:103
 * ("a key's held refresh token was not live on the server at the end").
 *
 * The same run as that test (1,000 keys, 8 s tokens, readers, real HTTP, real
 * time), with the RefreshClient wrapped to note, per refresh token, when its
 * POST went out and when its answer came back. At the end, every key whose
 * held token is not live is classified:
 *
 * - "in flight": its POST was out (or answered) when the check read the
 *   pool, and the pool then took the answer: the check raced a refresh;
 * - "lost": the held token was spent by a POST whose answer the pool never
 *   took, or by no POST of ours: a rotation really lost.
 *
 * It prints the counts and fails only on a "lost" key.
 */
import { describe, expect, it } from "@effect/vitest"
import { Context, Duration, Effect, Fiber, Layer, Option, Redacted } from "effect"
import { FetchHttpClient } from "effect/http"
import { RefreshClient, Session, SessionPool, SessionStore } from "moon-refresh"
import { MockMoonServer } from "moon-refresh/testing"

const keys = Array.from({ length: 1_000 }, (_, i) => `user-${i}`)
const runFor = Duration.seconds(24)

interface Note {
  sentAt: number
  answeredAt?: number
  next?: string
  failed?: string
}

describe("repro: the pool's held token at the end of a real-time run", () => {
  it.live(
    "every key whose held token is not live had its refresh in flight at the check",
    () =>
      Effect.gen(function*() {
        const server = yield* MockMoonServer.make({ accessTokenLifetime: 8, reuseWindow: 0 })
        const keyed = yield* SessionStore.makeMemoryKeyed
        const notes = new Map<string, Note>()
        const started = Date.now()
        const since = () => Date.now() - started
        const noting = Layer.effect(
          RefreshClient.RefreshClient,
          Effect.map(RefreshClient.RefreshClient, (client): RefreshClient.Service => ({
            refresh: (token) =>
              Effect.suspend(() => {
                const note: Note = { sentAt: since() }
                notes.set(Redacted.value(token), note)
                return client.refresh(token).pipe(
                  Effect.tap((session) =>
                    Effect.sync(() => {
                      note.answeredAt = since()
                      note.next = Redacted.value(session.refreshToken)
                    })
                  ),
                  Effect.tapError((error) =>
                    Effect.sync(() => {
                      note.answeredAt = since()
                      note.failed = error._tag
                    })
                  )
                )
              })
          }))
        ).pipe(Layer.provide(RefreshClient.layer({ baseUrl: server.url, timeout: "60 seconds" })))
        const pool = Context.get(
          yield* Layer.build(
            SessionPool.layer({
              session: { margin: "2 seconds", minInterval: 0, cooldown: "200 millis" },
              idleTimeToLive: "1 hour",
              maxConcurrentRefreshes: 32
            }).pipe(
              Layer.provide(noting),
              Layer.provide(FetchHttpClient.layer),
              Layer.provide(Layer.succeed(SessionStore.KeyedSessionStore, keyed))
            )
          ),
          SessionPool.SessionPool
        )
        for (const key of keys) {
          const session = Session.unsafeMake(yield* server.issueSession({ user: { id: key } }))
          yield* (yield* keyed.forKey(key)).save(session)
        }
        const reader = (key: string) =>
          Effect.forever(Effect.andThen(Effect.ignore(pool.accessToken(key)), Effect.sleep("200 millis")))
        const readers = yield* Effect.forkChild(
          Effect.forEach([...keys, ...keys], reader, { concurrency: "unbounded", discard: true })
        )
        yield* Effect.sleep(runFor)
        yield* Fiber.interrupt(readers)

        // The check of the suite's test, noting for each failure where the held token's refresh was.
        const checkAt = since()
        const suspects: Array<{ key: string; held: string; note: Note | undefined; inFlight: number }> = []
        for (const key of keys) {
          const held = Redacted.value(Option.getOrThrow(yield* pool.current(key)).refreshToken)
          if (!(yield* server.isLive(held))) {
            const note = notes.get(held)
            suspects.push({ key, held, note: note && { ...note }, inFlight: (yield* pool.stats).refreshesInFlight })
          }
        }
        const checkEnd = since()

        // Then, for each suspect, wait (up to 20 s) for the pool to take the answer of the POST that spent its token.
        const outcomes = yield* Effect.forEach(suspects, ({ held, key, note }) =>
          Effect.gen(function*() {
            if (note === undefined) return "lost: spent by no POST of ours"
            for (let i = 0; i < 200; i++) {
              const now = Redacted.value(Option.getOrThrow(yield* pool.current(key)).refreshToken)
              if (now !== held) {
                const after = notes.get(held)
                return after?.next === now || notes.has(after?.next ?? "")
                  ? "in flight: the pool took the answer after the check"
                  : "lost: the pool moved to a token that is not the answer"
              }
              yield* Effect.sleep("100 millis")
            }
            return "lost: the answer never reached the pool"
          }))
        const byOutcome = outcomes.reduce<Record<string, number>>(
          (all, outcome) => ({ ...all, [outcome]: (all[outcome] ?? 0) + 1 }),
          {}
        )
        const stats = yield* server.stats
        const sent = suspects.filter((s) => s.note !== undefined)
        console.log(
          `repro: check from ${checkAt} to ${checkEnd} ms; ${suspects.length} keys held a token that was not live: ` +
            `${JSON.stringify(byOutcome)}; their POSTs went out ${
              sent.map((s) => s.note!.sentAt - checkAt).join(", ")
            } ms from the check's start, answered ${
              sent.map((s) => (s.note!.answeredAt === undefined ? "not yet" : s.note!.answeredAt - checkAt)).join(", ")
            }; refreshes in flight at those reads ${suspects.map((s) => s.inFlight).join(", ")}; server ${
              JSON.stringify(stats)
            }`
        )
        expect(outcomes.filter((outcome) => outcome.startsWith("lost"))).toStrictEqual([])
        expect(stats.reuseRejections).toBe(0)
      }),
    120_000
  )
})

// Issue 20, behaviour 9: holders sharing a store refreshed up to once each per
// expiry when the token lived no longer than the margin (default 60 s; 4 s,
// 5 s and 30 s tokens measured): N holders cost N rotations. `isAdoptable`
// compared a just-written session with the unclamped margin, and the default
// 30 s minimum interval pinned every holder's refresh at 1 s before expiry,
// cancelling the jitter (docs/08 promises one refresh per expiry).
import { describe, expect, it } from "@effect/vitest"
import { minute, second, trace, world } from "./engine.js"

// Three managers with default options on one shared store, everything answered,
// for two minutes; the POSTs each session of `lifetime` got.
const run = (lifetime: number) => {
  const w = world({ holders: 3, instant: true, lifetime })
  w.runFor(2 * minute)
  // Rotations the server made, per session it issued by a refresh: one each at most, and not early.
  const early = w.posts.filter((post) => {
    const grant = w.server.grantOf(post.token)!
    return grant.byRefresh && post.at < grant.issuedAt + (grant.expiresAt - grant.issuedAt) / 4
  })
  return { w, early }
}

// At most one refresh per half lifetime: what one holder alone does with a clamped margin.
const bound = (lifetime: number) => (2 * minute) / (lifetime / 2) + 1

describe("engine 9: holders sharing a store refresh once per expiry", () => {
  for (const lifetime of [30 * second, 5 * second]) {
    it(`with ${lifetime / second} s tokens, three holders refresh no more often than one would`, () => {
      const { early, w } = run(lifetime)
      expect(early.map((p) => `${p.holder} ${p.token} at ${p.at / 1000} s`), trace(w)).toStrictEqual([])
      expect(w.posts.length, trace(w)).toBeLessThanOrEqual(bound(lifetime))
      expect(w.server.reuses, trace(w)).toBe(0)
    })
  }
})

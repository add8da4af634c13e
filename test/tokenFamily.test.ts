import { describe, expect, it } from "@effect/vitest"
import { Redacted } from "effect"
import * as TokenFamily from "../src/testing/internal/tokenFamily.js"

// Readable tokens: the nth pair the model asked for is access-n / refresh-n.
const model = (reuseWindowMillis = 0, reuse?: TokenFamily.ReuseMode) => {
  let n = 0
  return TokenFamily.make<string>({
    reuseWindowMillis,
    reuse,
    newTokens: () => {
      n++
      return { accessToken: `access-${n}`, refreshToken: `refresh-${n}` }
    }
  })
}

const rotatedTo = (rotation: TokenFamily.Rotation<string>) =>
  "grant" in rotation ? [rotation.outcome, rotation.grant.accessToken, rotation.grant.refreshToken] : [rotation.outcome]

describe("tokenFamily", () => {
  describe("issue and rotate", () => {
    it("issues a family whose first refresh token is live", () => {
      const families = model()
      const first = families.issue("ada", 0, 1_000)
      expect([first.accessToken, first.refreshToken, first.expiresAt, first.family.data]).toStrictEqual([
        "access-1",
        "refresh-1",
        1_000,
        "ada"
      ])
      expect(families.isLive("refresh-1")).toBe(true)
      expect(families.isLive(Redacted.make("refresh-1"))).toBe(true)
    })

    it("takes the first pair from the caller when given", () => {
      const families = model()
      const named = families.issue("ada", 0, 1_000, { accessToken: "access-ada", refreshToken: "refresh-ada" })
      expect(named.refreshToken).toBe("refresh-ada")
      expect(families.isKnown("refresh-ada")).toBe(true)
      expect(rotatedTo(families.rotate("refresh-ada", 0, 1_000))).toStrictEqual(["rotated", "access-1", "refresh-1"])
    })

    it("a rotation spends the token, issues the next pair in the same family, and carries the expiry given", () => {
      const families = model()
      const first = families.issue("ada", 0, 1_000)
      const rotation = families.rotate(first.refreshToken, 500, 2_000)
      expect(rotatedTo(rotation)).toStrictEqual(["rotated", "access-2", "refresh-2"])
      expect("grant" in rotation && [rotation.grant.expiresAt, rotation.grant.family]).toStrictEqual([
        2_000,
        first.family
      ])
      expect([families.isLive("refresh-1"), families.isLive("refresh-2")]).toStrictEqual([false, true])
      expect(families.stats()).toStrictEqual({ rotations: 1, reuseRejections: 0, reusesTolerated: 0, unknownTokens: 0 })
    })

    it("keeps families apart: a reuse in one leaves the other live", () => {
      const families = model()
      const ada = families.issue("ada", 0, 1_000)
      const bob = families.issue("bob", 0, 1_000)
      families.rotate(ada.refreshToken, 0, 1_000)
      families.rotate(ada.refreshToken, 0, 1_000)
      expect(families.isLive(bob.refreshToken)).toBe(true)
    })

    it("refuses to issue a refresh token twice", () => {
      const families = model()
      families.issue("ada", 0, 1_000, { accessToken: "a", refreshToken: "same" })
      expect(() => families.issue("bob", 0, 1_000, { accessToken: "b", refreshToken: "same" })).toThrow(
        "issued twice"
      )
    })
  })

  describe("reuse", () => {
    it("a spent token presented again revokes the whole family, the newest token too", () => {
      const families = model()
      const first = families.issue("ada", 0, 1_000)
      families.rotate(first.refreshToken, 0, 1_000)
      expect(families.rotate(first.refreshToken, 0, 1_000)).toStrictEqual({ outcome: "reuse-rejected" })
      expect(families.isLive("refresh-2")).toBe(false)
      expect(families.rotate("refresh-2", 0, 1_000)).toStrictEqual({ outcome: "reuse-rejected" })
      expect(families.stats()).toMatchObject({ rotations: 1, reuseRejections: 2 })
    })

    it("within the window, a reuse of the token spent last gets the same successor and a new access token", () => {
      const families = model(10_000)
      const first = families.issue("ada", 0, 1_000)
      families.rotate(first.refreshToken, 1_000, 5_000)
      const again = families.rotate(first.refreshToken, 11_000, 15_000)
      expect(rotatedTo(again)).toStrictEqual(["reuse-tolerated", "access-3", "refresh-2"])
      expect(families.isLive("refresh-2")).toBe(true)
      // The window closes 10 s after the rotation, inclusive.
      expect(families.rotate(first.refreshToken, 11_001, 15_000)).toStrictEqual({ outcome: "reuse-rejected" })
      expect(families.stats()).toMatchObject({ rotations: 1, reusesTolerated: 1, reuseRejections: 1 })
    })

    it("the window does not cover a token two rotations back", () => {
      const families = model(60_000)
      const first = families.issue("ada", 0, 1_000)
      families.rotate(first.refreshToken, 0, 1_000)
      families.rotate("refresh-2", 0, 1_000)
      expect(families.rotate(first.refreshToken, 0, 1_000)).toStrictEqual({ outcome: "reuse-rejected" })
    })

    it("a window of 0 tolerates nothing, not even a reuse in the same millisecond", () => {
      const families = model(0)
      const first = families.issue("ada", 0, 1_000)
      families.rotate(first.refreshToken, 0, 1_000)
      expect(families.rotate(first.refreshToken, 0, 1_000)).toStrictEqual({ outcome: "reuse-rejected" })
    })
  })

  // Supabase's auth server (GoTrue, RefreshTokenGrant): the parent of the active
  // token is always forgiven, an older one only within the reuse interval.
  describe("reuse: gotrue", () => {
    const gotrue = (intervalMillis = 10_000) => model(intervalMillis, "gotrue")

    it("forgives the parent of the active token however late, with the active token and no new rotation", () => {
      const families = gotrue()
      const first = families.issue("ada", 0, 1_000)
      families.rotate(first.refreshToken, 0, 5_000)
      // An hour later, far past the interval: the client that lost the answer retries.
      const again = families.rotate(first.refreshToken, 3_600_000, 3_700_000)
      expect(rotatedTo(again)).toStrictEqual(["reuse-tolerated", "access-3", "refresh-2"])
      // And again: still the parent of the active token, still forgiven.
      expect(rotatedTo(families.rotate(first.refreshToken, 7_200_000, 7_300_000))).toStrictEqual([
        "reuse-tolerated",
        "access-4",
        "refresh-2"
      ])
      expect(families.isLive("refresh-2")).toBe(true)
      expect(families.stats()).toStrictEqual({ rotations: 1, reuseRejections: 0, reusesTolerated: 2, unknownTokens: 0 })
    })

    it("forgives an older token within the interval after it was spent, answering with the active token", () => {
      const families = gotrue(10_000)
      const first = families.issue("ada", 0, 1_000)
      families.rotate(first.refreshToken, 1_000, 5_000) // refresh-1 spent at 1 s
      families.rotate("refresh-2", 2_000, 5_000) // refresh-2 spent at 2 s; refresh-3 is active
      // refresh-1 is two rotations back: forgiven until 11 s (inclusive), with the active token.
      expect(rotatedTo(families.rotate(first.refreshToken, 11_000, 15_000))).toStrictEqual([
        "reuse-tolerated",
        "access-4",
        "refresh-3"
      ])
      expect(families.isLive("refresh-3")).toBe(true)
      expect(families.stats()).toMatchObject({ rotations: 2, reusesTolerated: 1, reuseRejections: 0 })
    })

    it("revokes the whole family for an older token past the interval: the active token dies with it", () => {
      const families = gotrue(10_000)
      const first = families.issue("ada", 0, 1_000)
      families.rotate(first.refreshToken, 1_000, 5_000)
      families.rotate("refresh-2", 2_000, 5_000)
      expect(families.rotate(first.refreshToken, 11_001, 15_000)).toStrictEqual({ outcome: "reuse-rejected" })
      expect(families.isLive("refresh-3")).toBe(false)
      // A revoked family stays revoked: even the former parent of the active token is a reuse now.
      expect(families.rotate("refresh-2", 11_002, 15_000)).toStrictEqual({ outcome: "reuse-rejected" })
      expect(families.rotate("refresh-3", 11_003, 15_000)).toStrictEqual({ outcome: "reuse-rejected" })
      expect(families.stats()).toMatchObject({ rotations: 2, reusesTolerated: 0, reuseRejections: 3 })
    })

    it("with an interval of 0 forgives only the parent of the active token", () => {
      const families = gotrue(0)
      const first = families.issue("ada", 0, 1_000)
      families.rotate(first.refreshToken, 0, 1_000)
      expect(rotatedTo(families.rotate(first.refreshToken, 0, 1_000))[0]).toBe("reuse-tolerated")
      families.rotate("refresh-2", 0, 1_000)
      // refresh-1 is no longer the parent of the active token (refresh-3's is refresh-2).
      expect(families.rotate(first.refreshToken, 0, 1_000)).toStrictEqual({ outcome: "reuse-rejected" })
    })

    it("the default window mode does not forgive the parent of the active token outside the window", () => {
      const families = model(10_000)
      const first = families.issue("ada", 0, 1_000)
      families.rotate(first.refreshToken, 0, 5_000)
      expect(families.rotate(first.refreshToken, 10_001, 15_000)).toStrictEqual({ outcome: "reuse-rejected" })
    })

    it("defaults the interval to GoTrue's 10 seconds in gotrue mode and to none in window mode", () => {
      expect([
        TokenFamily.defaultReuseWindowMillis("gotrue"),
        TokenFamily.defaultReuseWindowMillis("window"),
        TokenFamily.defaultReuseWindowMillis(undefined)
      ]).toStrictEqual([10_000, 0, 0])
    })
  })

  describe("revoke and unknown tokens", () => {
    it("a token never issued is unknown", () => {
      const families = model()
      expect(families.rotate("never-issued", 0, 1_000)).toStrictEqual({ outcome: "unknown-token" })
      expect([families.isKnown("never-issued"), families.isLive("never-issued")]).toStrictEqual([false, false])
      expect(families.stats().unknownTokens).toBe(1)
    })

    it("revoke signs the family out: every token of it is then unknown, a reuse-revoked family too", () => {
      const families = model()
      const first = families.issue("ada", 0, 1_000)
      families.rotate(first.refreshToken, 0, 1_000)
      families.revoke(Redacted.make("refresh-2"))
      expect(families.isLive("refresh-2")).toBe(false)
      expect(families.rotate("refresh-2", 0, 1_000)).toStrictEqual({ outcome: "unknown-token" })
      expect(families.rotate(first.refreshToken, 0, 1_000)).toStrictEqual({ outcome: "unknown-token" })
      expect(families.stats()).toMatchObject({ unknownTokens: 2, reuseRejections: 0 })
      // Revoking a token never issued changes nothing.
      families.revoke("never-issued")
      expect(families.stats().unknownTokens).toBe(2)
    })
  })

  describe("access tokens", () => {
    it("are valid until their expiry, then expired; unknown when never issued", () => {
      const families = model()
      const first = families.issue("ada", 0, 1_000)
      const valid = families.checkAccess(first.accessToken, 999)
      expect(valid.status === "valid" && valid.family.data).toBe("ada")
      expect(families.checkAccess(first.accessToken, 1_000)).toStrictEqual({ status: "expired" })
      expect(families.checkAccess("a.b.c", 0)).toStrictEqual({ status: "unknown" })
    })

    it("stop working when their family is revoked, by a reuse or a sign-out", () => {
      const families = model()
      const reused = families.issue("ada", 0, 1_000)
      families.rotate(reused.refreshToken, 0, 1_000)
      families.rotate(reused.refreshToken, 0, 1_000)
      expect(families.checkAccess("access-2", 0)).toStrictEqual({ status: "revoked" })
      const signedOut = families.issue("bob", 0, 1_000)
      families.revoke(signedOut.refreshToken)
      expect(families.checkAccess(signedOut.accessToken, 0)).toStrictEqual({ status: "revoked" })
    })
  })

  it("lists every token issued, each grant's access token first, as Redacted copies", () => {
    const families = model(10_000)
    const first = families.issue("ada", 0, 1_000)
    families.rotate(first.refreshToken, 0, 1_000)
    families.rotate(first.refreshToken, 0, 1_000)
    const issued = families.issued()
    expect(issued.every(Redacted.isRedacted)).toBe(true)
    expect(issued.map(Redacted.value)).toStrictEqual(["access-1", "refresh-1", "access-2", "refresh-2", "access-3"])
    families.issue("bob", 0, 1_000)
    expect(issued).toHaveLength(5)
  })
})

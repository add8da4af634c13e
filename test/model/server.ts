/**
 * A strict Moon server for the model checker: refresh tokens in families,
 * single use, no reuse window. Presenting a spent token revokes its family.
 * Besides answering, it remembers what the checker needs: which token was
 * spent by which answer, whether the client ever saw that answer, and when
 * each session was issued.
 */
import { Session } from "moon-refresh"

export interface Grant {
  readonly family: Family
  /** 0 for the family's first session. */
  readonly index: number
  readonly accessToken: string
  readonly refreshToken: string
  readonly issuedAt: number
  readonly expiresAt: number
  /** Issued as the answer of a refresh (its lifetime counts from `issuedAt`). */
  readonly byRefresh: boolean
  /** The client received it (false while in flight, and for an answer that was lost). */
  delivered: boolean
  /** The grant that replaced this one's refresh token, once spent. */
  successor: Grant | undefined
  readonly session: Session.Session
}

export interface Family {
  readonly id: string
  /** The key (pool) or "" (managers) it was signed in for. */
  readonly key: string
  readonly grants: Array<Grant>
  /** `"reuse"`: a spent token came back; `"rejected"`: the server revoked it (a scripted rejection). */
  revoked: "reuse" | "rejected" | undefined
}

/** What the server did with one request. */
export type Processed =
  | { readonly _tag: "Rotated"; readonly grant: Grant }
  | { readonly _tag: "Rejected"; readonly why: "reuse" | "revoked" | "unknown" | "scripted" }

export class Server {
  private readonly byToken = new Map<string, Grant>()
  readonly families: Array<Family> = []
  reuses = 0
  rotations = 0

  constructor(private readonly lifetime: number) {}

  /** A sign-in: a new family and its first session. */
  issue(key: string, now: number): Grant {
    const family: Family = { id: `F${this.families.length}`, key, grants: [], revoked: undefined }
    this.families.push(family)
    return this.grant(family, now, false)
  }

  private grant(family: Family, now: number, byRefresh: boolean): Grant {
    const index = family.grants.length
    const accessToken = `a.${family.id}.${index}`
    const refreshToken = `r.${family.id}.${index}`
    const expiresAt = now + this.lifetime
    const grant: Grant = {
      family,
      index,
      accessToken,
      refreshToken,
      issuedAt: now,
      expiresAt,
      byRefresh,
      delivered: false,
      successor: undefined,
      session: Session.unsafeMake({ accessToken, refreshToken, expiresAt, user: { id: `user-${family.id}` } })
    }
    family.grants.push(grant)
    this.byToken.set(refreshToken, grant)
    return grant
  }

  grantOf(refreshToken: string): Grant | undefined {
    return this.byToken.get(refreshToken)
  }

  /** The family's newest grant. */
  newest(family: Family): Grant {
    return family.grants[family.grants.length - 1]!
  }

  /** Spent: the server already rotated it. */
  isSpent(refreshToken: string): boolean {
    return this.byToken.get(refreshToken)?.successor !== undefined
  }

  /** The refresh grant. `reject`: the server revokes a live family instead (an admin sign-out). */
  process(refreshToken: string, now: number, reject: boolean): Processed {
    const grant = this.byToken.get(refreshToken)
    if (grant === undefined) return { _tag: "Rejected", why: "unknown" }
    const family = grant.family
    if (grant.successor !== undefined) {
      this.reuses++
      family.revoked ??= "reuse"
      return { _tag: "Rejected", why: "reuse" }
    }
    if (family.revoked !== undefined) return { _tag: "Rejected", why: "revoked" }
    if (reject) {
      family.revoked = "rejected"
      return { _tag: "Rejected", why: "scripted" }
    }
    const next = this.grant(family, now, true)
    grant.successor = next
    this.rotations++
    return { _tag: "Rotated", grant: next }
  }
}

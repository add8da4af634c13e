/**
 * What the parent and the children of the multi-process tests say to each
 * other (see `nodeStoreChild.ts` and `Processes.ts`). Kept apart from the
 * child script, which runs its program when imported.
 */
import { Redacted } from "effect"
import { createHash } from "node:crypto"

export interface ChildConfig {
  readonly path: string
  readonly leaseMs?: number | undefined
  readonly pollMs?: number | undefined
  /** `manager` */
  readonly url?: string | undefined
  readonly marginMs?: number | undefined
  readonly readers?: number | undefined
}

/** What a child reports; `at` is the host's wall clock (comparable across processes). */
export type ChildMessage =
  | { readonly type: "ready"; readonly pid: number; readonly at: number }
  | {
    readonly type: "done"
    readonly saves: number
    /** Saves refused because the lock was lost or not taken in time: nothing was written. */
    readonly refused: number
    /** Any other failure. */
    readonly errors: ReadonlyArray<string>
  }
  | { readonly type: "locked"; readonly at: number }
  | { readonly type: "lock"; readonly state: "in" | "out"; readonly at: number }
  | {
    readonly type: "event"
    readonly tag: string
    readonly detail?: string | undefined
    readonly token?: string | undefined
    readonly at: number
  }
  | { readonly type: "signedOut"; readonly at: number }
  | {
    readonly type: "summary"
    readonly reads: number
    readonly readErrors: Readonly<Record<string, number>>
    readonly token: string | null
  }
  | { readonly type: "error"; readonly message: string }

export type ChildCommand =
  | { readonly cmd: "signOut" }
  | { readonly cmd: "stop" }
  /** `manager`: every write to the store fails (as on a read-only disk) for `ms` from now. */
  | { readonly cmd: "failWrites"; readonly ms: number }

/** A refresh token's identity in reports: a short hash, never the token. */
export const fingerprint = (token: Redacted.Redacted<string> | string): string =>
  createHash("sha256").update(typeof token === "string" ? token : Redacted.value(token)).digest("hex").slice(0, 16)

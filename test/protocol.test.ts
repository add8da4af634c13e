// The protocol, every interleaving: two holders of one store run the
// engine's own decisions against models of the store (fenced record, owned
// lease lock, change feed) and of a strict server (single-use tokens, no reuse
// window), and every state reachable within a small scope is visited. A small
// scope is where the bugs of a protocol show (the small scope hypothesis):
// each scope here is two holders and up to the operations listed.
import { describe, expect, it } from "@effect/vitest"
import * as Protocol from "./support/Protocol.js"

const both = (ops: ReadonlyArray<Protocol.Op>, count: number) => [{ ops, count }, { ops, count }]

const scopes: ReadonlyArray<{ readonly name: string; readonly scope: Protocol.Scope }> = [
  {
    name: "two holders refreshing, with a store failure, a lost answer or a stalled holder",
    scope: { holders: both(["refresh"], 2), faults: 1, start: "stored" }
  },
  {
    name: "reads and refreshes joining one another, the save failing twice",
    scope: { holders: both(["read", "refresh"], 1), faults: 2, start: "stored" }
  },
  {
    name: "a refresh racing a sign-out, here and there",
    scope: { holders: [{ ops: ["refresh", "signOut"], count: 2 }, { ops: ["signOut"], count: 1 }], faults: 1, start: "stored" }
  },
  {
    name: "a refresh racing a sign-in, here and there",
    scope: { holders: [{ ops: ["refresh", "signIn"], count: 2 }, { ops: ["signIn", "refresh"], count: 1 }], faults: 1, start: "stored" }
  },
  {
    name: "sign-ins and sign-outs crossing",
    scope: { holders: both(["signIn", "signOut"], 2), faults: 1, start: "stored" }
  },
  {
    name: "two holders starting from the environment's token",
    scope: { holders: both(["signInWithToken", "refresh", "signOut"], 2), faults: 1, start: "empty" }
  }
]

describe("every interleaving of a small scope", () => {
  for (const { name, scope } of scopes) {
    it(name, () => {
      const report = Protocol.explore(scope)
      console.log(`${name}: ${report.states} states, ${report.atRest} at rest, ${report.violation === undefined ? "0 violations" : "a violation"}`)
      if (report.violation !== undefined) {
        console.log(`${report.violation.message}\n  after:\n    ${report.violation.trace.join("\n    ")}`)
        if (process.env.PROTOCOL_DEBUG) console.log(Protocol.keyOf(report.violation.world))
        throw new Error(report.violation.message)
      }
      expect(report.states).toBeGreaterThan(100)
    })
  }
})

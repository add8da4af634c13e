/**
 * The one check of a keyed store's key (an application's user id), shared by
 * the Node and Redis keyed stores, so that both refuse the same keys with the
 * same words.
 *
 * Not public API: the package's exports keep `internal/` private.
 */
import * as Effect from "effect/Effect"
import { StoreError } from "../SessionStore.js"

// A lone surrogate becomes U+FFFD when the key is encoded as UTF-8 (to hash
// it, or to send it to Redis): two such keys would share one record.
const loneSurrogate = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/

/** Why `key` cannot name a record, or `undefined` when it can. The reason never quotes the key. */
export const refusal = (key: unknown): string | undefined => {
  if (typeof key !== "string") return "a key must be a string"
  if (key.length === 0) return "a key must not be empty"
  if (loneSurrogate.test(key)) return "a key must be well-formed Unicode (this one holds a lone surrogate)"
  return undefined
}

/** The key, or a `StoreError` with operation `"key"` saying why it was refused. */
export const check = (owner: string, key: string): Effect.Effect<string, StoreError> => {
  const reason = refusal(key)
  return reason === undefined
    ? Effect.succeed(key)
    : Effect.fail(new StoreError({ operation: "key", message: `${owner}: ${reason}` }))
}

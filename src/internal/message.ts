/**
 * The cap on the length of every error message the library builds (refresh
 * errors, store errors), written once.
 *
 * Not public API: the package's exports keep `internal/` private.
 */

/**
 * The longest message an error keeps, in characters. Server bodies can be
 * whole HTML pages; a log line should not be.
 */
export const maxMessageLength = 500

/** Caps a message at {@link maxMessageLength} characters, collapsing whitespace. */
export const capMessage = (message: string): string => {
  const flat = message.replace(/\s+/g, " ").trim()
  return flat.length > maxMessageLength ? `${flat.slice(0, maxMessageLength - 1)}…` : flat
}

/**
 * The protocol of the file lock (`fileLock.ts` runs it): plain files in a
 * lock directory, and rules a waiter applies with its own monotonic clock.
 *
 * - The lock directory `<file>.lock/` holds one entry per *generation*:
 *   `g1`, `g2`, … Taking the lock is creating the next one with `O_EXCL`
 *   (atomic: of two waiters, one wins). An entry is written only by the
 *   process that created it, so nothing one holder does can change another
 *   holder's entry: renewing and releasing are writes to one's own entry.
 * - An entry holds its owner's token, a heartbeat counter and a state,
 *   always at the same length, so it is rewritten in place: a renewal adds
 *   one to the counter; a release removes it (and the directory, if empty),
 *   or sets its state to `done` when the holder's lease may have run out.
 * - A waiter may create the next entry when every entry is `done` or
 *   *stale*: its text has not changed while the waiter watched it for a
 *   whole lease, measured on the waiter's own monotonic clock. No timestamp
 *   is compared with any clock, so a clock step on either side changes
 *   nothing.
 * - A holder may act only while its last renewal started less than
 *   `lease - margin` ago, on its own monotonic clock: a waiter needs to see
 *   the text unchanged for a whole lease, so it cannot have judged the entry
 *   stale yet. A holder that missed that (frozen, stopped) counts itself out.
 * - After creating its entry, a waiter reads the entries below it again: one
 *   whose text changed since it judged it (a holder renewed meanwhile) makes
 *   it withdraw (its entry set to `done`) and wait on.
 *
 * Not public API: the package's exports keep `internal/` private.
 */
import * as Fs from "node:fs/promises"
import * as Path from "node:path"

/** One entry of the lock directory: its generation and its text. */
export interface Entry {
  readonly gen: number
  readonly text: string
}

const entryName = /^g(\d{1,15})$/

/** The path of generation `gen`'s entry in `dir`. */
export const entryPath = (dir: string, gen: number): string => Path.join(dir, `g${gen}`)

/**
 * An entry's text: fixed length for a given owner, so a rewrite in place
 * never leaves a longer old tail, and a read racing it sees a text that
 * differs from the old one (a renewal, which only delays a takeover).
 */
export const text = (owner: string, beat: number, state: "held" | "done"): string =>
  `moon-refresh-lock owner=${owner} beat=${String(beat).padStart(12, "0")} state=${state}\n`

/** Whether an entry's owner has released it (or withdrawn it before entering). */
export const isDone = (entryText: string): boolean => entryText.endsWith(" state=done\n")

const codeOf = (error: unknown): string | undefined =>
  typeof error === "object" && error !== null && "code" in error && typeof error.code === "string"
    ? error.code
    : undefined

const unlessMissing = <A>(fallback: A) => (error: unknown): A | Promise<never> =>
  codeOf(error) === "ENOENT" ? fallback : Promise.reject(error)

/** Every entry of the lock directory, oldest generation first; one removed while listed is left out. */
export const list = async (dir: string): Promise<ReadonlyArray<Entry>> => {
  const names = await Fs.readdir(dir).catch(unlessMissing<Array<string>>([]))
  const entries = await Promise.all(names.map(async (name): Promise<Entry | undefined> => {
    const match = entryName.exec(name)
    if (match === null) return undefined
    const read = await Fs.readFile(Path.join(dir, name), "utf8").catch(unlessMissing(undefined))
    return read === undefined ? undefined : { gen: Number(match[1]), text: read }
  }))
  return entries.filter((entry): entry is Entry => entry !== undefined).sort((a, b) => a.gen - b.gen)
}

/**
 * Creates the lock directory (mode 0700, whatever the umask) if it is
 * missing. Its parent is the store's directory, which exists. A holder
 * leaving may remove it again at once: creating the entry then finds it gone.
 */
export const prepare = async (dir: string): Promise<void> => {
  const created = await Fs.mkdir(dir, { mode: 0o700 }).then(() => true, unlessExists)
  if (created && process.platform !== "win32") await Fs.chmod(dir, 0o700).catch(unlessMissing(undefined))
}

const unlessExists = (error: unknown): false | Promise<never> =>
  codeOf(error) === "EEXIST" ? false : Promise.reject(error)

/**
 * Creates generation `gen`'s entry with `entryText`, exclusively; `undefined`
 * when it exists already (another waiter won it) or the directory is gone. The handle stays open for
 * the holder's renewals and release.
 */
export const create = async (dir: string, gen: number, entryText: string): Promise<Fs.FileHandle | undefined> => {
  // EEXIST: another waiter won it; ENOENT: a holder leaving removed the directory meanwhile.
  const handle = await Fs.open(entryPath(dir, gen), "wx", 0o600).catch((error) =>
    codeOf(error) === "EEXIST" || codeOf(error) === "ENOENT" ? undefined : Promise.reject(error)
  )
  if (handle === undefined) return undefined
  try {
    await handle.write(entryText, 0, "utf8")
  } catch (error) {
    await handle.close().catch(() => undefined)
    throw error
  }
  return handle
}

/** Rewrites the holder's own entry in place (same length: see {@link text}). */
export const rewrite = (handle: Fs.FileHandle, entryText: string): Promise<unknown> =>
  handle.write(entryText, 0, "utf8")

/**
 * Removes the holder's own entry, then the lock directory if that left it
 * empty (so a quiet lock leaves nothing behind). Only for a holder whose
 * lease still runs: nobody can have removed its entry and created another of
 * the same generation. Best effort.
 */
export const remove = async (dir: string, gen: number): Promise<void> => {
  await Fs.rm(entryPath(dir, gen), { force: true }).catch(() => undefined)
  await Fs.rmdir(dir).catch(() => undefined)
}

/** Removes the entries below `gen`: done, or stale and so counted out by their owners. Best effort. */
export const removeBelow = async (dir: string, entries: ReadonlyArray<Entry>, gen: number): Promise<void> => {
  await Promise.all(
    entries.filter((entry) => entry.gen < gen).map((entry) =>
      Fs.rm(entryPath(dir, entry.gen), { force: true }).catch(() => undefined)
    )
  )
}

// ---------------------------------------------------------------------------
// The waiter's rules, pure: times are milliseconds on the waiter's monotonic clock.
// ---------------------------------------------------------------------------

/** What a waiter saw of one entry: its text, and since when (at the latest) it has been that text. */
export interface Seen {
  readonly text: string
  readonly since: number
}

/** What a waiter saw of each generation. */
export type Observations = ReadonlyMap<number, Seen>

/**
 * Records a listing made before `readEnd`: an entry whose text is what was
 * seen before keeps its `since`; a new or changed one starts at `readEnd`
 * (after the read, so the time it is credited with is never too long).
 */
export const observe = (before: Observations, entries: ReadonlyArray<Entry>, readEnd: number): Observations =>
  new Map(entries.map((entry) => {
    const seen = before.get(entry.gen)
    return [entry.gen, seen !== undefined && seen.text === entry.text ? seen : { text: entry.text, since: readEnd }]
  }))

/**
 * Whether an entry, as listed in a read that started at `readStart`, can no
 * longer act: released, or unchanged for a whole lease while watched.
 */
export const isGone = (entry: Entry, seen: Observations, readStart: number, lease: number): boolean => {
  if (isDone(entry.text)) return true
  const watched = seen.get(entry.gen)
  return watched !== undefined && watched.text === entry.text && readStart - watched.since >= lease
}

/** Whether a waiter may create the next generation: no entry can act any more. */
export const isFree = (
  entries: ReadonlyArray<Entry>,
  seen: Observations,
  readStart: number,
  lease: number
): boolean => entries.every((entry) => isGone(entry, seen, readStart, lease))

/**
 * Whether the creator of generation `gen` may enter, from a listing made
 * after it created its entry: its own entry is there as written, every
 * entry below is still gone as judged before (`seen`: one renewed meanwhile
 * is not), and nothing above it is live.
 */
export const mayEnter = (
  gen: number,
  ownText: string,
  entries: ReadonlyArray<Entry>,
  seen: Observations,
  readStart: number,
  lease: number
): boolean =>
  entries.some((entry) => entry.gen === gen && entry.text === ownText) &&
  entries.every((entry) =>
    entry.gen === gen || (entry.gen < gen ? isGone(entry, seen, readStart, lease) : isDone(entry.text))
  )

/** The next generation after those listed. */
export const nextGen = (entries: ReadonlyArray<Entry>): number =>
  entries.reduce((most, entry) => Math.max(most, entry.gen), 0) + 1

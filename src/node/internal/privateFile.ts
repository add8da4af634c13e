/**
 * Writing a file only its owner can read, atomically: what a file that holds
 * tokens needs whatever writes it (`PrivateKeyValueStore`; `NodeSessionStore`
 * has its own, around its lock check).
 *
 * Not public API: the package's exports keep `internal/` private.
 */
import * as Fs from "node:fs/promises"
import * as Path from "node:path"

// Modes mean nothing on Windows (ACLs decide there): no mode is set.
const setsModes = process.platform !== "win32"

let temporaries = 0

/**
 * The name of a temporary file in the directory. `%t` cannot start a name
 * `encodeURIComponent` made (a `%` there is followed by two hex digits), so a
 * temporary never meets a key's file.
 */
export const temporaryPrefix = "%tmp."

/**
 * Replaces `file` with `data`: a temporary file in the same directory,
 * created exclusively with mode 0600 (set exactly, whatever the umask),
 * written and flushed, then renamed over `file`, and the directory flushed. A
 * reader sees the old content or the new, never a part, and never a moment
 * when another user could read it.
 */
export const write = async (file: string, data: string | Uint8Array): Promise<void> => {
  const dir = Path.dirname(file)
  const temporary = Path.join(dir, `${temporaryPrefix}${process.pid}.${++temporaries}`)
  try {
    const handle = await Fs.open(temporary, "wx", 0o600)
    try {
      // `open`'s mode passes through the umask: set it exactly.
      if (setsModes) await handle.chmod(0o600)
      await handle.writeFile(data)
      await handle.sync()
    } finally {
      await handle.close()
    }
    await Fs.rename(temporary, file)
  } catch (error) {
    await Fs.rm(temporary, { force: true })
    throw error
  }
  await syncDirectory(dir)
}

// Windows cannot open a directory to flush it; its renames are journaled by NTFS.
const syncDirectory = async (dir: string) => {
  if (!setsModes) return
  const handle = await Fs.open(dir, "r")
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}

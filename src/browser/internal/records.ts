/**
 * The session records of a `BrowserSessionStore`, in IndexedDB: one object
 * store, one record per key, `{ revision, session }` as `StoredSchema`
 * encodes it.
 *
 * Why IndexedDB and not `localStorage`: a fenced write must be a
 * compare-and-set that every tab sees in one order. `localStorage` has no
 * compare-and-set, and Chromium serves each tab's reads from a copy it
 * updates asynchronously, so a tab granted the Web Lock right after another
 * tab wrote can still read the old record: with 4 tabs taking turns under
 * one Web Lock to increment a counter, `localStorage` lost 95 to 380 of 600
 * increments per run, IndexedDB none (bench/browser-storage.ts). An
 * IndexedDB `readwrite` transaction reads and writes atomically, the
 * browser runs such transactions on one object store one at a time for the
 * whole origin, and a transaction started after another committed sees its
 * write.
 *
 * Not public API: the package's exports keep `internal/` private.
 */

/** What a conditional write did. */
export type Outcome =
  | { readonly _tag: "Written" }
  | { readonly _tag: "Conflict"; readonly actual: number }
  | { readonly _tag: "Refused" }

export interface Records {
  /** The raw record under `key` (`undefined` when none was written). */
  readonly read: (key: string) => Promise<unknown>
  /**
   * Writes `next` under `key` if the record is at revision `expected` and
   * `allowed()` still says yes, both checked inside the transaction that
   * writes.
   */
  readonly compareAndSet: (
    key: string,
    expected: number,
    next: unknown,
    allowed: () => boolean
  ) => Promise<Outcome>
  readonly close: () => void
}

const objectStore = "sessions"

/** The revision of a raw record: 0 when absent or not a record at all. */
export const revisionOf = (raw: unknown): number => {
  const revision = typeof raw === "object" && raw !== null ? (raw as { revision?: unknown }).revision : undefined
  return typeof revision === "number" && Number.isSafeInteger(revision) && revision >= 0 ? revision : 0
}

/**
 * Records in the IndexedDB database `database`, opened on first use and
 * opened again after the browser closed it (site data cleared, a newer
 * version of the database opened in another tab).
 */
export const open = (factory: IDBFactory, database: string): Records => {
  let connection: Promise<IDBDatabase> | undefined
  const connect = (): Promise<IDBDatabase> =>
    connection ??= new Promise<IDBDatabase>((resolve, reject) => {
      const request = factory.open(database, 1)
      request.onupgradeneeded = () => {
        request.result.createObjectStore(objectStore)
      }
      request.onsuccess = () => {
        const db = request.result
        const forget = () => {
          connection = undefined
        }
        // Never block another tab that opens a newer version: let go, reopen on next use.
        db.onversionchange = () => {
          db.close()
          forget()
        }
        db.onclose = forget
        resolve(db)
      }
      request.onerror = () => {
        connection = undefined
        reject(request.error)
      }
    })

  const transaction = async (mode: IDBTransactionMode): Promise<IDBTransaction> => {
    const db = await connect()
    try {
      return db.transaction(objectStore, mode)
    } catch (error) {
      // The connection is closing: the next call opens a new one.
      connection = undefined
      throw error
    }
  }

  const done = (tx: IDBTransaction): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      tx.oncomplete = () => resolve()
      tx.onerror = () => reject(tx.error)
      tx.onabort = () => reject(tx.error ?? new Error("the transaction was aborted"))
    })

  return {
    read: async (key) => {
      const tx = await transaction("readonly")
      const get = tx.objectStore(objectStore).get(key)
      await done(tx)
      return get.result as unknown
    },
    compareAndSet: async (key, expected, next, allowed) => {
      const tx = await transaction("readwrite")
      const store = tx.objectStore(objectStore)
      let outcome: Outcome = { _tag: "Refused" }
      const get = store.get(key)
      get.onsuccess = () => {
        const actual = revisionOf(get.result)
        if (actual !== expected) outcome = { _tag: "Conflict", actual }
        else if (!allowed()) outcome = { _tag: "Refused" }
        else {
          store.put(next, key)
          outcome = { _tag: "Written" }
        }
      }
      await done(tx)
      return outcome
    },
    close: () => {
      const pending = connection
      connection = undefined
      pending?.then((db) => db.close(), () => undefined)
    }
  }
}

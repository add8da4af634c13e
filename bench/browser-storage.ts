/**
 * Why `BrowserSessionStore` keeps its record in IndexedDB, not
 * `localStorage`: tabs of one origin take turns under one Web Lock, and each
 * reads a counter, adds one and writes it back. A store that every tab reads
 * consistently ends at tabs x turns; each one short is a write that read a
 * value another tab had already replaced, inside the lock. For a session,
 * that is a tab presenting a spent refresh token.
 *
 *   CHROME_PATH=/usr/bin/chromium npx tsx bench/browser-storage.ts
 *
 * Not part of `npm test`, never run by CI.
 */
import { Effect } from "effect"
import { chromium } from "playwright-core"
import { serve } from "../examples/browser/server.js"

const tabs = 4
const turns = 150
const rounds = 3

// Runs in each tab: `turns` times, take the lock, read the counter, write it plus one.
const takeTurns = async ({ store, turns }: { readonly store: string; readonly turns: number }) => {
  const idb = () =>
    new Promise<IDBDatabase>((resolve, reject) => {
      const request = indexedDB.open("bench", 1)
      request.onupgradeneeded = () => request.result.createObjectStore("counters")
      request.onsuccess = () => resolve(request.result)
      request.onerror = () => reject(request.error)
    })
  const db = store === "indexedDB" ? await idb() : undefined
  const increment = () =>
    new Promise<void>((resolve, reject) => {
      // One readwrite transaction: read, then write what was read plus one.
      const tx = db!.transaction("counters", "readwrite")
      const get = tx.objectStore("counters").get("n")
      get.onsuccess = () => tx.objectStore("counters").put(((get.result as number | undefined) ?? 0) + 1, "n")
      tx.oncomplete = () => resolve()
      tx.onerror = () => reject(tx.error)
    })
  for (let turn = 0; turn < turns; turn++) {
    await navigator.locks.request("bench", async () => {
      if (db !== undefined) return increment()
      localStorage.setItem("n", String(Number(localStorage.getItem("n") ?? "0") + 1))
    })
  }
  db?.close()
}

const readCounter = async (store: string): Promise<number> => {
  if (store === "localStorage") return Number(localStorage.getItem("n") ?? "0")
  const db = await new Promise<IDBDatabase>((resolve) => {
    const request = indexedDB.open("bench", 1)
    request.onsuccess = () => resolve(request.result)
  })
  return new Promise<number>((resolve) => {
    const get = db.transaction("counters").objectStore("counters").get("n")
    get.onsuccess = () => resolve(get.result as number)
  })
}

const main = Effect.gen(function*() {
  const page = yield* serve({ "GET /": () => ({ type: "text/html", body: "<!doctype html><title>bench</title>" }) })
  const browser = yield* Effect.acquireRelease(
    Effect.promise(() =>
      chromium.launch({
        executablePath: process.env.CHROME_PATH ?? "/usr/bin/chromium",
        args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-sync"]
      })
    ),
    (browser) => Effect.promise(() => browser.close())
  )
  console.log(`${tabs} tabs of one origin, ${turns} turns each under one Web Lock, ${rounds} rounds per store`)
  for (const store of ["localStorage", "indexedDB"]) {
    for (let round = 1; round <= rounds; round++) {
      const context = yield* Effect.promise(() => browser.newContext())
      // tsx names nested functions with a helper (`__name`) that the page lacks.
      yield* Effect.promise(() => context.addInitScript("globalThis.__name = (f) => f"))
      const pages = yield* Effect.forEach(Array.from({ length: tabs }), () =>
        Effect.promise(async () => {
          const tab = await context.newPage()
          await tab.goto(page.url)
          return tab
        }))
      const started = Date.now()
      yield* Effect.promise(() => Promise.all(pages.map((tab) => tab.evaluate(takeTurns, { store, turns }))))
      const millis = Date.now() - started
      // Let every write land before reading the total.
      yield* Effect.sleep("300 millis")
      const total = yield* Effect.promise(() => pages[0]!.evaluate(readCounter, store))
      console.log(
        `${store.padEnd(12)} round ${round}: ${total} of ${tabs * turns} increments kept, ` +
          `${tabs * turns - total} lost; ${(millis / (tabs * turns)).toFixed(2)} ms per turn`
      )
      yield* Effect.promise(() => context.close())
    }
  }
})

Effect.runPromise(Effect.scoped(main)).catch((error: unknown) => {
  console.error(String(error))
  process.exitCode = 1
})

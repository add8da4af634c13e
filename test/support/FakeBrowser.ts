/**
 * A browser origin in Node, for the `BrowserSessionStore`'s unit tests: tabs
 * that share IndexedDB (fake-indexeddb, a full implementation in memory),
 * Web Locks (below, as the spec describes them: exclusive, first come first
 * served, `signal`, `ifAvailable`, `steal`, `query`, released when a tab
 * closes) and `BroadcastChannel` (below: delivered to every other channel of
 * the same name, never to the sender).
 *
 * The real thing runs in Chromium in test/browser/.
 */
import { IDBFactory } from "fake-indexeddb"
import type { Platform } from "../../src/browser/internal/browserStore.js"

interface Request {
  readonly name: string
  readonly clientId: string
  readonly callback: (lock: Lock | null) => unknown
  readonly resolve: (value: unknown) => void
  readonly reject: (error: unknown) => void
}

const abortError = (message: string) => new DOMException(message, "AbortError")

/** The Web Locks of one origin. */
export class FakeLocks {
  readonly held = new Map<string, Request>()
  readonly queues = new Map<string, Array<Request>>()
  /** While set, a granted request's callback waits for it: the window where a grant is on its way. */
  hold: Promise<void> | undefined = undefined
  /** Locks taken over with `steal`. */
  steals = 0

  /** `navigator.locks` as the tab `clientId` sees it. */
  manager(clientId: string): Pick<LockManager, "request" | "query"> {
    const request = (name: string, ...args: Array<unknown>): Promise<unknown> => {
      const [options, callback] = (args.length === 1 ? [{}, args[0]] : args) as [
        LockOptions,
        (lock: Lock | null) => unknown
      ]
      return new Promise((resolve, reject) => {
        const { ifAvailable, signal, steal } = options
        if (signal?.aborted) return reject(abortError("The request was aborted."))
        const entry: Request = { name, clientId, callback, resolve, reject }
        const queue = this.queue(name)
        if (steal === true) {
          const victim = this.held.get(name)
          if (victim !== undefined) {
            this.steals++
            this.held.delete(name)
            victim.reject(abortError("Lock broken by another request with the 'steal' option."))
          }
          return this.grant(entry)
        }
        if (ifAvailable === true && (this.held.has(name) || queue.length > 0)) {
          return this.settle(entry, null)
        }
        queue.push(entry)
        signal?.addEventListener("abort", () => {
          const at = queue.indexOf(entry)
          if (at === -1) return
          queue.splice(at, 1)
          reject(abortError("The request was aborted."))
        })
        this.next(name)
      })
    }
    return {
      request: request as LockManager["request"],
      query: async () => ({
        held: [...this.held.values()].map((entry) => this.info(entry)),
        pending: [...this.queues.values()].flat().map((entry) => this.info(entry))
      })
    }
  }

  /** The tab `clientId` went away: its locks are released and its requests dropped. */
  close(clientId: string): void {
    for (const [name, queue] of this.queues) {
      this.queues.set(name, queue.filter((entry) => entry.clientId !== clientId))
    }
    for (const [name, entry] of [...this.held]) {
      if (entry.clientId === clientId) {
        this.held.delete(name)
        this.next(name)
      }
    }
  }

  private info(entry: Request): LockInfo {
    return { name: entry.name, mode: "exclusive", clientId: entry.clientId }
  }

  private queue(name: string): Array<Request> {
    let queue = this.queues.get(name)
    if (queue === undefined) this.queues.set(name, queue = [])
    return queue
  }

  private next(name: string): void {
    if (this.held.has(name)) return
    const entry = this.queue(name).shift()
    if (entry !== undefined) this.grant(entry)
  }

  private grant(entry: Request): void {
    this.held.set(entry.name, entry)
    const lock = { name: entry.name, mode: "exclusive" } as Lock
    const gate = this.hold ?? Promise.resolve()
    void gate.then(() => this.settle(entry, lock))
  }

  // Runs the callback; the lock is released when its promise settles (if still ours: a steal takes it).
  private settle(entry: Request, lock: Lock | null): void {
    Promise.resolve().then(() => entry.callback(lock)).then(
      (value) => this.release(entry, () => entry.resolve(value)),
      (error) => this.release(entry, () => entry.reject(error))
    )
  }

  private release(entry: Request, done: () => void): void {
    if (this.held.get(entry.name) === entry) {
      this.held.delete(entry.name)
      this.next(entry.name)
    }
    done()
  }
}

interface FakeChannel {
  onmessage: ((event: MessageEvent) => void) | null
  postMessage(message: unknown): void
  close(): void
}

/** One origin: its storage, its locks, its channels, and the tabs open on it. */
export class FakeBrowser {
  readonly indexedDB = new IDBFactory()
  readonly locks = new FakeLocks()
  /** While true, channel messages are lost (a frozen page misses them). */
  dropMessages = false
  private readonly channels = new Map<string, Set<FakeChannel>>()
  private readonly resumeListeners = new Map<string, Set<() => void>>()
  private tabs = 0

  /** A new tab: its own client id, the origin's storage, locks and channels. */
  tab(): { readonly clientId: string; readonly platform: Platform } {
    const clientId = `tab-${++this.tabs}`
    const listeners = new Set<() => void>()
    this.resumeListeners.set(clientId, listeners)
    return {
      clientId,
      platform: {
        indexedDB: this.indexedDB,
        locks: this.locks.manager(clientId),
        channel: (name) => this.channel(name),
        onResume: (listener) => {
          listeners.add(listener)
          return () => listeners.delete(listener)
        }
      }
    }
  }

  /** The page of `clientId` is shown again. */
  resume(clientId: string): void {
    for (const listener of this.resumeListeners.get(clientId) ?? []) listener()
  }

  private channel(name: string): FakeChannel {
    let members = this.channels.get(name)
    if (members === undefined) this.channels.set(name, members = new Set())
    const all = members
    const channel: FakeChannel = {
      onmessage: null,
      postMessage: (message) => {
        if (this.dropMessages) return
        const data = structuredClone(message)
        for (const other of all) {
          if (other !== channel) queueMicrotask(() => other.onmessage?.({ data } as MessageEvent))
        }
      },
      close: () => {
        all.delete(channel)
      }
    }
    all.add(channel)
    return channel
  }
}

/**
 * Wakes long-polling readers when new messages become readable: this
 * process's commits and releases, and (through BrokerStore.subscribe) those
 * of other broker processes sharing the store. An idle long-poll waits here
 * without touching the store.
 */
export class Notifier {
  private waiters = new Set<() => void>()
  private closed = false

  notify(): void {
    const ws = this.waiters
    this.waiters = new Set()
    for (const w of ws) w()
  }

  /** Resolves on the next notify, after `ms`, at close or when `signal` aborts, whichever comes first. */
  wait(ms: number, signal?: AbortSignal): Promise<void> {
    if (this.closed || ms <= 0 || signal?.aborted) return Promise.resolve()
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer)
        this.waiters.delete(done)
        signal?.removeEventListener('abort', done)
        resolve()
      }
      const timer = setTimeout(done, ms)
      this.waiters.add(done)
      signal?.addEventListener('abort', done, { once: true })
    })
  }

  /** Long-polls waiting now. */
  get waiting(): number {
    return this.waiters.size
  }

  get isClosed(): boolean {
    return this.closed
  }

  close(): void {
    this.closed = true
    this.notify()
  }
}

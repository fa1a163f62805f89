/**
 * Wakes long-polling readers when this process commits new messages. Other
 * broker processes sharing the store are noticed by the readers' own poll
 * interval, so nothing depends on this in-memory signal for correctness.
 */
export class Notifier {
  private waiters = new Set<() => void>()
  private closed = false

  notify(): void {
    const ws = this.waiters
    this.waiters = new Set()
    for (const w of ws) w()
  }

  /** Resolves on the next notify, after `ms`, or at close, whichever comes first. */
  wait(ms: number): Promise<void> {
    if (this.closed || ms <= 0) return Promise.resolve()
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer)
        this.waiters.delete(done)
        resolve()
      }
      const timer = setTimeout(done, ms)
      this.waiters.add(done)
    })
  }

  get isClosed(): boolean {
    return this.closed
  }

  close(): void {
    this.closed = true
    this.notify()
  }
}

/**
 * Background work of the broker: a task repeated every `ms`, never two runs
 * of it at once, failures logged (never thrown), timers unref'd so they do
 * not keep the process alive. `stop()` clears them all.
 */
export class Repeater {
  private readonly timers: NodeJS.Timeout[] = []

  constructor(private readonly log: { warn(obj: object, msg: string): void }) {}

  every(ms: number, what: string, fn: () => Promise<unknown>): void {
    let running = false
    const t = setInterval(() => {
      if (running) return
      running = true
      fn()
        .catch((err) => this.log.warn({ err }, `${what} failed`))
        .finally(() => (running = false))
    }, ms)
    t.unref()
    this.timers.push(t)
  }

  stop(): void {
    for (const t of this.timers) clearInterval(t)
    this.timers.length = 0
  }
}

/**
 * A one-line progress display on stderr, only when stderr is a TTY, so that
 * cron logs and pipes stay clean. Throttled to ~10 updates a second.
 */
export class Progress {
  private last = 0
  private shown = false
  private readonly enabled: boolean

  constructor(
    private readonly label: string,
    enabled = Boolean(process.stderr.isTTY),
  ) {
    this.enabled = enabled
  }

  update(text: string, force = false): void {
    if (!this.enabled) return
    const now = Date.now()
    if (!force && now - this.last < 100) return
    this.last = now
    this.shown = true
    process.stderr.write(`\r\x1b[2K${this.label} ${text}`)
  }

  done(): void {
    if (this.enabled && this.shown) process.stderr.write('\r\x1b[2K')
    this.shown = false
  }
}

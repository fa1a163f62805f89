/**
 * Per-key token buckets (per node, per client address; in memory: a limit,
 * not durable state; with several broker processes each enforces its own
 * share). The map is bounded: past 100,000 keys it starts afresh.
 */
export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>()

  /** `rate` requests per second, bursts up to `burst`; 0 disables. */
  constructor(
    private readonly rate: number,
    private readonly burst = Math.max(1, rate),
  ) {}

  /** 0 when allowed, else the milliseconds until a request would be. */
  take(key: string, now = Date.now()): number {
    if (this.rate <= 0) return 0
    let b = this.buckets.get(key)
    if (!b) {
      if (this.buckets.size > 100_000) this.buckets.clear()
      b = { tokens: this.burst, at: now }
      this.buckets.set(key, b)
    }
    b.tokens = Math.min(this.burst, b.tokens + ((now - b.at) * this.rate) / 1000)
    b.at = now
    if (b.tokens >= 1) {
      b.tokens -= 1
      return 0
    }
    return Math.ceil(((1 - b.tokens) * 1000) / this.rate)
  }

  /** Like take, without spending: 0 when a request would be allowed now, else the milliseconds until it would. */
  peek(key: string, now = Date.now()): number {
    const b = this.rate > 0 ? this.buckets.get(key) : undefined
    if (!b) return 0
    const tokens = Math.min(this.burst, b.tokens + ((now - b.at) * this.rate) / 1000)
    return tokens >= 1 ? 0 : Math.ceil(((1 - tokens) * 1000) / this.rate)
  }
}

/**
 * The caps on long-polls open at once (GET /v1/messages with wait > 0): per
 * credential (broker.limits.longPollsPerCredential) and in total
 * (broker.limits.longPolls). Each open long-poll holds a socket and a waiter;
 * without a cap one leaked token could hold thousands of them.
 */
import { HttpError } from './http-error.js'

export class LongPollSlots {
  private readonly perKey = new Map<string, number>()
  private total = 0

  /** 0 disables a cap. */
  constructor(
    private readonly perCredential: number,
    private readonly overall: number,
  ) {}

  /** Take a slot for `key` (the credential), or throw 429 naming the cap; call the returned function once when done. */
  acquire(key: string, who: string): () => void {
    const mine = this.perKey.get(key) ?? 0
    if (this.perCredential > 0 && mine >= this.perCredential)
      throw new HttpError(
        429,
        'TOO_MANY_LONG_POLLS',
        `${who} already has ${mine} long-poll(s) open (broker.limits.longPollsPerCredential is ${this.perCredential}); ` +
          'close one, or poll with wait=0',
        { 'retry-after': '1' },
      )
    if (this.overall > 0 && this.total >= this.overall)
      throw new HttpError(
        429,
        'TOO_MANY_LONG_POLLS',
        `the broker already has ${this.total} long-poll(s) open (broker.limits.longPolls is ${this.overall}); try again later`,
        { 'retry-after': '1' },
      )
    this.perKey.set(key, mine + 1)
    this.total++
    let released = false
    return () => {
      if (released) return
      released = true
      this.total--
      const n = (this.perKey.get(key) ?? 1) - 1
      if (n > 0) this.perKey.set(key, n)
      else this.perKey.delete(key)
    }
  }

  /** Long-polls open now (all credentials). */
  get open(): number {
    return this.total
  }
}

/**
 * The exposition text of sample values (src/broker/metrics-nodes.ts):
 * formatSeconds, the fast path the per-scrape age lines take, writes exactly
 * what formatValue(ms / 1000) writes (prom-client's String of the double).
 */
import { describe, expect, it } from 'vitest'
import { formatSeconds, formatValue } from '../../src/broker/metrics-nodes.js'

describe('formatSeconds', () => {
  it('writes every whole ms of the first ten seconds as String(ms / 1000)', () => {
    for (let ms = 0; ms < 10_000; ms++) expect(formatSeconds(ms)).toBe(String(ms / 1000))
  })

  it('agrees with formatValue for large, fractional, negative and non-finite values', () => {
    const values = [
      59_999,
      60_000,
      3_600_001,
      86_400_000,
      1_733_000_000_123,
      999_999_999_999_999,
      1e15,
      1e21,
      0.5,
      1234.5678,
      -1,
      -1500,
      Number.MAX_SAFE_INTEGER,
      NaN,
      Infinity,
      -Infinity,
    ]
    for (const ms of values) expect(formatSeconds(ms)).toBe(formatValue(ms / 1000))
    // A pseudo-random sample of ages up to a year.
    let x = 12345
    for (let i = 0; i < 5000; i++) {
      x = (x * 1103515245 + 12345) % 2 ** 31
      const ms = x % 31_536_000_000
      expect(formatSeconds(ms)).toBe(String(ms / 1000))
    }
  })
})

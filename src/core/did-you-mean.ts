/**
 * Typo suggestions for names a user types: configuration keys, environment
 * variables, commands and flags. Kernel level, so the config loader, the
 * commands and the publish fast path share one rule for "close enough".
 */

function levenshtein(a: string, b: string): number {
  const dp = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    let prev = dp[0]
    dp[0] = i
    for (let j = 1; j <= b.length; j++) {
      const tmp = dp[j]
      dp[j] = Math.min(dp[j] + 1, dp[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1))
      prev = tmp
    }
  }
  return dp[b.length]
}

/** The closest known name, if it is close enough to be a typo. */
export function didYouMean(input: string, candidates: Iterable<string>): string | undefined {
  let best: string | undefined
  let bestDist = Infinity
  const lower = input.toLowerCase()
  for (const c of candidates) {
    const d = levenshtein(lower, c.toLowerCase())
    if (d < bestDist) {
      bestDist = d
      best = c
    }
  }
  return best !== undefined && bestDist <= Math.max(2, Math.floor(input.length / 3)) ? best : undefined
}

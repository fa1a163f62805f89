/**
 * MQTT-style topic filters: `+` matches exactly one level, `#` (last level
 * only) matches the parent level and everything below it.
 */

/** Why a filter is invalid, or undefined when it is fine. */
export function topicFilterProblem(filter: string): string | undefined {
  if (typeof filter !== 'string' || filter.length === 0) return 'the topic filter is empty'
  if (filter.includes('\u0000')) return 'the topic filter contains a NUL character'
  const levels = filter.split('/')
  for (let i = 0; i < levels.length; i++) {
    const level = levels[i]
    if (level.includes('#') && (level !== '#' || i !== levels.length - 1))
      return '`#` must be a whole level and the last one (e.g. plant/#)'
    if (level.includes('+') && level !== '+') return '`+` must be a whole level (e.g. plant/+/temp)'
  }
  return undefined
}

/** A predicate for one filter; `#` and undefined match everything. */
export function topicMatcher(filter: string | undefined): (topic: string) => boolean {
  if (filter === undefined || filter === '#') return () => true
  if (!/[+#]/.test(filter)) return (topic) => topic === filter
  const levels = filter.split('/')
  return (topic) => {
    const parts = topic.split('/')
    for (let i = 0; i < levels.length; i++) {
      const level = levels[i]
      if (level === '#') return true
      if (i >= parts.length) return false
      if (level !== '+' && level !== parts[i]) return false
    }
    return parts.length === levels.length
  }
}

/**
 * Whether every topic that `filter` matches is also matched by `grant`:
 * the filter is the same as or narrower than the grant. Both must be valid
 * filters (topicFilterProblem). `#` in the grant covers its level and
 * everything below (and the parent level, as it matches it); `+` in the
 * grant covers one level, literal or `+`; a `#` in the filter is covered
 * only by a `#` of the grant at the same level or above.
 */
export function filterCovers(grant: string, filter: string): boolean {
  // A topic has at least one level, so `+/#` matches what `#` matches.
  const g = (grant === '+/#' ? '#' : grant).split('/')
  const f = filter.split('/')
  for (let i = 0; ; i++) {
    if (i < g.length && g[i] === '#') return true
    if (i === f.length || i === g.length) return i === f.length && i === g.length
    if (f[i] === '#') return false
    if (g[i] === '+') continue
    if (f[i] === '+' || f[i] !== g[i]) return false
  }
}

/** The first of `grants` that covers `filter`, or undefined when none does (the filter is wider). */
export function coveringGrant(grants: readonly string[], filter: string): string | undefined {
  return grants.find((g) => filterCovers(g, filter))
}

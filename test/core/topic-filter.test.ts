/**
 * Topic-filter subsumption (src/protocol/topic-filter.ts): a consumer's
 * filter must fit inside one of its grants. Checked case by case and, for
 * every pair of filters over a small alphabet, against topicMatcher on every
 * topic of up to four levels: filterCovers(g, f) is true exactly when each
 * topic f matches is matched by g.
 */
import { describe, expect, it } from 'vitest'
import {
  coveringGrant,
  filterCovers,
  topicFilterProblem,
  topicMatcher,
} from '../../src/protocol/topic-filter.js'

describe('filterCovers', () => {
  it.each([
    ['#', '#', true],
    ['#', 'a/b', true],
    ['#', 'a/+/#', true],
    ['a/#', 'a', true],
    ['a/#', 'a/#', true],
    ['a/#', 'a/b/c', true],
    ['a/#', 'a/+', true],
    ['a/#', '#', false],
    ['a/#', 'b/#', false],
    ['a/#', '+/#', false],
    ['a/+', 'a/b', true],
    ['a/+', 'a/+', true],
    ['a/+', 'a/#', false],
    ['a/+', 'a', false],
    ['a/+', 'a/b/c', false],
    ['a/b', 'a/b', true],
    ['a/b', 'a/+', false],
    ['a/b', 'a/b/c', false],
    ['plant/7/#', 'plant/7/line-1/temp', true],
    ['plant/7/#', 'plant/+/temp', false],
    ['plant/+/temp', 'plant/7/temp', true],
    ['plant/+/temp', 'plant/7/#', false],
    ['a/+/#', 'a', false],
    ['a/+/#', 'a/x', true],
    ['a/+/#', 'a/+/c/#', true],
    ['a//b', 'a//b', true],
    ['a/+/b', 'a//b', true],
  ])('grant %s covers %s: %s', (grant, filter, covered) => {
    expect(topicFilterProblem(grant)).toBeUndefined()
    expect(topicFilterProblem(filter)).toBeUndefined()
    expect(filterCovers(grant, filter)).toBe(covered)
  })

  it('agrees with topicMatcher on every pair of small filters over every topic of up to four levels', () => {
    const words = ['a', 'b']
    const topics: string[] = []
    const grow = (prefix: string[], depth: number) => {
      if (prefix.length > 0) topics.push(prefix.join('/'))
      if (depth === 0) return
      for (const w of words) grow([...prefix, w], depth - 1)
    }
    grow([], 4)
    const filters: string[] = []
    const growFilter = (prefix: string[], depth: number) => {
      if (prefix.length > 0) filters.push(prefix.join('/'))
      filters.push([...prefix, '#'].join('/'))
      if (depth === 0) return
      for (const w of [...words, '+']) growFilter([...prefix, w], depth - 1)
    }
    growFilter([], 3)
    expect(filters.length).toBe(79)
    let covered = 0
    for (const g of filters)
      for (const f of filters) {
        const gm = topicMatcher(g)
        const fm = topicMatcher(f)
        // Over topics of up to 4 levels a filter of up to 3 levels (plus #) shows every difference.
        const truth = topics.every((t) => !fm(t) || gm(t))
        if (filterCovers(g, f) !== truth) throw new Error(`filterCovers(${g}, ${f}) should be ${truth}`)
        if (truth) covered++
      }
    expect(covered).toBeGreaterThan(filters.length)
  })

  it('coveringGrant names the grant that covers, or none', () => {
    const grants = ['plant/7/#', 'alarms/#']
    expect(coveringGrant(grants, 'alarms/fire')).toBe('alarms/#')
    expect(coveringGrant(grants, 'plant/7/+/temp')).toBe('plant/7/#')
    expect(coveringGrant(grants, '#')).toBeUndefined()
    expect(coveringGrant(grants, 'plant/#')).toBeUndefined()
    expect(coveringGrant([], 'a')).toBeUndefined()
  })
})

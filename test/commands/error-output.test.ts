/**
 * The one error report of every command (src/cli/error-output.ts): core's
 * problem codes get this CLI's fix (src/cli/advice.ts) on stderr and in the
 * --json document; a fix core gave, and errors without a known problem, are
 * left as they are.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { adviceFor } from '../../src/cli/advice.js'
import { reportError } from '../../src/cli/error-output.js'
import { ConfigError, SyncFailedError } from '../../src/shared/errors.js'

describe('reportError', () => {
  let stderr: string
  const write = process.stderr.write
  beforeEach(() => {
    stderr = ''
    process.stderr.write = ((s: string) => ((stderr += s), true)) as typeof process.stderr.write
  })
  afterEach(() => {
    process.stderr.write = write
  })

  it("adds the CLI's fix for a problem core named, in both the fix: line and --json", () => {
    const err = new SyncFailedError('drain was interrupted with 3 message(s) (1 KiB) still pending; 2 sent', {
      details: { problem: 'drain-interrupted', timeoutMs: 1000 },
    })
    const lines: string[] = []
    expect(reportError(err, true, (l) => lines.push(l))).toBe(75)
    expect(stderr).toBe(
      'rmq: drain was interrupted with 3 message(s) (1 KiB) still pending; 2 sent\n' +
        '  fix: run `rmq drain` again to send the rest (a batch cut off in flight is sent again; the broker keeps one copy)\n',
    )
    expect(lines).toHaveLength(1)
    expect(JSON.parse(lines[0]).error).toMatchObject({
      code: 'SYNC_FAILED',
      exitCode: 75,
      suggestion: expect.stringMatching(/^run `rmq drain` again/),
      details: { problem: 'drain-interrupted' },
    })
  })

  it('words the fix from the data: the node of an outbox that stores for another', () => {
    const err = new ConfigError('this outbox stores messages for node gw-a, but nodeId is gw-b', {
      details: { problem: 'node-forked', outboxNodeId: 'gw-a', nodeId: 'gw-b', pending: 4 },
    })
    expect(reportError(err, false)).toBe(78)
    expect(stderr).toMatch(/^ {2}fix: set nodeId back to gw-a; .*`rmq outbox rename-node gw-b`/m)
  })

  it('keeps a fix core gave, and leaves an unknown problem without one', () => {
    const given = new ConfigError('bad', { suggestion: 'do this', details: { problem: 'drain-timeout' } })
    reportError(given, false)
    expect(given.suggestion).toBe('do this')
    const unknown = new ConfigError('odd', { details: { problem: 'toString' } })
    expect(adviceFor(unknown)).toBeUndefined()
    reportError(unknown, false)
    expect(stderr).toBe('rmq: bad\n  fix: do this\nrmq: odd\n')
  })
})

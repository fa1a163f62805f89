/**
 * The one Ctrl-C wiring of the long-running commands (src/cli/interrupt.ts,
 * BaseCommand.abortSignal): the first SIGINT or SIGTERM aborts, the handler
 * is gone after it (so a second Ctrl-C meets Node's default and ends the
 * process), and nothing stays registered once the command has ended.
 */
import { EventEmitter } from 'node:events'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { BaseCommand } from '../../src/cli/base-command.js'
import { interruptOn } from '../../src/cli/interrupt.js'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')

describe('interruptOn', () => {
  it('aborts on the first SIGINT and leaves no handler for a second one', () => {
    const proc = new EventEmitter()
    const i = interruptOn(undefined, proc)
    expect(proc.listenerCount('SIGINT')).toBe(1)
    expect(proc.listenerCount('SIGTERM')).toBe(1)
    expect(i.signal.aborted).toBe(false)
    proc.emit('SIGINT')
    expect(i.signal.aborted).toBe(true)
    expect(proc.listenerCount('SIGINT')).toBe(0)
    i.dispose()
    expect(proc.listenerCount('SIGTERM')).toBe(0)
  })

  it('aborts on SIGTERM too; dispose before any signal removes both handlers', () => {
    const proc = new EventEmitter()
    const a = interruptOn(undefined, proc)
    proc.emit('SIGTERM')
    expect(a.signal.aborted).toBe(true)
    a.dispose()
    const b = interruptOn(undefined, proc)
    b.dispose()
    expect(b.signal.aborted).toBe(false)
    expect(proc.listenerCount('SIGINT') + proc.listenerCount('SIGTERM')).toBe(0)
  })
})

describe('BaseCommand.abortSignal', () => {
  const seen: { aborted?: boolean; sigintDuring?: number; same?: boolean } = {}
  class Waits extends BaseCommand<typeof Waits> {
    static override enableJsonFlag = false
    async run(): Promise<void> {
      const signal = this.abortSignal()
      seen.same = signal === this.abortSignal()
      seen.sigintDuring = process.listenerCount('SIGINT')
      process.emit('SIGINT')
      seen.aborted = signal.aborted
    }
  }
  class Fails extends BaseCommand<typeof Fails> {
    static override enableJsonFlag = false
    async run(): Promise<void> {
      this.abortSignal()
      throw new Error('boom')
    }
  }

  it('one signal per command, aborted by Ctrl-C, handlers removed when the command ends', async () => {
    const before = { int: process.listenerCount('SIGINT'), term: process.listenerCount('SIGTERM') }
    await Waits.run([], { root })
    expect(seen).toEqual({ aborted: true, sigintDuring: before.int + 1, same: true })
    expect(process.listenerCount('SIGINT')).toBe(before.int)
    expect(process.listenerCount('SIGTERM')).toBe(before.term)
  })

  it('removes the handlers when the command fails as well', async () => {
    const before = { int: process.listenerCount('SIGINT'), term: process.listenerCount('SIGTERM') }
    const stderr = process.stderr.write
    process.stderr.write = (() => true) as typeof process.stderr.write
    try {
      await Fails.run([], { root })
    } finally {
      process.stderr.write = stderr
    }
    expect(process.exitCode).toBe(1)
    process.exitCode = undefined
    expect(process.listenerCount('SIGINT')).toBe(before.int)
    expect(process.listenerCount('SIGTERM')).toBe(before.term)
  })
})

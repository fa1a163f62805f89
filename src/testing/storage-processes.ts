/**
 * Storage conformance, several processes: for a driver that declares
 * multiProcess and gives `childModule`, two real node processes append to
 * one store at once; no seq is lost or reused and each writer keeps its order.
 */
import { spawn } from 'node:child_process'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import type { SuiteContext } from './storage-fixtures.js'

export function multiProcessCases(ctx: SuiteContext): void {
  describe.skipIf(ctx.opts.childModule === undefined)('several processes', () => {
    it('lets two processes write the same store at once without losing or reusing a seq', async () => {
      const file = path.join(ctx.dir, 'shared.db')
      const init = await ctx.make({ path: file })
      await init.close()
      const perChild = 2000
      const script = `
        const { default: factory } = await import(process.env.DRIVER_URL)
        const d = await factory({ path: process.env.STORE, maxBytes: 2 ** 40, maxMessages: 0, overflow: 'reject', durability: 'full' })
        const tag = process.env.TAG
        process.stdout.write('ready\\n')
        await new Promise((r) => process.stdin.once('data', r))
        const seqs = []
        for (let b = 0; b < ${perChild / 100}; b++) {
          const batch = Array.from({ length: 100 }, (_, i) => ({ topic: 'mp/' + tag, payload: Buffer.from(tag + ':' + (b * 100 + i)), ts: Date.now() }))
          seqs.push(...(await d.append(batch)).seqs)
        }
        await d.close()
        process.stdout.write(JSON.stringify(seqs) + '\\n')
      `
      const run = (tag: string) => {
        const child = spawn(
          process.execPath,
          [...(ctx.opts.childModule!.nodeArgs ?? []), '--input-type=module', '-e', script],
          {
            env: { ...process.env, DRIVER_URL: ctx.opts.childModule!.url, STORE: file, TAG: tag },
            stdio: ['pipe', 'pipe', 'pipe'],
          },
        )
        let out = ''
        let err = ''
        child.stdout.setEncoding('utf8').on('data', (s) => (out += s))
        child.stderr.setEncoding('utf8').on('data', (s) => (err += s))
        const done = new Promise<number[]>((resolve, reject) =>
          child.on('close', (code) =>
            code === 0
              ? resolve(JSON.parse(out.split('\n')[1]))
              : reject(new Error(`child ${tag} exited ${code}: ${err}`)),
          ),
        )
        const ready = new Promise<void>((resolve, reject) => {
          const check = () => (out.includes('ready\n') ? resolve() : child.stdout.once('data', check))
          check()
          done.catch(reject)
        })
        return { child, ready, done }
      }
      const a = run('a')
      const b = run('b')
      await Promise.all([a.ready, b.ready])
      a.child.stdin.end('go\n')
      b.child.stdin.end('go\n')
      const [sa, sb] = await Promise.all([a.done, b.done])
      expect(sa).toHaveLength(perChild)
      expect(sb).toHaveLength(perChild)
      expect(new Set([...sa, ...sb]).size).toBe(2 * perChild)
      const d = await ctx.make({ path: file })
      const s = await d.stats(Date.now())
      expect(s).toMatchObject({
        pending: 2 * perChild,
        appendedTotal: 2 * perChild,
        totalMessages: 2 * perChild,
      })
      const all = await d.nextBatch({
        limit: 10 * perChild,
        maxBytes: 1e12,
        order: 'oldest',
        now: Date.now(),
      })
      expect(all).toHaveLength(2 * perChild)
      // Each writer's messages are in its own order.
      for (const tag of ['a', 'b']) {
        const mine = all
          .filter((m) => m.topic === `mp/${tag}`)
          .map((m) => Number(m.payload.toString().split(':')[1]))
        expect(mine).toEqual(Array.from({ length: perChild }, (_, i) => i))
      }
    })
  })
}

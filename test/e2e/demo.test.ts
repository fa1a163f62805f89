import { spawn } from 'node:child_process'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { ROOT, cleanEnv } from '../helpers/cli.js'

// The README's first command is `npm install && npm run demo`: keep it working.
describe('npm run demo', () => {
  it('stores while offline, forwards when the broker is up, and consumes everything once in order', async () => {
    const result = await new Promise<{ code: number | null; out: string }>((resolve, reject) => {
      const child = spawn(process.execPath, [path.join(ROOT, 'scripts/demo.js')], {
        cwd: ROOT,
        env: cleanEnv(),
      })
      let out = ''
      child.stdout.setEncoding('utf8').on('data', (d) => (out += d))
      child.stderr.setEncoding('utf8').on('data', (d) => (out += d))
      const timer = setTimeout(() => child.kill('SIGKILL'), 170_000)
      child.on('error', reject)
      child.on('close', (code) => {
        clearTimeout(timer)
        resolve({ code, out })
      })
    })
    expect(result.code, result.out).toBe(0)
    expect(result.out).toContain('stored gw-demo:')
    expect(result.out).toMatch(/rmq sync\s+->\s+exit 75/)
    expect(result.out).toContain('pending         1,000 message(s)')
    expect(result.out).toContain('in event-time order: yes; duplicates: none; expected 1000')
    // The MQTT act (Mosquitto is installed by .ci/run): devices -> gateway Mosquitto -> rmq -> central Mosquitto.
    expect(result.out).toContain('MQTT in event-time order: yes; duplicates: none; expected 300')
    expect(result.out).toContain('demo complete')
  }, 180_000)
})

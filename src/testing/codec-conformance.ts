import crypto from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { CorruptInputError, DecompressLimitError, type Codec } from '../core/compression/codec.js'

export interface CodecConformanceOptions {
  /** Builds a small input that decompresses to more than `bytes` (a "bomb"); omit for codecs that cannot. */
  bomb?: (bytes: number) => Promise<Buffer> | Buffer
  /** Extra hostile inputs: each must be rejected without allocating what it claims. */
  hostile?: Record<string, () => Buffer>
}

const MiB = 1 << 20

/** Heap and external memory in use now, after a GC when --expose-gc is on. */
function memoryInUse(): number {
  ;(globalThis as { gc?: () => void }).gc?.()
  const m = process.memoryUsage()
  return m.heapUsed + m.external + m.arrayBuffers
}

function telemetry(n: number): Buffer {
  const lines: string[] = []
  for (let i = 0; i < n; i++) {
    lines.push(
      JSON.stringify({
        seq: i,
        topic: `plant/line${i % 4}/temp`,
        ts: 1764160000000 + i * 1000,
        v: 20 + (i % 17) / 10,
      }),
    )
  }
  return Buffer.from(lines.join('\n'))
}

/**
 * The behaviour every Codec must show: round trips, empty and large input,
 * the decompressed-size cap (without allocating what a header claims), and a
 * clear CorruptInputError for input it cannot decode.
 */
export function codecConformance(
  label: string,
  makeCodec: () => Promise<Codec> | Codec,
  opts: CodecConformanceOptions = {},
) {
  describe(`codec conformance: ${label}`, () => {
    const codec = () => Promise.resolve(makeCodec())

    it('has a name and a Content-Encoding token', async () => {
      const c = await codec()
      expect(c.name).toMatch(/^[\w.-]+$/)
      expect(c.encoding).toMatch(/^[a-z0-9-]+$/)
    })

    it('round-trips text and binary input at several levels', async () => {
      const c = await codec()
      const inputs = [
        Buffer.from('hello'),
        telemetry(1000),
        crypto.randomBytes(64 * 1024),
        Buffer.from([0, 255, 0xc3, 0x28, 0xf0, 0x9f, 0x98]),
      ]
      for (const level of [undefined, 1, 3, 9]) {
        for (const input of inputs) {
          const packed = await c.compress(input, level === undefined ? undefined : { level })
          const out = await c.decompress(packed, { maxOutputBytes: input.length })
          expect(out.equals(input)).toBe(true)
        }
      }
    })

    it('compresses repetitive telemetry', async () => {
      const c = await codec()
      const input = telemetry(1000)
      const packed = await c.compress(input, { level: 3 })
      if (c.encoding === 'identity') expect(packed.length).toBe(input.length)
      else expect(packed.length).toBeLessThan(input.length / 4)
    })

    it('round-trips empty input', async () => {
      const c = await codec()
      const packed = await c.compress(Buffer.alloc(0))
      const out = await c.decompress(packed, { maxOutputBytes: 0 })
      expect(out.length).toBe(0)
    })

    it('round-trips large input (24 MiB)', async () => {
      const c = await codec()
      const input = Buffer.concat([telemetry(60_000), crypto.randomBytes(8 * MiB), Buffer.alloc(8 * MiB, 7)])
      const packed = await c.compress(input, { level: 1 })
      const out = await c.decompress(packed, { maxOutputBytes: input.length })
      expect(out.length).toBe(input.length)
      expect(out.equals(input)).toBe(true)
    })

    it('stops at maxOutputBytes with DecompressLimitError', async () => {
      const c = await codec()
      const input = telemetry(20_000)
      const packed = await c.compress(input)
      await expect(c.decompress(packed, { maxOutputBytes: input.length - 1 })).rejects.toBeInstanceOf(
        DecompressLimitError,
      )
      await expect(c.decompress(packed, { maxOutputBytes: 1000 })).rejects.toBeInstanceOf(
        DecompressLimitError,
      )
      const err = await c.decompress(packed, { maxOutputBytes: 1000 }).catch((e) => e)
      expect(err.limit).toBe(1000)
      expect(err.message).toMatch(/1000 bytes/)
      // Exactly at the cap is fine.
      expect((await c.decompress(packed, { maxOutputBytes: input.length })).length).toBe(input.length)
    })

    it('is reusable after an error', async () => {
      const c = await codec()
      const input = telemetry(5000)
      const packed = await c.compress(input)
      await expect(c.decompress(packed, { maxOutputBytes: 10 })).rejects.toThrow()
      if (c.encoding !== 'identity')
        await expect(c.decompress(Buffer.from('garbage!'), { maxOutputBytes: 100 })).rejects.toThrow()
      expect((await c.decompress(packed, { maxOutputBytes: input.length })).equals(input)).toBe(true)
    })

    if (opts.bomb) {
      const bomb = opts.bomb
      it('fails fast with bounded memory on a bomb expanding to more than 1 GiB', async () => {
        const c = await codec()
        const input = await bomb(1100 * MiB)
        expect(input.length).toBeLessThan(2 * MiB)
        const before = memoryInUse()
        const started = Date.now()
        const err = await c.decompress(input, { maxOutputBytes: 16 * MiB }).catch((e) => e)
        expect(err).toBeInstanceOf(DecompressLimitError)
        // Generous bounds: the point is "never near 1 GiB", not a speed target.
        expect(Date.now() - started).toBeLessThan(10_000)
        expect(memoryInUse() - before).toBeLessThan(128 * MiB)
      })
    }

    for (const [name, make] of Object.entries(opts.hostile ?? {})) {
      it(`rejects a hostile input without allocating what it claims: ${name}`, async () => {
        const c = await codec()
        const before = memoryInUse()
        const err = await c.decompress(make(), { maxOutputBytes: 64 * MiB }).catch((e) => e)
        expect(err instanceof CorruptInputError || err instanceof DecompressLimitError).toBe(true)
        expect(memoryInUse() - before).toBeLessThan(128 * MiB)
      })
    }

    it('gives a clear CorruptInputError for input it cannot decode', async () => {
      const c = await codec()
      if (c.encoding === 'identity') {
        // Nothing is corrupt to the identity codec: bytes come back as they are.
        const junk = crypto.randomBytes(100)
        expect((await c.decompress(junk, { maxOutputBytes: 100 })).equals(junk)).toBe(true)
        return
      }
      const packed = await c.compress(telemetry(2000))
      const cases: Record<string, Buffer> = {
        garbage: Buffer.from('this is not compressed at all, just text'),
        random: crypto.randomBytes(4096),
        truncated: packed.subarray(0, Math.floor(packed.length / 2)),
        empty: Buffer.alloc(0),
      }
      for (const [name, input] of Object.entries(cases)) {
        const err = await c.decompress(input, { maxOutputBytes: 64 * MiB }).catch((e) => e)
        expect(err, name).toBeInstanceOf(CorruptInputError)
        expect(err.code).toBe('CORRUPT_INPUT')
        expect(err.message, name).toMatch(new RegExp(`^${c.name}: `))
      }
    })
  })
}

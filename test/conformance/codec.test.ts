import zlib from 'node:zlib'
import { describe, expect, it } from 'vitest'
import { ConfigError } from '../../src/shared/errors.js'
import { codecForEncoding, resolveCodec } from '../../src/core/compression/registry.js'
import { codecConformance } from '../../src/testing/index.js'

const MiB = 1 << 20

/** A zstd frame header: magic, descriptor, optional window descriptor and content size. */
function zstdHeader({ contentSize, windowLog }: { contentSize?: bigint; windowLog?: number }): Buffer {
  const magic = Buffer.from([0x28, 0xb5, 0x2f, 0xfd])
  if (contentSize === undefined) {
    // No content size, window descriptor present.
    return Buffer.concat([magic, Buffer.from([0x00, ((windowLog ?? 17) - 10) << 3])])
  }
  const fcs = Buffer.alloc(8)
  fcs.writeBigUInt64LE(contentSize)
  if (windowLog === undefined) return Buffer.concat([magic, Buffer.from([0xe0]), fcs]) // single segment
  return Buffer.concat([magic, Buffer.from([0xc0, (windowLog - 10) << 3]), fcs])
}

/** Block header: last flag, type (0 raw, 1 RLE), size. */
function zstdBlock(last: boolean, type: 0 | 1, size: number, content: Buffer): Buffer {
  const v = (last ? 1 : 0) | (type << 1) | (size << 3)
  return Buffer.concat([Buffer.from([v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff]), content])
}

/** One frame of RLE blocks: 4 bytes of input per 128 KiB of output, no content size declared. */
function zstdRleBomb(bytes: number): Buffer {
  const block = 128 * 1024
  const n = Math.ceil(bytes / block)
  const parts = [zstdHeader({ windowLog: 17 })]
  for (let i = 0; i < n; i++) parts.push(zstdBlock(i === n - 1, 1, block, Buffer.from([0x41])))
  return Buffer.concat(parts)
}

/** Many concatenated gzip members of zeros (each ~1 KiB expanding to 1 MiB). */
function gzipBomb(bytes: number): Buffer {
  const member = zlib.gzipSync(Buffer.alloc(MiB), { level: 9 })
  return Buffer.concat(Array.from({ length: Math.ceil(bytes / MiB) }, () => member))
}

codecConformance('zstd', () => resolveCodec('zstd'), {
  bomb: zstdRleBomb,
  hostile: {
    'single-segment frame claiming 1 TiB': () =>
      Buffer.concat([zstdHeader({ contentSize: 1n << 40n }), zstdBlock(true, 0, 16, Buffer.alloc(16, 1))]),
    'frame claiming 1 TiB with a small window': () =>
      Buffer.concat([
        zstdHeader({ contentSize: 1n << 40n, windowLog: 17 }),
        zstdBlock(false, 0, 16, Buffer.alloc(16, 1)),
      ]),
    'frame asking for a 2 GiB window': () =>
      Buffer.concat([zstdHeader({ windowLog: 31 }), zstdBlock(true, 0, 4, Buffer.alloc(4))]),
  },
})
codecConformance('gzip', () => resolveCodec('gzip'), { bomb: gzipBomb })
codecConformance('none', () => resolveCodec('none'))

describe('codec registry', () => {
  it('maps Content-Encoding tokens to built-in codecs', async () => {
    expect((await codecForEncoding('zstd')).name).toBe('zstd')
    expect((await codecForEncoding('GZIP')).name).toBe('gzip')
    expect((await codecForEncoding('identity')).name).toBe('none')
    expect((await codecForEncoding(undefined)).name).toBe('none')
  })

  it('rejects an unknown encoding with ConfigError 78 listing known names', async () => {
    const err = await codecForEncoding('br').catch((e) => e)
    expect(err).toBeInstanceOf(ConfigError)
    expect(err.exitCode).toBe(78)
    expect(err.suggestion).toMatch(/zstd.*gzip.*identity/)
  })

  it('rejects an unknown codec name with the list of built-ins', async () => {
    const err = await resolveCodec('lz5-nope').catch((e) => e)
    expect(err).toBeInstanceOf(ConfigError)
    expect(err.suggestion).toMatch(/zstd, gzip, none/)
  })

  it('reuses one instance per built-in codec', async () => {
    expect(await resolveCodec('zstd')).toBe(await resolveCodec('zstd'))
  })
})

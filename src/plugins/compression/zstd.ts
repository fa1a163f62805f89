import { createRequire } from 'node:module'
import { CorruptInputError, DecompressLimitError, type Codec } from '../../core/compression/codec.js'

type Binding = typeof import('zstd-napi/binding.js')

const require = createRequire(import.meta.url)

/** Largest window a frame may ask for (16 MiB): bounds decoder memory whatever the frame says. */
const WINDOW_LOG_MAX = 24
/** Output is produced in chunks of at most this size, unless the frame header says less than the cap. */
const MAX_CHUNK = 4 << 20

/**
 * zstd via the native zstd-napi binding. Decompression is a streaming loop
 * over fixed-size output chunks that counts bytes and stops at the cap: the
 * simple API would allocate whatever content size a frame header claims.
 * A header's content size is trusted only within the cap (the caller's
 * reserved room): the output is then one buffer of exactly that size, not
 * chunks plus their concatenation, which left as much again as garbage per
 * body (a 60 MB batch: 60 MB more resident until the next collection) and
 * can be handed to another thread whole (broker store, ingestJson).
 */
let getFrameContentSize: Binding['getFrameContentSize']

export function createZstdCodec(): Codec {
  const binding = require('zstd-napi/binding.js') as Binding
  getFrameContentSize = binding.getFrameContentSize
  const minChunk = binding.dStreamOutSize()
  let cctx: InstanceType<Binding['CCtx']> | undefined
  let dctx: InstanceType<Binding['DCtx']> | undefined

  return {
    name: 'zstd',
    encoding: 'zstd',
    async compress(input, options = {}) {
      const level = Math.max(1, Math.min(22, options.level || 3))
      cctx ??= new binding.CCtx()
      const out = Buffer.allocUnsafe(binding.compressBound(input.length))
      const n = cctx.compress(out, input, level)
      return out.subarray(0, n)
    },
    async decompress(input, { maxOutputBytes }) {
      if (input.length === 0) throw new CorruptInputError('zstd: corrupt input (empty body)')
      if (!dctx) {
        dctx = new binding.DCtx()
        dctx.setParameter(binding.DParameter.windowLogMax, WINDOW_LOG_MAX)
      }
      dctx.reset(binding.ResetDirective.sessionOnly)
      // Sized for the usual ratio of JSON telemetry (often 15-25x), so that one chunk holds a batch.
      const chunkSize = Math.min(MAX_CHUNK, Math.max(minChunk, input.length * 32))
      const chunks: Buffer[] = []
      let total = 0
      let src: Buffer = input
      let stalls = 0
      let exact = claimedSize(input, maxOutputBytes)
      for (;;) {
        // One byte more than the remaining allowance, so going over the cap is seen.
        const room = exact ?? Math.min(chunkSize, maxOutputBytes - total + 1)
        exact = undefined
        const dst = Buffer.allocUnsafe(room)
        let ret: number, produced: number, consumed: number
        try {
          ;[ret, produced, consumed] = dctx.decompressStream(dst, src)
        } catch (err) {
          dctx.reset(binding.ResetDirective.sessionOnly)
          throw corrupt(err)
        }
        total += produced
        if (total > maxOutputBytes) {
          dctx.reset(binding.ResetDirective.sessionOnly)
          throw new DecompressLimitError(maxOutputBytes)
        }
        if (produced > 0) chunks.push(produced === dst.length ? dst : dst.subarray(0, produced))
        src = src.subarray(consumed)
        if (ret === 0) {
          // A frame ended; more input means another frame follows.
          if (src.length === 0) break
          continue
        }
        if (src.length === 0 && produced < dst.length) {
          dctx.reset(binding.ResetDirective.sessionOnly)
          throw new CorruptInputError('zstd: corrupt input (truncated frame)')
        }
        stalls = produced === 0 && consumed === 0 ? stalls + 1 : 0
        if (stalls > 2) {
          dctx.reset(binding.ResetDirective.sessionOnly)
          throw new CorruptInputError('zstd: corrupt input (decoder made no progress)')
        }
      }
      return chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, total)
    },
  }
}

/** The first frame's content size from its header, when given and within the cap. */
function claimedSize(input: Buffer, cap: number): number | undefined {
  let n: number | null
  try {
    n = getFrameContentSize(input)
  } catch {
    return undefined
  }
  return n !== null && n > 0 && n <= cap ? n : undefined
}

function corrupt(err: unknown): CorruptInputError {
  const msg = (err as Error)?.message ?? String(err)
  if (/too much memory|window/i.test(msg)) {
    return new CorruptInputError(
      `zstd: frame needs a window larger than ${(1 << WINDOW_LOG_MAX) >> 20} MiB (${msg})`,
    )
  }
  return new CorruptInputError(`zstd: corrupt input (${msg})`)
}

export default createZstdCodec

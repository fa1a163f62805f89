import zlib from 'node:zlib'
import { promisify } from 'node:util'
import { CorruptInputError, DecompressLimitError, type Codec } from '../../core/compression/codec.js'

const gzip = promisify(zlib.gzip)
const gunzip = promisify(zlib.gunzip)

/** gzip via node:zlib. Levels above 9 are clamped to 9. */
export function createGzipCodec(): Codec {
  return {
    name: 'gzip',
    encoding: 'gzip',
    async compress(input, options = {}) {
      const level = Math.max(0, Math.min(9, options.level ?? 6))
      return gzip(input, { level })
    },
    async decompress(input, { maxOutputBytes }) {
      if (input.length === 0) throw new CorruptInputError('gzip: corrupt input (empty body)')
      try {
        // zlib stops inflating as soon as the output passes maxOutputLength.
        return await gunzip(input, { maxOutputLength: Math.max(1, maxOutputBytes) })
      } catch (err) {
        const e = err as NodeJS.ErrnoException
        if (e.code === 'ERR_BUFFER_TOO_LARGE' || e instanceof RangeError) {
          throw new DecompressLimitError(maxOutputBytes)
        }
        throw new CorruptInputError(`gzip: corrupt input (${e.message})`)
      }
    },
  }
}

export default createGzipCodec

import { DecompressLimitError, type Codec } from '../../core/compression/codec.js'

/** No compression: the body is sent as is (`Content-Encoding: identity`). */
export function createNoneCodec(): Codec {
  return {
    name: 'none',
    encoding: 'identity',
    async compress(input) {
      return input
    },
    async decompress(input, { maxOutputBytes }) {
      if (input.length > maxOutputBytes) throw new DecompressLimitError(maxOutputBytes)
      return input
    },
  }
}

export default createNoneCodec

/**
 * Batch compression plugin interface (the contract core owns; the built-ins
 * `zstd` (default), `gzip` and `none` live in src/plugins/compression/).
 * Every codec must pass src/testing/codec-conformance.ts (`rmq/testing`).
 */
export interface Codec {
  readonly name: string
  /** HTTP Content-Encoding token (`zstd`, `gzip`, `identity`). */
  readonly encoding: string
  compress(input: Buffer, options?: { level?: number }): Promise<Buffer>
  /**
   * Decompress, counting output bytes and stopping at maxOutputBytes with a
   * DecompressLimitError, without allocating for sizes a frame merely claims.
   */
  decompress(input: Buffer, options: { maxOutputBytes: number }): Promise<Buffer>
}

export type CodecFactory = () => Codec | Promise<Codec>

export class DecompressLimitError extends Error {
  readonly code = 'DECOMPRESS_LIMIT'
  constructor(readonly limit: number) {
    super(`decompressed size exceeds the limit of ${limit} bytes`)
  }
}

export class CorruptInputError extends Error {
  readonly code = 'CORRUPT_INPUT'
}

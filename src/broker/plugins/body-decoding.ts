/**
 * Plugin `rmq-body-decoding`: request bodies arrive as raw bytes up to the
 * body limit, are decompressed by their Content-Encoding through the codec
 * plugins with the decompressed-size cap, then parsed as JSON or as frames
 * (docs/protocol.md). Every failure is an HttpError with its own code.
 */
import { isUtf8 } from 'node:buffer'
import type { FastifyPluginAsync, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { decodeFrames, FRAMES_CONTENT_TYPE, MalformedFramesError } from '../../protocol/batch.js'
import { HttpError } from '../http-error.js'

const bodyDecoding: FastifyPluginAsync = async (app) => {
  const { limits } = app.broker.options
  // The module is imported once: an import() per request, even of a module already loaded, goes
  // through the ES module loader again (V8's map log showed it setting up new prototypes each time).
  let compression: Promise<typeof import('../../core/compression/registry.js')> | undefined
  const decompressBody = async (req: FastifyRequest, raw: Buffer): Promise<Buffer> => {
    const { codecForEncoding, CorruptInputError, DecompressLimitError } = await (compression ??=
      import('../../core/compression/registry.js'))
    const encoding = req.headers['content-encoding']
    let codec
    try {
      codec = await codecForEncoding(Array.isArray(encoding) ? encoding.join(',') : encoding)
    } catch {
      throw new HttpError(
        415,
        'UNSUPPORTED_ENCODING',
        `unsupported Content-Encoding ${JSON.stringify(encoding)}`,
      )
    }
    try {
      return await codec.decompress(raw, { maxOutputBytes: limits.decompressedBytes })
    } catch (err) {
      if (err instanceof DecompressLimitError)
        throw new HttpError(
          413,
          'DECOMPRESSED_TOO_LARGE',
          `decompressed body exceeds the limit of ${limits.decompressedBytes} bytes`,
        )
      if (err instanceof CorruptInputError) throw new HttpError(400, 'CORRUPT_BODY', (err as Error).message)
      throw err
    }
  }
  app.removeContentTypeParser(['application/json'])
  app.addContentTypeParser(
    'application/json',
    { parseAs: 'buffer' },
    async (req: FastifyRequest, raw: Buffer) => {
      const text = await decompressBody(req, raw)
      // JSON.parse would read invalid UTF-8 as U+FFFD and store it so; the frames path refuses it too.
      if (!isUtf8(text)) throw new HttpError(400, 'INVALID_UTF8', 'the JSON body is not valid UTF-8')
      try {
        return JSON.parse(text.toString('utf8'))
      } catch (err) {
        throw new HttpError(400, 'MALFORMED_JSON', `the body is not valid JSON: ${(err as Error).message}`)
      }
    },
  )
  // A batch as frames: validated like a JSON one once its payloads are cut out.
  app.addContentTypeParser(
    FRAMES_CONTENT_TYPE,
    { parseAs: 'buffer' },
    async (req: FastifyRequest, raw: Buffer) => {
      const buf = await decompressBody(req, raw)
      try {
        return decodeFrames(buf)
      } catch (err) {
        if (err instanceof MalformedFramesError)
          throw new HttpError(400, 'MALFORMED_FRAMES', `the frames body is not valid: ${err.message}`)
        throw err
      }
    },
  )
  // Load the codecs (zstd's native binding) now rather than in the first batch's request.
  app.addHook('onReady', async () => {
    const { codecForEncoding } = await (compression ??= import('../../core/compression/registry.js'))
    await Promise.all(['zstd', 'gzip'].map((encoding) => codecForEncoding(encoding)))
  })
}

export default fp(bodyDecoding, { name: 'rmq-body-decoding', fastify: '5.x', dependencies: ['rmq-context'] })

/**
 * Plugin `rmq-body-decoding`: request bodies arrive as raw bytes up to the
 * body limit, are decompressed by their Content-Encoding through the codec
 * plugins with the decompressed-size cap, then parsed as JSON or as frames
 * (docs/protocol.md). Every failure is an HttpError with its own code.
 *
 * Decompressed bodies of all requests in progress share one budget
 * (broker.limits.inFlightBytes): a request reserves room for 32 times its
 * compressed size (at least 1 MiB) before it decompresses, with that as the
 * output cap, then if it decodes to more the most one request may have; it
 * keeps only what it decoded, and gives it back when its response ends. So the
 * broker's memory for bodies stays bounded however many arrive at once, and a
 * body that does not fit now gets 503 with Retry-After instead.
 */
import type { FastifyPluginAsync, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { decodeFrames, FRAMES_CONTENT_TYPE, MalformedFramesError } from '../../protocol/batch.js'
import { JsonBytes, parseJsonBody } from '../batch-checks.js'
import { HttpError } from '../http-error.js'
import { limitOf } from '../options.js'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** JSON bodies over LARGE_JSON_BYTES reach the handler as JsonBytes, not parsed. */
    jsonBytes?: boolean
  }
}

type ErrorClass = new (...args: any[]) => Error
/** A body is first given room for this many times its compressed size (at least MIN_RESERVE). */
const RATIO_HINT = 32
const MIN_RESERVE = 1 << 20
/**
 * A JSON body that decodes to more than this, on a route whose config says
 * `jsonBytes: true`, is handed to it as its bytes (JsonBytes), not parsed:
 * the route may parse it off the event loop (routes/batches.ts).
 */
export const LARGE_JSON_BYTES = 4 << 20

/** What a request holds of the in-flight budget; released (once) when its response ends or is aborted. */
const HOLD = Symbol('rmq.inFlightHold')
interface Hold {
  bytes: number
  open: boolean
}
type Holding = FastifyRequest & { [HOLD]?: Hold }

const bodyDecoding: FastifyPluginAsync = async (app) => {
  const { limits } = app.broker.options
  const budget = limitOf(limits, 'inFlightBytes')
  let used = 0
  // Kept for bodies that need at most MIN_RESERVE: a quarter of the budget, at most 8 MiB.
  const headroom = Math.min(8 << 20, Math.floor(budget / 4))
  if (budget > 0)
    app.addHook('onRequest', async (req: Holding, reply) => {
      const hold: Hold = { bytes: 0, open: true }
      req[HOLD] = hold
      const end = () => {
        if (!hold.open) return
        hold.open = false
        used -= hold.bytes
        hold.bytes = 0
      }
      reply.raw.once('finish', end).once('close', end)
    })
  /** Reserve `want` bytes for this request's output, or refuse it for now (503) without decoding anything. */
  const reserve = (req: Holding, want: number): number => {
    const hold = req[HOLD]
    if (budget <= 0 || !hold) return limits.decompressedBytes
    // The last headroom bytes are only for small bodies: large batches never lock small ones out.
    const n = want
    if (n > budget - used - (want > MIN_RESERVE ? headroom : 0) || !hold.open) throw busy(budget)
    used += n
    hold.bytes += n
    return n
  }
  /** Keep `actual` of the `reserved` bytes. */
  const settle = (req: Holding, reserved: number, actual: number) => {
    const hold = req[HOLD]
    if (budget <= 0 || !hold?.open) return
    const back = Math.max(0, reserved - actual)
    used -= back
    hold.bytes -= back
  }
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
    // First guess from the compressed size (so a small body never needs much of the budget), then the full cap.
    // The most one request can ever have: a body that does not fit in it is too large, not early.
    const largest =
      budget > 0
        ? Math.min(limits.decompressedBytes, Math.max(MIN_RESERVE, budget - headroom))
        : limits.decompressedBytes
    let want = Math.min(largest, Math.max(MIN_RESERVE, raw.length * RATIO_HINT))
    for (;;) {
      const cap = reserve(req, want)
      try {
        const out = await codec.decompress(raw, { maxOutputBytes: cap })
        settle(req, cap, out.length)
        return out
      } catch (err) {
        settle(req, cap, 0)
        // Larger than the guess: once more with the most one request may have (if that is free now).
        if (err instanceof DecompressLimitError && cap < largest) {
          want = largest
          continue
        }
        throw decodeError(err, CorruptInputError, DecompressLimitError, largest)
      }
    }
  }
  const decodeError = (err: unknown, Corrupt: ErrorClass, Limit: ErrorClass, largest: number): unknown => {
    if (err instanceof Limit)
      return new HttpError(
        413,
        'DECOMPRESSED_TOO_LARGE',
        largest < limits.decompressedBytes
          ? `decompressed body exceeds broker.limits.inFlightBytes (${largest} bytes), the most one request may decode`
          : `decompressed body exceeds the limit of ${limits.decompressedBytes} bytes`,
      )
    if (err instanceof Corrupt) return new HttpError(400, 'CORRUPT_BODY', (err as Error).message)
    return err
  }
  app.removeContentTypeParser(['application/json'])
  app.addContentTypeParser(
    'application/json',
    { parseAs: 'buffer' },
    async (req: FastifyRequest, raw: Buffer) => {
      const bytes = await decompressBody(req, raw)
      if (bytes.length > LARGE_JSON_BYTES && req.routeOptions.config.jsonBytes) return new JsonBytes(bytes)
      return parseJsonBody(bytes)
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

function busy(budget: number): HttpError {
  return new HttpError(
    503,
    'BROKER_BUSY',
    `the broker is decoding ${budget} bytes of other requests (broker.limits.inFlightBytes); retry later`,
    { 'retry-after': '1' },
  )
}

export default fp(bodyDecoding, { name: 'rmq-body-decoding', fastify: '5.x', dependencies: ['rmq-context'] })

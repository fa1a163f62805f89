import fs from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import type { FastifyPluginAsync } from 'fastify'

/**
 * GET /: the dashboard, a static page (src/broker/dashboard/: HTML, JS, CSS,
 * no build step) plus uPlot from node_modules, all served from memory with a
 * strict Content-Security-Policy. The page reads /v1/nodes, /v1/alerts and
 * GET /v1/history (fleet samples for the charts, ./history.ts) with the token
 * the operator gives it when broker.auth=token.
 */
const here = path.dirname(fileURLToPath(import.meta.url))

/** src/broker/dashboard, from src/broker/routes (tsx, tests) or from dist/broker/routes (built). */
export function dashboardDir(): string {
  const candidates = [path.join(here, '../dashboard'), path.join(here, '../../../src/broker/dashboard')]
  const dir = candidates.find((d) => fs.existsSync(path.join(d, 'index.html')))
  if (!dir) throw new Error(`the dashboard files are missing (looked in ${candidates.join(', ')})`)
  return dir
}

const CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ')

const dashboard: FastifyPluginAsync = async (app) => {
  const dir = dashboardDir()
  const require = createRequire(import.meta.url)
  const files: Record<string, { type: string; body: Buffer }> = {
    '/': { type: 'text/html; charset=utf-8', body: fs.readFileSync(path.join(dir, 'index.html')) },
    '/dashboard/app.js': {
      type: 'text/javascript; charset=utf-8',
      body: fs.readFileSync(path.join(dir, 'app.js')),
    },
    '/dashboard/style.css': {
      type: 'text/css; charset=utf-8',
      body: fs.readFileSync(path.join(dir, 'style.css')),
    },
    '/dashboard/uplot.js': {
      type: 'text/javascript; charset=utf-8',
      body: fs.readFileSync(require.resolve('uplot/dist/uPlot.iife.min.js')),
    },
    '/dashboard/uplot.css': {
      type: 'text/css; charset=utf-8',
      body: fs.readFileSync(require.resolve('uplot/dist/uPlot.min.css')),
    },
  }
  for (const [url, f] of Object.entries(files))
    app.get(url, { config: { permission: 'public' } }, async (_req, reply) =>
      reply
        .header('content-type', f.type)
        .header('cache-control', 'no-cache')
        .header('content-security-policy', CSP)
        .header('x-content-type-options', 'nosniff')
        .header('referrer-policy', 'no-referrer')
        .send(f.body),
    )
}
export default dashboard

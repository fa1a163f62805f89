/**
 * The dashboard in real headless Chromium (Debian's /usr/bin/chromium driven
 * by playwright-core) against a real broker process: without a session it
 * shows the sign-in, refuses a node token there, and signs in with a monitor
 * token into an HttpOnly, SameSite=Strict session cookie (no token in any URL
 * the browser requested, in the cookie or in the broker's log); it shows the
 * nodes with their states, updates when a node syncs, shows a fired alert
 * (short alert interval and noSyncFor from the environment), shows a node
 * whose token is older than neverSyncedFor as never-synced with its alert,
 * escapes node data, and saves a screenshot to test/artifacts/dashboard.png.
 */
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Browser, Page } from 'playwright-core'
import { openSqliteBrokerStore } from '../../src/broker/store/sqlite.js'
import { createNodeToken } from '../../src/broker/tokens.js'
import { makeBatch, message, postBatch, type BrokerProcess, startBrokerProcess } from '../helpers/broker.js'
import { ROOT } from '../helpers/cli.js'

const CHROMIUM = process.env.RMQ_CHROMIUM ?? '/usr/bin/chromium'
const chromiumMissing = fs.existsSync(CHROMIUM) ? undefined : `${CHROMIUM} is not installed`
if (chromiumMissing)
  console.warn(
    `SKIPPED dashboard browser test: ${chromiumMissing} (apt-get install chromium, or set RMQ_CHROMIUM)`,
  )

const ARTIFACTS = path.join(ROOT, 'test/artifacts')
const BOLD = '<b>gw-bold<i>'

describe.skipIf(chromiumMissing !== undefined)('dashboard in headless Chromium', () => {
  let broker: BrokerProcess
  let browser: Browser
  let page: Page
  const tokens: Record<string, string> = {}
  const errors: string[] = []
  /** Every URL the browser requested. */
  const urls: string[] = []
  let monitorToken = ''
  const seq: Record<string, number> = {}
  let keepAlive: NodeJS.Timeout | undefined

  /** One batch of `n` messages (0: a heartbeat) from `node` as the edge would send it. */
  const send = async (node: string, n: number, extra: Parameters<typeof makeBatch>[2] = {}) => {
    const now = Date.now()
    const msgs = Array.from({ length: n }, () => message((seq[node] = (seq[node] ?? 0) + 1), now))
    const res = await postBatch(
      broker.url,
      makeBatch(node, msgs, {
        batch: `b-${node}-${seq[node] ?? 0}-${now}`,
        clock: now,
        stats: { sync: { attempts: 10, successes: 9 }, storage: { totalBytes: 300_000, maxBytes: 1 << 20 } },
        ...extra,
      }),
      { token: tokens[node] },
    )
    expect(res.status).toBe(200)
  }
  const row = (node: string) => page.locator(`#nodes-body tr[data-node="${node.replace(/"/g, '\\"')}"]`)

  beforeAll(async () => {
    broker = await startBrokerProcess({
      auth: 'token',
      env: {
        RMQ_BROKER_ALERTS_INTERVAL: '300ms',
        RMQ_BROKER_ALERTS_NO_SYNC_FOR: '4s',
        RMQ_BROKER_ORDERING_MAX_LATENESS: '5m',
      },
    })
    for (const n of ['gw-ok', 'gw-silent', 'gw-behind', BOLD, 'gw-never'])
      tokens[n] = await broker.createToken(n)
    monitorToken = await broker.createToken('ops', { role: 'monitor' })
    // A gateway given its token two hours ago that never came up (neverSyncedFor is 1h by default).
    const store = await openSqliteBrokerStore({ dataDir: broker.dataDir })
    tokens['gw-unborn'] = (await createNodeToken(store, 'gw-unborn', Date.now() - 2 * 3_600_000)).token
    await store.close()
    await send('gw-ok', 40)
    await send('gw-silent', 5)
    await send(BOLD, 3)
    await send('gw-behind', 0, {
      backlog: { pending: 1200, bytes: 240_000, oldestTs: Date.now() - 12 * 60_000 },
    })
    // gw-ok and the others keep syncing; gw-silent does not.
    keepAlive = setInterval(() => {
      void send('gw-ok', 25).catch(() => {})
      void send(BOLD, 0).catch(() => {})
      void send('gw-behind', 0, {
        backlog: { pending: 1200, bytes: 240_000, oldestTs: Date.now() - 12 * 60_000 },
      }).catch(() => {})
    }, 700)

    const { chromium } = await import('playwright-core')
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    })
    page = await browser.newPage({ viewport: { width: 1440, height: 1000 }, deviceScaleFactor: 1 })
    page.on('request', (r) => urls.push(r.url()))
    page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`))
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(`console: ${m.text()}`)
    })
    page.on('dialog', (d) => {
      errors.push(`dialog: ${d.message()}`)
      void d.dismiss()
    })
  }, 60_000)

  afterAll(async () => {
    if (keepAlive) clearInterval(keepAlive)
    await browser?.close()
    await broker?.cleanup()
  })

  it('shows the sign-in without a session, refuses a node token, signs in with a monitor token', async () => {
    await page.goto(`${broker.url}/`)
    await page.locator('#auth:not(.hidden)').waitFor({ timeout: 10_000 })
    expect(await page.locator('#conn').getAttribute('data-state')).toBe('auth')
    expect(await page.locator('body[data-loaded="true"]').count()).toBe(0)
    // A node token may not see the fleet: the sign-in says why and stays.
    await page.fill('#token-input', tokens['gw-ok'])
    await page.click('#auth-form button[type="submit"]')
    await page
      .locator('#auth-error', { hasText: 'needs a monitor or admin token' })
      .waitFor({ timeout: 10_000 })
    expect(await page.locator('#auth').getAttribute('class')).not.toMatch(/hidden/)
    await page.fill('#token-input', monitorToken)
    await page.click('#auth-form button[type="submit"]')
    await page.locator('body[data-loaded="true"]').waitFor({ timeout: 10_000 })
    expect(await page.locator('#auth').getAttribute('class')).toMatch(/hidden/)
    // The session is a cookie the page cannot read, sent only to this site, and not the token.
    const cookies = await page.context().cookies()
    expect(cookies.map((c) => c.name)).toEqual(['rmq_session'])
    expect(cookies[0]).toMatchObject({ httpOnly: true, sameSite: 'Strict', path: '/' })
    expect(cookies[0].value).not.toContain(monitorToken)
    expect(await page.evaluate('document.cookie')).toBe('')
    // The 401 and 403 answers before signing in are logged by the browser; from here on nothing may fail.
    errors.length = 0
  })

  it('shows every node with its state, escaping node data', async () => {
    await row('gw-never').waitFor({ timeout: 10_000 })
    expect(await page.locator('#nodes-body tr').count()).toBe(6)
    expect(await row('gw-ok').getAttribute('data-health')).toBe('ok')
    expect(await row('gw-behind').getAttribute('data-health')).toBe('behind')
    expect(await row('gw-never').getAttribute('data-health')).toBe('never-seen')
    expect(await row('gw-unborn').getAttribute('data-health')).toBe('never-synced')
    expect(await row('gw-unborn').locator('.badge').textContent()).toBe('never-synced')
    expect(await row('gw-unborn').locator('td.since').getAttribute('title')).toMatch(/^token created \d{4}-/)
    // An amber edge, like behind rows.
    const edge = await row('gw-unborn').evaluate((e) => (globalThis as any).getComputedStyle(e).boxShadow)
    expect(edge).toMatch(/rgb\(210, 153, 34\)/)
    expect(await page.locator('#c-never-synced').textContent()).toBe('1')
    const alert = page.locator('#alerts-list li[data-rule="never-synced"][data-node="gw-unborn"]')
    await alert.waitFor({ timeout: 10_000 })
    expect(await alert.locator('.sev').textContent()).toBe('warning')
    expect(await alert.locator('.msg').textContent()).toMatch(
      /gw-unborn has had a token for 2h 0m and never synced \(limit 1h\)/,
    )
    expect(await row('gw-behind').locator('td').nth(4).textContent()).toBe('1,200')
    // The node id with markup is shown as text: no <b>/<i> element was created from it.
    expect(await row(BOLD).locator('td.node').textContent()).toBe(BOLD)
    expect(await page.locator('#nodes-body b, #nodes-body i, #alerts-list b').count()).toBe(0)
    expect(await page.locator('#c-never-seen').textContent()).toBe('1')
    expect(await page.locator('#c-behind').textContent()).toBe('1')
  })

  it('updates live: counters grow and the ingest chart fills', async () => {
    const before = Number((await row('gw-ok').locator('td').nth(6).textContent())!.replace(/,/g, ''))
    // Page-side functions reach the DOM through globalThis: this file is type-checked without the DOM library.
    await page.waitForFunction(
      (b) => {
        const cell = (globalThis as any).document.querySelector(
          '#nodes-body tr[data-node="gw-ok"] td:nth-child(7)',
        )
        return cell !== null && Number(cell.textContent.replace(/,/g, '')) > b
      },
      before,
      { timeout: 10_000 },
    )
    await page.waitForFunction(
      () => Number((globalThis as any).document.getElementById('c-rate').textContent) > 0,
      null,
      { timeout: 10_000 },
    )
    expect(await page.locator('#chart-rate canvas').count()).toBe(1)
    expect(await page.locator('#chart-backlog canvas').count()).toBe(1)
  })

  it('a silent node turns stale and its no-sync alert shows; the screenshot is saved', async () => {
    await page
      .locator('#nodes-body tr[data-node="gw-silent"][data-health="stale"]')
      .waitFor({ timeout: 15_000 })
    const alert = page.locator('#alerts-list li[data-rule="no-sync"][data-node="gw-silent"]')
    await alert.waitFor({ timeout: 10_000 })
    expect(await alert.locator('.sev').textContent()).toBe('critical')
    expect(await alert.locator('.msg').textContent()).toMatch(
      /gw-silent has not synced for \d+s \(limit 4s\)/,
    )
    expect(await page.locator('#c-stale').textContent()).toBe('1')
    // no-sync for gw-silent, never-synced for gw-unborn.
    expect(await page.locator('#c-alerts').textContent()).toBe('2')
    // Stale rows stand out: a red edge and tint.
    const shadow = await row('gw-silent').evaluate((e) => (globalThis as any).getComputedStyle(e).boxShadow)
    expect(shadow).toMatch(/rgb\(248, 81, 73\)/)
    // Sorting: click "Node" to sort by id, again to reverse.
    await page.locator('#nodes th[data-key="node"]').click()
    expect(await page.locator('#nodes-body tr').first().getAttribute('data-node')).toBe(BOLD)
    await page.locator('#nodes th[data-key="node"]').click()
    expect(await page.locator('#nodes-body tr').first().getAttribute('data-node')).toBe('gw-unborn')
    await page.locator('#nodes th[data-key="health"]').click()
    expect(await page.locator('#nodes-body tr').first().getAttribute('data-node')).toBe('gw-silent')
    await page.waitForTimeout(2500) // a few more chart points
    fs.mkdirSync(ARTIFACTS, { recursive: true })
    await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard.png'), fullPage: true })
    expect(fs.statSync(path.join(ARTIFACTS, 'dashboard.png')).size).toBeGreaterThan(10_000)
  })

  it('when the silent node syncs again it turns ok and the alert resolves', async () => {
    await send('gw-silent', 2)
    await page.locator('#nodes-body tr[data-node="gw-silent"][data-health="ok"]').waitFor({ timeout: 20_000 })
    await page
      .locator('#resolved-list li[data-rule="no-sync"][data-node="gw-silent"]')
      .waitFor({ state: 'attached', timeout: 20_000 })
    expect(await page.locator('#alerts-list li[data-node="gw-silent"]').count()).toBe(0)
    expect(await page.locator('#c-alerts').textContent()).toBe('1')
    // gw-unborn comes up at last: never-synced resolves, nothing is active. gw-silent keeps
    // syncing meanwhile (noSyncFor is 4 s), so that no new no-sync alert can come between.
    const silentAlive = setInterval(() => void send('gw-silent', 0).catch(() => {}), 700)
    try {
      await send('gw-unborn', 1)
      await page
        .locator('#nodes-body tr[data-node="gw-unborn"][data-health="ok"]')
        .waitFor({ timeout: 20_000 })
      await page.locator('#alerts-list li.none').waitFor({ timeout: 20_000 })
      expect(
        await page.locator('#resolved-list li[data-rule="never-synced"][data-node="gw-unborn"]').count(),
      ).toBe(1)
      expect(await page.locator('#c-alerts').textContent()).toBe('0')
      expect(await page.locator('#c-never-synced').textContent()).toBe('0')
    } finally {
      clearInterval(silentAlive)
    }
    expect(errors).toEqual([])
    // No token in any URL the browser requested, nor in any line the broker logged.
    expect(urls.length).toBeGreaterThan(10)
    const logs = broker.logs()
    expect(logs).toContain('dashboard sign-in')
    for (const t of [monitorToken, ...Object.values(tokens)]) {
      expect(urls.filter((u) => u.includes(t))).toEqual([])
      expect(logs.includes(t)).toBe(false)
    }
  })
})

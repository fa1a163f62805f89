/**
 * The pool's watchdog (postgres-watchdog.ts) against a real server, through a
 * proxy that can go silent: a connection hung on a silent server is closed;
 * one whose backend was terminated without the news arriving is closed; one
 * whose answer a dropped flow lost while its backend sits idle is closed; a
 * long statement that really runs, or a client with nothing in flight, is
 * left alone.
 */
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ConnectionWatchdog } from '../../src/broker/store/postgres-watchdog.js'
import { FaultProxy } from '../helpers/fault-proxy.js'
import { postgresAvailability, startPgCluster, type PgCluster } from '../helpers/postgres.js'

const avail = postgresAvailability()

describe.skipIf(!avail.ok)('postgres connection watchdog', () => {
  let cluster: PgCluster
  beforeAll(async () => {
    cluster = await startPgCluster()
  })
  afterAll(async () => {
    await cluster?.stop()
  })

  /** A pool through a fresh proxy, its watchdog checking clients out longer than 300 ms (stuck: for 1 s). */
  async function setup() {
    const proxy = await new FaultProxy({ host: '127.0.0.1', port: cluster.port }).start()
    const url = new URL(cluster.adminUrl)
    url.port = String(proxy.port)
    const config = { connectionString: url.toString(), connectionTimeoutMillis: 2000 }
    const pool = new pg.Pool({ ...config, max: 4 })
    pool.on('error', () => {})
    const watchdog = new ConnectionWatchdog({
      pg,
      clientConfig: () => config,
      label: () => `127.0.0.1:${proxy.port}`,
      hungAfterMs: 300,
      confirmMs: 1000,
    })
    watchdog.track(pool)
    watchdog.stop() // checks run when the test says, not also on the 5 s timer
    const done = async () => {
      watchdog.stop()
      await pool.end().catch(() => {})
      await proxy.stop()
    }
    return { proxy, pool, watchdog, done }
  }

  /** A watchdog over `pool` whose checks go straight to the server (only the pool's flows are faulty). */
  function directWatchdog(pool: pg.Pool, confirmMs: number, connectionString = cluster.adminUrl) {
    const watchdog = new ConnectionWatchdog({
      pg,
      clientConfig: () => ({ connectionString }),
      label: () => 'db',
      hungAfterMs: 300,
      confirmMs,
    })
    watchdog.track(pool)
    watchdog.stop() // checks run when the test says
    return watchdog
  }

  const outcome = (p: Promise<unknown>) =>
    p.then(
      () => 'answered',
      (e: unknown) => e as Error & { code?: string },
    )

  it('closes a query hung on a server gone silent: it fails with ETIMEDOUT, and the pool works once the link is back', async () => {
    const { proxy, pool, watchdog, done } = await setup()
    try {
      await pool.query('SELECT 1')
      proxy.setMode({ kind: 'partition' })
      const started = Date.now()
      const hung = outcome(pool.query('SELECT 2'))
      await new Promise((r) => setTimeout(r, 400))
      // Too young for the bound before: nothing closed at 0 ms. Now the check cannot connect.
      expect(await watchdog.check()).toBe(1)
      const err = await hung
      expect(err).toBeInstanceOf(Error)
      expect((err as Error & { code?: string }).code).toBe('ETIMEDOUT')
      expect((err as Error).message).toMatch(
        /was out of the pool for \d+ s and was closed: the server does not answer/,
      )
      expect(Date.now() - started).toBeLessThan(10_000)
      proxy.setMode({ kind: 'pass' })
      expect((await pool.query<{ n: number }>('SELECT 3 AS n')).rows[0].n).toBe(3)
      expect(watchdog.closed).toBe(1)
    } finally {
      await done()
    }
  })

  it('closes a connection whose backend is gone while its answer never came', async () => {
    const { proxy, pool, watchdog, done } = await setup()
    try {
      const c = await pool.connect()
      const pid = (c as unknown as { processID: number }).processID
      // The statement reaches the server; then the link goes silent and its backend is terminated:
      // the server's goodbye is lost. The link comes back for new connections only.
      const hung = outcome(c.query('SELECT pg_sleep(30)'))
      await new Promise((r) => setTimeout(r, 100))
      proxy.setMode({ kind: 'partition' })
      await cluster.admin(`SELECT pg_terminate_backend(${pid}, 5000)`) // waits until it has exited
      proxy.setMode({ kind: 'pass' })
      await new Promise((r) => setTimeout(r, 300))
      expect(await watchdog.check()).toBe(1)
      const err = await hung
      expect((err as Error & { code?: string }).code).toBe('ECONNRESET')
      expect((err as Error).message).toMatch(new RegExp(`its backend \\(pid ${pid}\\) is gone`))
      c.release(err as Error)
    } finally {
      await done()
    }
  })

  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

  /** Wait until the backend `pid` is in `state` (and `waitEvent`, when given), as the server sees it. */
  async function backendIs(pid: number, state: string, waitEvent?: string): Promise<void> {
    for (let i = 0; i < 200; i++) {
      const [b] = await cluster.rows<{ state: string; wait_event: string | null }>(
        `SELECT state, wait_event FROM pg_stat_activity WHERE pid = ${pid}`,
      )
      if (b?.state === state && (waitEvent === undefined || b.wait_event === waitEvent)) return
      await sleep(25)
    }
    throw new Error(`backend ${pid} never reached ${state} ${waitEvent ?? ''}`)
  }

  /** A pooled client whose statement reached the server, then whose flow was dropped (a NAT forgot it). */
  async function droppedFlow(
    proxy: FaultProxy,
    pool: pg.Pool,
    sql: string,
    ready?: (c: pg.PoolClient) => Promise<void>,
  ) {
    const c = await pool.connect()
    const pid = (c as unknown as { processID: number }).processID
    const hung = outcome(c.query(sql))
    await (ready ? ready(c) : backendIs(pid, 'active'))
    proxy.setMode({ kind: 'partition' })
    return { c, pid, hung }
  }

  const stream = (c: pg.PoolClient) =>
    (c as unknown as { connection: { stream: { bytesRead: number } } }).connection.stream

  it('closes a connection whose answer a dropped flow lost while its backend sits idle, once seen so for the confirm time', async () => {
    const { proxy, pool, watchdog, done } = await setup()
    let c: pg.PoolClient | undefined
    try {
      const f = await droppedFlow(proxy, pool, 'SELECT pg_sleep(0.3)')
      c = f.c
      await backendIs(f.pid, 'idle') // it answered; the answer went nowhere
      proxy.setMode({ kind: 'pass' }) // new connections work again, the dropped flow stays dropped
      await sleep(300)
      // A first sighting notes the time; a second one too soon after it (a slow check, then a fast
      // one) closes nothing; one after the confirm time with nothing changed closes it.
      expect(await watchdog.check()).toBe(0)
      expect(await watchdog.check()).toBe(0)
      await sleep(1050)
      expect(await watchdog.check()).toBe(1)
      const err = await f.hung
      expect((err as Error & { code?: string }).code).toBe('ECONNRESET')
      expect((err as Error).message).toMatch(
        new RegExp(
          `out of the pool for \\d+ s and was closed: its backend \\(pid ${f.pid}\\) has sat idle for \\d+ s`,
        ),
      )
      c.release(err as Error)
      c = undefined
      expect((await pool.query<{ n: number }>('SELECT 4 AS n')).rows[0].n).toBe(4)
    } finally {
      c?.release(true)
      await done()
    }
  })

  it('starts the confirm time again when the client reads a byte (an answer still arriving)', async () => {
    const { proxy, pool, watchdog, done } = await setup()
    let c: pg.PoolClient | undefined
    try {
      const f = await droppedFlow(proxy, pool, 'SELECT pg_sleep(0.3)')
      c = f.c
      await backendIs(f.pid, 'idle')
      proxy.setMode({ kind: 'pass' })
      await sleep(300)
      expect(await watchdog.check()).toBe(0)
      await sleep(1050)
      // As if part of the answer had come in meanwhile: not stuck, the time starts again.
      const read = stream(c).bytesRead
      Object.defineProperty(stream(c), 'bytesRead', { get: () => read + 1, configurable: true })
      expect(await watchdog.check()).toBe(0)
      await sleep(1050)
      expect(await watchdog.check()).toBe(1)
      await f.hung
    } finally {
      c?.release(true)
      await done()
    }
  })

  it('closes a connection whose backend is stuck sending a large answer into a dropped flow', async () => {
    const { proxy, pool, watchdog, done } = await setup()
    let c: pg.PoolClient | undefined
    try {
      // About 200 MB of answer; the flow is dropped once the client has read some of it.
      const f = await droppedFlow(
        proxy,
        pool,
        "SELECT repeat('x', 1000000) FROM generate_series(1, 200)",
        async (cl) => {
          for (let i = 0; i < 400 && stream(cl).bytesRead < 2_000_000; i++) await sleep(5)
        },
      )
      c = f.c
      await backendIs(f.pid, 'active', 'ClientWrite')
      proxy.setMode({ kind: 'pass' })
      await sleep(300)
      expect(await watchdog.check()).toBe(0)
      await sleep(1050)
      expect(await watchdog.check()).toBe(1)
      const err = await f.hung
      expect((err as Error & { code?: string }).code).toBe('ECONNRESET')
      expect((err as Error).message).toMatch(
        /has waited \d+ s to send its answer while the client read and wrote nothing/,
      )
      c.release(err as Error)
      c = undefined
    } finally {
      c?.release(true)
      await done()
    }
  })

  it('closes a connection whose statement was cut off mid-send (its backend waits for the rest)', async () => {
    const { proxy, pool, done } = await setup()
    // The check goes straight to the server: the stall holds every answer through the proxy.
    const watchdog = directWatchdog(pool, 1000)
    let c: pg.PoolClient | undefined
    try {
      c = await pool.connect()
      const pid = (c as unknown as { processID: number }).processID
      // A 4 MB parameter, of which the server gets the first 100 kB: then the flow is gone.
      proxy.setMode({ kind: 'stall', afterBytes: 100_000 })
      const hung = outcome(c.query('SELECT length($1::text) AS n', ['x'.repeat(4_000_000)]))
      await backendIs(pid, 'active', 'ClientRead')
      await sleep(300)
      expect(await watchdog.check()).toBe(0)
      await sleep(1050)
      expect(await watchdog.check()).toBe(1)
      const err = await hung
      expect((err as Error & { code?: string }).code).toBe('ECONNRESET')
      expect((err as Error).message).toMatch(/has waited \d+ s for the rest of the statement/)
      c.release(err as Error)
      c = undefined
    } finally {
      c?.release(true)
      watchdog.stop()
      await done()
    }
  })

  it('leaves alone a client with nothing in flight, a statement still on its way, and an answer on its way', async () => {
    const { proxy, pool, done } = await setup()
    // The check goes straight to the server: only the pool's own flows are slow.
    const watchdog = directWatchdog(pool, 300)
    let c: pg.PoolClient | undefined
    try {
      c = await pool.connect()
      await c.query('SELECT 1')
      await sleep(400)
      // Held between statements (its backend idle): it waits on nothing, so it is not stuck.
      expect(await watchdog.check()).toBe(0)
      await sleep(350)
      expect(await watchdog.check()).toBe(0)
      // A statement on its way (300 ms of latency) while the backend is still idle: the first
      // sighting closes nothing, and by the next one the backend runs it.
      proxy.setMode({ kind: 'delay', ms: 300 })
      const slow = outcome(c.query('SELECT pg_sleep(0.5)'))
      await sleep(20)
      expect(await watchdog.check()).toBe(0)
      await sleep(480)
      expect(await watchdog.check()).toBe(0)
      expect(await slow).toBe('answered')
      // An answer on its way (400 ms of latency): idle before the statement arrives, idle again
      // after it ran, with a new state_change, while the answer travels: two sightings, not one.
      proxy.setMode({ kind: 'delay', ms: 400 })
      const quick = outcome(c.query('SELECT pg_sleep(0.1)'))
      await sleep(20)
      expect(await watchdog.check()).toBe(0)
      await sleep(620)
      expect(await watchdog.check()).toBe(0)
      expect(await quick).toBe('answered')
      c.release()
      c = undefined
      expect(watchdog.closed).toBe(0)
    } finally {
      c?.release(true)
      watchdog.stop()
      await done()
    }
  })

  it('leaves a long statement that really runs alone', async () => {
    const { pool, watchdog, done } = await setup()
    try {
      const slow = outcome(pool.query('SELECT pg_sleep(1.5)'))
      await new Promise((r) => setTimeout(r, 500))
      expect(await watchdog.check()).toBe(0)
      await new Promise((r) => setTimeout(r, 400))
      expect(await watchdog.check()).toBe(0)
      expect(await slow).toBe('answered')
      expect(watchdog.closed).toBe(0)
    } finally {
      await done()
    }
  })

  it('closes nothing when the server answers the check with an error of its own (it is reachable)', async () => {
    const { pool, done } = await setup()
    const url = new URL(cluster.adminUrl)
    url.pathname = '/no_such_database'
    // The check's connection is refused by the server itself (3D000 here; "too many clients" alike).
    const watchdog = directWatchdog(pool, 1000, url.toString())
    try {
      const slow = outcome(pool.query('SELECT pg_sleep(1)'))
      await new Promise((r) => setTimeout(r, 500))
      expect(await watchdog.check()).toBe(0)
      expect(await slow).toBe('answered')
    } finally {
      watchdog.stop()
      await done()
    }
  })

  it('closes nothing on a reachable server for a client whose backend pid it does not know', async () => {
    const { pool, watchdog, done } = await setup()
    try {
      const c = await pool.connect()
      // As behind a pooler, or before the server said: no pid to look for.
      ;(c as unknown as { processID: number | null }).processID = null
      const slow = outcome(c.query('SELECT pg_sleep(1)'))
      await new Promise((r) => setTimeout(r, 500))
      expect(await watchdog.check()).toBe(0)
      expect(await slow).toBe('answered')
      c.release()
    } finally {
      await done()
    }
  })
})

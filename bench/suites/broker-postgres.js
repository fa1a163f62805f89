// Scale-out ingest: the workload of bench/suites/broker.js (100,000 ~200-byte
// messages in zstd batches of 500 from 4 concurrent senders, every batch
// durably committed before its 200) against real `rmq broker start`
// processes: one on SQLite, one on PostgreSQL, and two on one PostgreSQL
// database (senders spread over both), all measured in this same run.
// PostgreSQL is a throwaway cluster (test/helpers/postgres.ts, fsync on), or
// the server at BENCH_POSTGRES_URL (a database this suite may fill).
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { BATCH, SENDERS, TOTAL, buildWork, sendAll, startBroker } from './broker.js'

const here = path.dirname(fileURLToPath(import.meta.url))
const ROOT = path.resolve(here, '../..')

async function stopBroker(broker) {
  broker.child.kill('SIGTERM')
  await new Promise((r) => broker.child.once('exit', r))
}

/** Start `count` brokers on the store `open` gives, send the workload over them, return msg/s. */
async function measure({ count, env, open, dataDir }) {
  const { createNodeToken } = await import(path.join(ROOT, 'dist/broker/tokens.js'))
  const store = await open()
  const tokens = []
  for (let s = 0; s < SENDERS; s++) tokens.push((await createNodeToken(store, `bench-${s}`)).token)
  await store.close()
  const { work } = buildWork()
  const brokers = []
  try {
    for (let i = 0; i < count; i++) {
      const dir = path.join(dataDir, `broker-${i}`)
      fs.mkdirSync(dir, { recursive: true })
      brokers.push(await startBroker(dir, env))
    }
    const { seconds, retries } = await sendAll(
      work,
      brokers.map((b) => b.url),
      tokens,
    )
    const check = await open()
    const heads = await check.heads()
    await check.close()
    if (heads.total !== TOTAL) throw new Error(`stored ${heads.total} of ${TOTAL} messages`)
    return { rate: TOTAL / seconds, retries }
  } finally {
    for (const b of brokers) await stopBroker(b)
  }
}

export async function run() {
  const { openSqliteBrokerStore } = await import(path.join(ROOT, 'dist/broker/store/sqlite.js'))
  const { openPostgresBrokerStore } = await import(path.join(ROOT, 'dist/broker/store/postgres-open.js'))
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'rmq-bench-pg-'))
  let cluster
  const rows = []
  const label = `ingest ${TOTAL} msgs (${BATCH}/batch zstd, ${SENDERS} senders, durable)`
  try {
    const sqliteDir = path.join(dataDir, 'sqlite')
    const sqlite = await measure({
      count: 1,
      dataDir: sqliteDir,
      env: { RMQ_BROKER_STORE: 'sqlite' },
      open: () => openSqliteBrokerStore({ dataDir: path.join(sqliteDir, 'broker-0') }),
    })
    rows.push({ metric: `${label}, SQLite, 1 broker`, value: Math.round(sqlite.rate), unit: 'msg/s' })

    let databaseUrl = process.env.BENCH_POSTGRES_URL
    let fresh
    if (!databaseUrl) {
      // Reuse the tests' throwaway-cluster helper (TypeScript, loaded through tsx).
      const { tsImport } = await import('tsx/esm/api')
      const helper = await tsImport(path.join(ROOT, 'test/helpers/postgres.ts'), import.meta.url)
      const avail = helper.postgresAvailability()
      if (!avail.ok) {
        rows.push({ metric: 'PostgreSQL store', value: `skipped: ${avail.reason}`, unit: '', pass: false })
        return rows
      }
      cluster = await helper.startPgCluster()
      fresh = async () => (await cluster.createDatabase('rmq_bench')).url
    } else {
      const { default: pg } = await import('pg')
      fresh = async () => {
        const c = new pg.Client({ connectionString: databaseUrl })
        await c.connect()
        const { rows } = await c.query(`SELECT tablename FROM pg_tables WHERE tablename LIKE 'rmq\\_%'`)
        for (const r of rows) await c.query(`DROP TABLE ${r.tablename} CASCADE`)
        await c.end()
        return databaseUrl
      }
    }
    for (const count of [1, 2]) {
      const url = await fresh()
      const r = await measure({
        count,
        dataDir: path.join(dataDir, `pg-${count}`),
        env: { RMQ_BROKER_STORE: 'postgres', RMQ_BROKER_POSTGRES_URL: url },
        open: () => openPostgresBrokerStore({ dataDir: '', url }),
      })
      rows.push({
        metric: `${label}, PostgreSQL, ${count} broker${count > 1 ? 's' : ''}`,
        value: Math.round(r.rate),
        unit: 'msg/s',
        // One database serializes ingest (one releaser): a second broker must not cost more than a third.
        ...(count === 2
          ? { target: '>= 2/3 of 1 broker', pass: r.rate >= (rows[rows.length - 1].value * 2) / 3 }
          : {}),
      })
      if (r.retries)
        rows.push({ metric: `PostgreSQL ${count} broker(s): retries (429/503)`, value: r.retries })
    }
    rows.push({
      metric: 'PostgreSQL 1 broker / SQLite',
      value: rows[1].value / rows[0].value,
      unit: 'x',
    })
    return rows
  } finally {
    if (cluster) await cluster.stop()
    fs.rmSync(dataDir, { recursive: true, force: true })
  }
}

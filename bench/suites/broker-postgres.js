// Scale-out ingest: the workload of bench/suites/broker.js (100,000 ~200-byte
// messages in zstd batches of 500 from 4 concurrent senders, every batch
// durably committed before its 200) against real `rmq broker start`
// processes, all measured in this same run: one on SQLite and one on
// PostgreSQL, in turns, three times each (the main ratio compares their
// medians); two on one PostgreSQL database (senders spread over both);
// the same two PostgreSQL runs through a TCP proxy that holds every chunk
// 2 ms each way (a database on another host); and one broker through the
// proxy with 1 sender (one request at a time) against 4, and with 1 sender per
// broker (latency-bound: 2 senders on 1 broker, 1 each on 2 brokers).
// Every broker first takes 20,000 messages from direct producers of its
// own, untimed (a running broker, as in the broker suite).
// For every run: the brokers' CPU time per message; for every PostgreSQL
// run also the server's (the postmaster and its backends, from /proc) and
// the lock waits seen in pg_stat_activity (sampled every 20 ms); and how busy
// the whole machine was. For the 4-sender proxy runs, what all processes
// spent per message and the rate at which that fills the machine's cores.
// PostgreSQL is a throwaway cluster (test/helpers/postgres.ts, fsync on), with
// a fresh database for every run, dropped after it; or the server at
// BENCH_POSTGRES_URL (a database this suite may fill; no CPU figure then).
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { BATCH, SENDERS, TOTAL, WARM_MESSAGES, buildWork, sendAll, startBroker } from './broker.js'

const here = path.dirname(fileURLToPath(import.meta.url))
const ROOT = path.resolve(here, '../..')
const PROXY_MS = 2
/** Turns of SQLite and PostgreSQL 1 broker, for the main ratio. */
const REPEATS = 3
const TICKS = 100 // USER_HZ (clock ticks per second in /proc/<pid>/stat) on Linux

/** The share of the machine's CPU (all cores) that was busy during a run: near 100 % it is the limit. */
function busyRow(key, busy) {
  return { metric: `  machine CPU busy, ${os.cpus().length} cores (${key})`, value: busy * 100, unit: '%' }
}

/** The run with the median rate. */
function median(runs) {
  return [...runs].sort((a, b) => a.rate - b.rate)[Math.floor(runs.length / 2)]
}

function samplesRow(key, runs) {
  return {
    metric: `  every turn (${key})`,
    value: runs.map((r) => Math.round(r.rate)).join(', '),
    unit: 'msg/s',
  }
}

/**
 * What every process on the machine spent per message (brokers, PostgreSQL, this bench's senders
 * and proxy, anything else running), and the rate at which that cost would use all the cores: no
 * run on this machine at this cost per message can go faster, whatever the design's concurrency.
 */
function machineRows(key, r) {
  const cores = os.cpus().length
  return [
    {
      metric: `  bench process CPU per message, senders and proxy (${key})`,
      value: r.benchPerMsg,
      unit: 'µs',
    },
    { metric: `  machine CPU per message, all processes (${key})`, value: r.machinePerMsg, unit: 'µs' },
    {
      metric: `  rate at which that cost fills ${cores} cores (${key})`,
      value: Math.round((cores * 1e6) / r.machinePerMsg),
      unit: 'msg/s',
    },
  ]
}

async function stopBroker(broker) {
  broker.child.kill('SIGTERM')
  await new Promise((r) => broker.child.once('exit', r))
}

/** CPU seconds of a postmaster and all its children (live ones, and exited ones it has reaped). */
function serverCpu(pid) {
  const stat = (p) => {
    const s = fs.readFileSync(`/proc/${p}/stat`, 'utf8')
    return s.slice(s.lastIndexOf(')') + 2).split(' ')
  }
  try {
    const own = stat(pid)
    // Fields after the name, 0-based from state: utime 11, stime 12, cutime 13, cstime 14.
    let ticks = Number(own[11]) + Number(own[12]) + Number(own[13]) + Number(own[14])
    for (const d of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(d)) continue
      try {
        const f = stat(d)
        if (Number(f[1]) === pid) ticks += Number(f[11]) + Number(f[12])
      } catch {
        // gone meanwhile
      }
    }
    return ticks / TICKS
  } catch {
    return undefined
  }
}

/** CPU seconds of one process (all its threads). */
function processCpu(pid) {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ')
    return (Number(f[11]) + Number(f[12])) / TICKS
  } catch {
    return undefined
  }
}

/** Jiffies of the whole machine (all cores) from /proc/stat: busy (all but idle and iowait) and total. */
function machineCpu() {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1, 9).map(Number)
  const total = f.reduce((a, b) => a + b, 0)
  return { busy: total - f[3] - f[4], total }
}

/** Sample pg_stat_activity every 20 ms: backends waiting on a heavyweight lock, per sample. */
function sampleLocks(pg, url) {
  const client = new pg.Client({ connectionString: url })
  let stop = false
  const samples = []
  const events = new Map()
  const done = (async () => {
    await client.connect()
    while (!stop) {
      const { rows } = await client.query(
        `SELECT wait_event_type AS t, wait_event AS e, count(*)::int AS n FROM pg_stat_activity
         WHERE application_name = 'rmq-broker' AND state <> 'idle' GROUP BY 1, 2`,
      )
      let locked = 0
      for (const r of rows) {
        if (r.t === 'Lock') {
          locked += r.n
          events.set(r.e, (events.get(r.e) ?? 0) + r.n)
        }
      }
      samples.push(locked)
      await new Promise((r) => setTimeout(r, 20))
    }
    await client.end()
  })()
  return async () => {
    stop = true
    await done
    const mean = samples.reduce((a, b) => a + b, 0) / Math.max(1, samples.length)
    const top = [...events].sort((a, b) => b[1] - a[1])[0]
    return { mean, max: Math.max(0, ...samples), samples: samples.length, top: top ? top[0] : 'none' }
  }
}

/**
 * Start `count` brokers on the store `open` gives, send the workload over them, return msg/s.
 * Each broker first takes WARM_MESSAGES from 4 nodes of its own, untimed (as in the broker
 * suite): a running broker is measured, not one compiling its own code during the run, which
 * would charge two brokers two warm-ups. They are direct producers (which never hold the
 * watermark back) with older timestamps (so the timed messages are not late because of them):
 * the timed workload is the same as on a broker that took nothing before.
 */
async function measure({ count, env, open, dataDir, concurrent = SENDERS, watch, warm = true }) {
  const { createNodeToken } = await import(path.join(ROOT, 'dist/broker/tokens.js'))
  const store = await open()
  const tokensOf = async (prefix) => {
    const list = []
    for (let s = 0; s < SENDERS; s++) list.push((await createNodeToken(store, `${prefix}-${s}`)).token)
    return list
  }
  const tokens = await tokensOf('bench')
  const warmTokens = []
  for (let i = 0; i < count && warm; i++) warmTokens.push(await tokensOf(`warm${i}`))
  await store.close()
  const { work } = buildWork()
  const brokers = []
  try {
    for (let i = 0; i < count; i++) {
      const dir = path.join(dataDir, `broker-${i}`)
      fs.mkdirSync(dir, { recursive: true })
      brokers.push(await startBroker(dir, env))
    }
    for (let i = 0; i < count && warm; i++)
      await sendAll(
        buildWork({ prefix: `warm${i}`, total: WARM_MESSAGES, earlierMs: 600_000, direct: true }).work,
        [brokers[i].url],
        warmTokens[i],
      )
    const cpu0 = watch?.cpu()
    const brokerCpu = () => brokers.reduce((sum, b) => sum + (processCpu(b.child.pid) ?? NaN), 0)
    const broker0 = brokerCpu()
    const locks = watch?.locks()
    const machine0 = machineCpu()
    const self0 = process.cpuUsage()
    const { seconds, retries } = await sendAll(
      work,
      brokers.map((b) => b.url),
      tokens,
      { concurrent },
    )
    const cpu1 = watch?.cpu()
    const machine1 = machineCpu()
    const self = process.cpuUsage(self0)
    const benchPerMsg = (self.user + self.system) / TOTAL
    const machinePerMsg = ((machine1.busy - machine0.busy) / TICKS / TOTAL) * 1e6
    const busy = (machine1.busy - machine0.busy) / Math.max(1, machine1.total - machine0.total)
    const brokerPerMsg = ((brokerCpu() - broker0) / TOTAL) * 1e6
    const lockStats = locks ? await locks() : undefined
    const check = await open()
    const heads = await check.heads()
    await check.close()
    const stored = TOTAL + (warm ? count * WARM_MESSAGES : 0)
    if (heads.total !== stored) throw new Error(`stored ${heads.total} of ${stored} messages`)
    const cpuPerMsg = cpu0 !== undefined && cpu1 !== undefined ? ((cpu1 - cpu0) / TOTAL) * 1e6 : undefined
    return {
      rate: TOTAL / seconds,
      retries,
      cpuPerMsg,
      brokerPerMsg,
      lockStats,
      busy,
      benchPerMsg,
      machinePerMsg,
    }
  } finally {
    for (const b of brokers) await stopBroker(b)
  }
}

export async function run() {
  const { openSqliteBrokerStore } = await import(path.join(ROOT, 'dist/broker/store/sqlite.js'))
  const { openPostgresBrokerStore } = await import(path.join(ROOT, 'dist/broker/store/postgres-open.js'))
  const { default: pg } = await import('pg')
  const { tsImport } = await import('tsx/esm/api')
  const { FaultProxy } = await tsImport(path.join(ROOT, 'test/helpers/fault-proxy.ts'), import.meta.url)
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'rmq-bench-pg-'))
  let cluster
  let proxy
  const rows = []
  const label = `ingest ${TOTAL} msgs (${BATCH}/batch zstd, durable)`
  try {
    /** One SQLite run, on a store of its own. */
    const sqliteRun = (i, warm = true) => {
      const dir = path.join(dataDir, `sqlite-${i}${warm ? '' : '-cold'}`)
      return measure({
        warm,
        count: 1,
        dataDir: dir,
        env: { RMQ_BROKER_STORE: 'sqlite' },
        open: () => openSqliteBrokerStore({ dataDir: path.join(dir, 'broker-0') }),
      })
    }
    const sqliteRows = (sqlite, samples) => {
      rows.push({
        metric: `${label}, SQLite, 1 broker, 4 senders${samples ? ` (median of ${samples.length})` : ''}`,
        value: Math.round(sqlite.rate),
        unit: 'msg/s',
      })
      if (samples) rows.push(samplesRow('sqlite', samples))
      rows.push({ metric: '  broker CPU per message (sqlite)', value: sqlite.brokerPerMsg, unit: 'µs' })
      rows.push(busyRow('sqlite', sqlite.busy))
    }
    let databaseUrl = process.env.BENCH_POSTGRES_URL
    let fresh
    let postmaster
    if (!databaseUrl) {
      // Reuse the tests' throwaway-cluster helper (TypeScript, loaded through tsx).
      const helper = await tsImport(path.join(ROOT, 'test/helpers/postgres.ts'), import.meta.url)
      const avail = helper.postgresAvailability()
      if (!avail.ok) {
        sqliteRows(await sqliteRun(0))
        rows.push({ metric: 'PostgreSQL store', value: `skipped: ${avail.reason}`, unit: '', pass: false })
        return rows
      }
      cluster = await helper.startPgCluster()
      postmaster = Number(
        fs.readFileSync(path.join(cluster.dir, 'data', 'postmaster.pid'), 'utf8').split('\n')[0],
      )
      // Each run's database is dropped after it. Left in the cluster, earlier runs' databases made
      // later runs slower (measured: the server's CPU per message rose from about 11 to 14-16 µs
      // after four runs, and a proxy run after five others was 14-18 % slower than the same run
      // first; no autovacuum worker was seen and no checkpoint ran in them), so the two sides of a
      // ratio were measured on different servers. With the drop, ten runs in a row cost the same.
      fresh = async () => cluster.createDatabase('rmq_bench')
    } else {
      fresh = async () => {
        const c = new pg.Client({ connectionString: databaseUrl })
        await c.connect()
        const { rows } = await c.query(`SELECT tablename FROM pg_tables WHERE tablename LIKE 'rmq\\_%'`)
        for (const r of rows) await c.query(`DROP TABLE ${r.tablename} CASCADE`)
        await c.end()
        return { url: databaseUrl, drop: async () => {} }
      }
    }
    const u = new URL(databaseUrl ?? cluster.adminUrl)
    proxy = await new FaultProxy(
      { host: u.hostname, port: Number(u.port || 5432) },
      { kind: 'delay', ms: PROXY_MS },
    ).start()
    const viaProxy = (url) => {
      const p = new URL(url)
      p.hostname = '127.0.0.1'
      p.port = String(proxy.port)
      return p.toString()
    }
    const cases = [
      { key: 'pg1', count: 1, proxied: false, concurrent: SENDERS },
      { key: 'pg2', count: 2, proxied: false, concurrent: SENDERS },
      { key: 'px1', count: 1, proxied: true, concurrent: SENDERS },
      { key: 'px2', count: 2, proxied: true, concurrent: SENDERS },
      { key: 'px1s1', count: 1, proxied: true, concurrent: 1 },
      // Latency-bound (one request in flight per sender, the CPU not the limit): does a second
      // sender, or a second broker, add what one adds? Info rows, no target.
      { key: 'px1s2', count: 1, proxied: true, concurrent: 2 },
      { key: 'px2s2', count: 2, proxied: true, concurrent: 2 },
    ]
    /** One PostgreSQL run of case `c` on a fresh database. */
    const pgRun = async (c, i = 0, warm = true) => {
      const { url, drop } = await fresh()
      return measure({
        warm,
        count: c.count,
        concurrent: c.concurrent,
        dataDir: path.join(dataDir, `${c.key}-${i}${warm ? '' : '-cold'}`),
        env: { RMQ_BROKER_STORE: 'postgres', RMQ_BROKER_POSTGRES_URL: c.proxied ? viaProxy(url) : url },
        open: () => openPostgresBrokerStore({ dataDir: '', url }),
        watch: {
          cpu: () => (postmaster ? serverCpu(postmaster) : undefined),
          locks: () => sampleLocks(pg, url),
        },
      }).finally(drop)
    }
    const pgRows = (c, r, samples) => {
      const name = `${label}, PostgreSQL${c.proxied ? ` via ${PROXY_MS} ms proxy` : ''}, ${c.count} broker${
        c.count > 1 ? 's' : ''
      }, ${c.concurrent} sender${c.concurrent > 1 ? 's' : ''}${samples ? ` (median of ${samples.length})` : ''}`
      rows.push({ metric: name, value: Math.round(r.rate), unit: 'msg/s' })
      if (samples) rows.push(samplesRow(c.key, samples))
      rows.push({
        metric: `  broker CPU per message, all brokers (${c.key})`,
        value: r.brokerPerMsg,
        unit: 'µs',
      })
      if (r.cpuPerMsg !== undefined)
        rows.push({ metric: `  PostgreSQL CPU per message (${c.key})`, value: r.cpuPerMsg, unit: 'µs' })
      rows.push({
        metric: `  lock waits in pg_stat_activity (${c.key}): mean / max backends, top event`,
        value: `${r.lockStats.mean.toFixed(2)} / ${r.lockStats.max}, ${r.lockStats.top} (${r.lockStats.samples} samples)`,
      })
      rows.push(busyRow(c.key, r.busy))
      if (c.proxied && c.concurrent === SENDERS) rows.push(...machineRows(c.key, r))
      if (r.retries) rows.push({ metric: `  retries (429/503) (${c.key})`, value: r.retries })
    }
    // The main ratio's two sides take turns, REPEATS times: the VM's speed drifts within a run,
    // and one SQLite figure alone moved by a quarter between runs. The medians are compared.
    const sqliteSamples = []
    const pg1Samples = []
    for (let i = 0; i < REPEATS; i++) {
      sqliteSamples.push(await sqliteRun(i))
      pg1Samples.push(await pgRun(cases[0], i))
    }
    const sqlite = median(sqliteSamples)
    sqliteRows(sqlite, sqliteSamples)
    const results = { pg1: median(pg1Samples) }
    pgRows(cases[0], results.pg1, pg1Samples)
    rows.push({
      metric: '  PostgreSQL / SQLite, each turn',
      value: pg1Samples.map((r, i) => (r.rate / sqliteSamples[i].rate).toFixed(2)).join(', '),
    })
    // Info: the same pair on brokers started just before (no warm-up), as this suite measured
    // until December 7th: a fresh broker spends part of a run compiling its own code, which
    // costs the SQLite path (more of it runs in the broker) more than the PostgreSQL one.
    const coldSqlite = await sqliteRun(0, false)
    const coldPg = await pgRun(cases[0], 0, false)
    rows.push({
      metric: '  info: brokers started just before, no warm-up: SQLite, PostgreSQL',
      value: `${Math.round(coldSqlite.rate)}, ${Math.round(coldPg.rate)}`,
      unit: 'msg/s',
    })
    rows.push({
      metric: '  info: PostgreSQL / SQLite on brokers started just before',
      value: coldPg.rate / coldSqlite.rate,
      unit: 'x',
    })
    for (const c of cases.slice(1)) {
      results[c.key] = await pgRun(c)
      pgRows(c, results[c.key])
    }
    const ratio = (metric, a, b, min) => {
      const value = a / b
      rows.push({ metric, value, unit: 'x', target: `>= ${min}`, pass: value >= min })
    }
    ratio('PostgreSQL 1 broker / SQLite 1 broker', results.pg1.rate, sqlite.rate, 0.5)
    rows.push({
      metric: 'PostgreSQL 2 brokers / 1 broker',
      value: results.pg2.rate / results.pg1.rate,
      unit: 'x',
    })
    ratio(`via ${PROXY_MS} ms proxy: 2 brokers / 1 broker`, results.px2.rate, results.px1.rate, 1.7)
    ratio(`via ${PROXY_MS} ms proxy: 1 broker, 4 senders / 1 sender`, results.px1.rate, results.px1s1.rate, 3)
    rows.push({
      metric: `via ${PROXY_MS} ms proxy, 1 sender per broker: 2 brokers / 1 broker`,
      value: results.px2s2.rate / results.px1s1.rate,
      unit: 'x',
    })
    rows.push({
      metric: `via ${PROXY_MS} ms proxy, 1 broker: 2 senders / 1 sender`,
      value: results.px1s2.rate / results.px1s1.rate,
      unit: 'x',
    })
    return rows
  } finally {
    await proxy?.stop()
    if (cluster) await cluster.stop()
    fs.rmSync(dataDir, { recursive: true, force: true })
  }
}

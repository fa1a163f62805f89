/**
 * A damaged outbox (docs/operations.md "Repairing a damaged outbox"), on a
 * real file and a real broker process: 2,000 messages, the first 1,000 synced;
 * then pages of the file are overwritten with zeros (three leaves of the
 * `messages` b-tree, one among the sent rows and two among the pending ones,
 * and the root of the `pending_ts` index, which every publish writes). The
 * pages are picked with dbstat and their rows read from the page bytes, so
 * the seqs that must be lost are known exactly. Publish, sync and doctor stop
 * with exit 70 naming `rmq doctor --repair`; the repair recovers every other
 * message with its seq and status, reports the lost ranges, keeps the epoch;
 * the sync after it delivers the recovered pending messages once and nothing
 * the broker already had again.
 */
import fs from 'node:fs'
import path from 'node:path'
import Database from 'better-sqlite3'
import { describe, expect, it } from 'vitest'
import { allMessages, startBrokerProcess } from '../helpers/broker.js'
import { makeTempDir, runCli } from '../helpers/cli.js'
import { cleanupAfterEach } from '../helpers/cleanups.js'

const TOTAL = 2000
const SYNCED = 1000

/** The rowids (seqs) of the cells of table-leaf page `pageno` (SQLite file format, "B-tree pages"). */
function leafRowids(file: Buffer, pageSize: number, pageno: number): number[] {
  const o = (pageno - 1) * pageSize
  expect(file[o]).toBe(0x0d) // a table leaf
  const cells = file.readUInt16BE(o + 3)
  const out: number[] = []
  for (let i = 0; i < cells; i++) {
    let p = o + file.readUInt16BE(o + 8 + 2 * i)
    const varint = () => {
      let v = 0
      for (let k = 0; k < 9; k++) {
        const b = file[p++]
        if (k === 8) return v * 256 + b
        v = v * 128 + (b & 0x7f)
        if (!(b & 0x80)) break
      }
      return v
    }
    varint() // payload length
    out.push(varint())
  }
  return out
}

/** Consecutive seqs as [first, last] ranges. */
function ranges(seqs: number[]): Array<[number, number]> {
  const out: Array<[number, number]> = []
  for (const s of [...seqs].sort((a, b) => a - b)) {
    const last = out[out.length - 1]
    if (last && last[1] === s - 1) last[1] = s
    else out.push([s, s])
  }
  return out
}

describe('a damaged outbox: exit 70, doctor --repair, a sync after it', () => {
  const cleanup = cleanupAfterEach()

  it('publish, sync and doctor exit 70 naming the repair; the repair recovers every row of the undamaged pages; the next sync delivers them once', async () => {
    const broker = await startBrokerProcess({ auth: 'none' })
    cleanup(() => broker.cleanup())
    const tmp = makeTempDir('rmq-repair-')
    cleanup(() => tmp.cleanup())
    const env = { RMQ_NODE_ID: 'gw-r', RMQ_BROKER_URL: broker.url, RMQ_SYNC_BATCH_SIZE: '100' }
    const rmq = (args: string[], input?: string) =>
      runCli(args, { cwd: tmp.dir, env, input, timeoutMs: 90_000 })
    const file = path.join(tmp.dir, '.rmq', 'outbox.db')

    const lines = Array.from({ length: TOTAL }, (_, i) => `{"i":${i + 1},"pad":"${'x'.repeat(40)}"}`)
    const published = await rmq(['publish', 'plant/r', '--lines', '-f', '-'], lines.join('\n') + '\n')
    expect(published.code, published.stderr).toBe(0)
    const synced = await rmq(['sync', '--max-batches', String(SYNCED / 100), '--json'])
    expect(synced.code, synced.stderr).toBe(0)
    expect(JSON.parse(synced.stdout).messages).toBe(SYNCED)
    const before = await allMessages(broker.url)
    // Pipelined batches may commit in either order at the broker: compare as sets.
    expect(before.map((m) => m.seq).sort((x, y) => x - y)).toEqual(
      Array.from({ length: SYNCED }, (_, i) => i + 1),
    )
    const epoch = before[0].epoch

    // Everything is closed: fold the WAL into the file, then pick the pages to damage.
    const db = new Database(file)
    db.pragma('wal_checkpoint(TRUNCATE)')
    const pageSize = db.pragma('page_size', { simple: true }) as number
    const leaves = db
      .prepare("SELECT pageno FROM dbstat WHERE name = 'messages' AND pagetype = 'leaf' ORDER BY path")
      .pluck()
      .all() as number[]
    const indexRoot = db
      .prepare("SELECT pageno FROM dbstat WHERE name = 'pending_ts' AND path = '/'")
      .pluck()
      .get() as number
    db.close()
    expect(fs.existsSync(file + '-wal') ? fs.statSync(file + '-wal').size : 0).toBe(0)
    const bytes = fs.readFileSync(file)
    const rowsOf = leaves.map((p) => leafRowids(bytes, pageSize, p))
    expect(rowsOf.flat()).toEqual(Array.from({ length: TOTAL }, (_, i) => i + 1))
    // One leaf well inside the sent half, two consecutive ones well inside the pending half.
    const sentLeaf = rowsOf.findIndex((r) => r[0] > 200)
    const pendingLeaf = rowsOf.findIndex((r) => r[0] > 1200)
    const damaged = [sentLeaf, pendingLeaf, pendingLeaf + 1]
    expect(rowsOf[sentLeaf].at(-1)!).toBeLessThan(SYNCED)
    expect(rowsOf[pendingLeaf + 1].at(-1)!).toBeLessThan(TOTAL)
    const lostSeqs = damaged.flatMap((i) => rowsOf[i])
    expect(lostSeqs.length).toBeGreaterThan(60)
    const lostPending = lostSeqs.filter((s) => s > SYNCED)
    const fd = fs.openSync(file, 'r+')
    for (const p of [...damaged.map((i) => leaves[i]), indexRoot])
      fs.writeSync(fd, Buffer.alloc(pageSize), 0, pageSize, (p - 1) * pageSize)
    fs.closeSync(fd)
    expect([1, ...damaged.map((i) => leaves[i])]).not.toContain(indexRoot)

    // Publish and sync stop with exit 70 and the repair advice, instead of crash-looping.
    for (const args of [['publish', 'plant/r', '{"late":1}'], ['sync']]) {
      const r = await rmq(args)
      expect(r.code, `${args[0]}: ${r.stderr}`).toBe(70)
      expect(r.stderr).toMatch(/rmq: the outbox .*outbox\.db is damaged/)
      expect(r.stderr).toMatch(/fix: .*rmq doctor --repair/)
    }
    const syncJson = await rmq(['sync', '--json'])
    expect(syncJson.code).toBe(70)
    expect(JSON.parse(syncJson.stdout).error).toMatchObject({ code: 'CORRUPT', exitCode: 70 })
    const checked = await rmq(['doctor', '--offline', '--json'])
    expect(checked.code).toBe(70)
    const errors = (JSON.parse(checked.stdout).checks as Array<{ state: string; fix?: string }>).filter(
      (c) => c.state === 'error',
    )
    expect(errors.length).toBeGreaterThan(0)
    for (const e of errors) expect(e.fix).toMatch(/rmq doctor --repair/)

    // The repair.
    const repaired = await rmq(['doctor', '--repair', '--json'])
    expect(repaired.code, repaired.stderr).toBe(0)
    const report = JSON.parse(repaired.stdout)
    expect(report).toMatchObject({
      epoch,
      nodeId: 'gw-r',
      lost: ranges(lostSeqs),
      lostSeqs: lostSeqs.length,
      lostPending: lostPending.length,
      statusUnknown: 0,
      firstSeq: 1,
      lastSeq: TOTAL,
      recovered: {
        messages: TOTAL - lostSeqs.length,
        pending: TOTAL - SYNCED - lostPending.length,
        sent: SYNCED - (lostSeqs.length - lostPending.length),
        expired: 0,
      },
    })
    expect(report.file).toBe(file)
    expect(path.basename(report.movedTo)).toMatch(/^outbox\.db\.corrupt-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ$/)
    // Kept, not deleted (the failed runs may have committed small state writes to it).
    expect(fs.statSync(report.movedTo).size).toBeGreaterThanOrEqual(bytes.length)
    const human = await rmq(['doctor', '--offline', '--json'])
    expect(JSON.parse(human.stdout).checks.filter((c: { state: string }) => c.state === 'error')).toEqual([])

    // Every recovered message has its seq, status and payload.
    const listed = await rmq(['messages', '--status', 'all', '--order', 'asc', '--limit', '100000', '--json'])
    expect(listed.code, listed.stderr).toBe(0)
    const rows = listed.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { seq: number; status: string; payload: string; topic: string })
    const lost = new Set(lostSeqs)
    const expected = Array.from({ length: TOTAL }, (_, i) => i + 1).filter((s) => !lost.has(s))
    expect(rows.map((r) => r.seq)).toEqual(expected)
    for (const r of rows) {
      expect(r.status).toBe(r.seq <= SYNCED ? 'sent' : 'pending')
      expect(r.payload).toBe(lines[r.seq - 1])
      expect(r.topic).toBe('plant/r')
    }

    // The sync after it: every recovered pending message once, nothing the broker had again.
    const drained = await rmq(['drain', '--timeout', '60s', '--json'])
    expect(drained.code, drained.stderr).toBe(0)
    const after = await allMessages(broker.url)
    const seqs = after.map((m) => m.seq)
    expect(new Set(seqs).size).toBe(seqs.length)
    expect(after.every((m) => m.node === 'gw-r' && m.epoch === epoch)).toBe(true)
    expect([...seqs].sort((a, b) => a - b)).toEqual(
      Array.from({ length: TOTAL }, (_, i) => i + 1).filter((s) => s <= SYNCED || !lost.has(s)),
    )
    // What the broker had before the repair came first; the drain only added.
    expect(after.slice(0, SYNCED).map((m) => m.seq)).toEqual(before.map((m) => m.seq))
    for (const m of after) expect(m.payload).toBe(lines[m.seq - 1])
    // A new message continues after the highest seq the damaged file gave out.
    const next = await rmq(['publish', 'plant/r', '{"after":1}', '--json'])
    expect(next.code, next.stderr).toBe(0)
    expect(JSON.parse(next.stdout).seq).toBe(TOTAL + 1)
  }, 240_000)

  it('refuses while a sync holds the lease (exit 74, file untouched); a healthy file repairs to itself', async () => {
    const tmp = makeTempDir('rmq-repair-lease-')
    cleanup(() => tmp.cleanup())
    const env = { RMQ_NODE_ID: 'gw-l' }
    const rmq = (args: string[]) => runCli(args, { cwd: tmp.dir, env })
    for (let i = 1; i <= 3; i++) expect((await rmq(['publish', 'plant/l', `m${i}`])).code).toBe(0)
    const file = path.join(tmp.dir, '.rmq', 'outbox.db')
    const db = new Database(file)
    // A live sync on another host: its lease cannot be taken over.
    db.prepare("INSERT INTO leases (name, owner, expires_at) VALUES ('sync', 'other-host:4242:abcd', ?)").run(
      Date.now() + 600_000,
    )
    db.pragma('wal_checkpoint(TRUNCATE)')
    db.close()
    const refused = await rmq(['doctor', '--repair'])
    expect(refused.code).toBe(74)
    expect(refused.stderr).toMatch(/rmq: a sync holds this outbox \(other-host:4242:abcd\)/)
    expect(refused.stderr).toMatch(/fix: stop `rmq sync --watch`/)
    expect(fs.readdirSync(path.dirname(file)).filter((f) => /corrupt|repair/.test(f))).toEqual([])

    const db2 = new Database(file)
    db2.prepare("DELETE FROM leases WHERE name = 'sync'").run()
    db2.close()
    const ok = await rmq(['doctor', '--repair', '--json'])
    expect(ok.code, ok.stderr).toBe(0)
    expect(JSON.parse(ok.stdout)).toMatchObject({
      lost: [],
      lostSeqs: 0,
      recovered: { messages: 3, pending: 3, sent: 0 },
    })
    const human = await rmq(['messages', '--json', '--order', 'asc'])
    expect(
      human.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l).payload),
    ).toEqual(['m1', 'm2', 'm3'])
  })

  it('a file whose header is garbage: exit 70 beyond repair, the file left where it is', async () => {
    const tmp = makeTempDir('rmq-repair-garbage-')
    cleanup(() => tmp.cleanup())
    const file = path.join(tmp.dir, '.rmq', 'outbox.db')
    fs.mkdirSync(path.dirname(file), { recursive: true })
    const garbage = Buffer.alloc(64 * 1024, 'not a database ')
    fs.writeFileSync(file, garbage)
    const r = await runCli(['doctor', '--repair'], { cwd: tmp.dir, env: { RMQ_NODE_ID: 'gw-g' } })
    expect(r.code).toBe(70)
    expect(r.stderr).toMatch(
      /rmq: the outbox .*outbox\.db is damaged beyond repair: its header cannot be read/,
    )
    expect(r.stderr).toMatch(/fix: nothing in it can be read: move it aside/)
    expect(fs.readFileSync(file).equals(garbage)).toBe(true)
    expect(fs.readdirSync(path.dirname(file))).toEqual(['outbox.db'])
  })
})

import fs from 'node:fs'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { openSqliteBrokerStore } from '../../src/broker/store/sqlite.js'
import { brokerStoreConformance, batchOf, wireMessage } from '../../src/testing/broker-store-conformance.js'
import { makeTempDir } from '../helpers/cli.js'

const T0 = 1_764_160_000_000

brokerStoreConformance('sqlite', async () => {
  const { dir, cleanup } = makeTempDir('rmq-broker-store-')
  return {
    store: await openSqliteBrokerStore({ dataDir: dir }),
    reopen: () => openSqliteBrokerStore({ dataDir: dir }),
    cleanup,
  }
})

describe('sqlite broker store specifics', () => {
  it('uses WAL with synchronous=FULL and a file in the data dir', async () => {
    const { dir, cleanup } = makeTempDir('rmq-broker-store-')
    try {
      const store = await openSqliteBrokerStore({ dataDir: path.join(dir, 'nested') })
      const db = (store as unknown as { db: import('better-sqlite3').Database }).db
      expect(db.pragma('journal_mode', { simple: true })).toBe('wal')
      expect(db.pragma('synchronous', { simple: true })).toBe(2)
      await store.ingest(batchOf('a', [wireMessage(1, 1)]), { now: 2, maxLateness: 1000 })
      await store.close()
      expect(fs.existsSync(path.join(dir, 'nested', 'broker.db'))).toBe(true)
    } finally {
      cleanup()
    }
  })

  it('group commit: concurrent batches share a commit, each with its own result; a failing one spoils only itself', async () => {
    const { dir, cleanup } = makeTempDir('rmq-broker-store-')
    try {
      const store = await openSqliteBrokerStore({ dataDir: dir })
      const ctx = { now: 10_000, maxLateness: 60_000 }
      const broken = { ...wireMessage(1, 5), topic: null as unknown as string }
      const results = await Promise.allSettled([
        store.ingest(batchOf('a', [wireMessage(1, 1), wireMessage(2, 2)], { clock: 100 }), ctx),
        store.ingest(batchOf('b', [wireMessage(1, 3), broken]), ctx),
        store.ingest(batchOf('c', [wireMessage(1, 4)], { clock: 100 }), ctx),
        store.ingest(batchOf('a', [wireMessage(2, 2)], { clock: 100 }), ctx),
      ])
      expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled', 'fulfilled'])
      expect((results[0] as PromiseFulfilledResult<{ accepted: number }>).value.accepted).toBe(2)
      expect((results[3] as PromiseFulfilledResult<{ duplicates: number }>).value.duplicates).toBe(1)
      const all = await store.read({ order: 'arrival', after: 0, limit: 10 })
      expect(all.messages.map((m) => `${m.node}${m.seq}`)).toEqual(['a1', 'a2', 'c1'])
      expect((await store.nodes()).map((n) => n.node)).toEqual(['a', 'c'])
      await store.close()
    } finally {
      cleanup()
    }
  })

  it('maps a full disk to StoreUnavailableError and stores nothing', async () => {
    const { dir, cleanup } = makeTempDir('rmq-broker-store-')
    try {
      const store = await openSqliteBrokerStore({ dataDir: dir })
      const db = (store as unknown as { db: import('better-sqlite3').Database }).db
      const pages = db.pragma('page_count', { simple: true }) as number
      db.pragma(`max_page_count = ${pages + 1}`)
      const big = Array.from({ length: 200 }, (_, i) => wireMessage(i + 1, 1, 't', 'x'.repeat(2000)))
      await expect(store.ingest(batchOf('a', big), { now: 2, maxLateness: 1000 })).rejects.toMatchObject({
        code: 'STORE_UNAVAILABLE',
      })
      expect((await store.heads()).total).toBe(0)
      await store.close()
    } finally {
      cleanup()
    }
  })
})

describe('sqlite broker store: a schema-2 file from before nodes.last_batch, waiting_for, ahead_low_mark', () => {
  it('gets the columns in place; backlog.unacked is matched from the next batch on', async () => {
    const { dir, cleanup } = makeTempDir('rmq-broker-store-')
    const ctx = (now: number) => ({ now, maxLateness: 60_000 })
    try {
      let store = await openSqliteBrokerStore({ dataDir: dir })
      await store.ingest(batchOf('a', [wireMessage(1, T0)], { batch: 'b-1', clock: T0 + 10 }), ctx(T0 + 10))
      const dbOf = (s: unknown) => (s as { db: import('better-sqlite3').Database }).db
      for (const column of ['last_batch', 'waiting_for', 'ahead_low_mark'])
        dbOf(store).exec(`ALTER TABLE nodes DROP COLUMN ${column}`)
      await store.close()

      store = await openSqliteBrokerStore({ dataDir: dir })
      const columns = dbOf(store).prepare("SELECT name FROM pragma_table_info('nodes')").pluck().all()
      expect(columns).toEqual(expect.arrayContaining(['last_batch', 'waiting_for', 'ahead_low_mark']))
      // 'b-1' was committed before the column existed: not known, so its oldest ts still counts.
      const second = await store.ingest(
        batchOf('a', [wireMessage(2, T0 + 20)], {
          batch: 'b-2',
          clock: T0 + 100,
          backlog: { pending: 1, bytes: 1, oldestTs: T0 + 50, unacked: { batch: 'b-1', oldestTs: T0 } },
        }),
        ctx(T0 + 100),
      )
      expect(second.watermark).toBe(T0 + 10)
      const third = await store.ingest(
        batchOf('a', [wireMessage(3, T0 + 30)], {
          batch: 'b-3',
          clock: T0 + 100,
          backlog: { pending: 1, bytes: 1, oldestTs: T0 + 50, unacked: { batch: 'b-2', oldestTs: T0 + 20 } },
        }),
        ctx(T0 + 100),
      )
      expect(third.watermark).toBe(T0 + 50)
      await store.close()
    } finally {
      cleanup()
    }
  })
})

describe('sqlite broker store: a schema-2 file from before nodes.epoch_batches', () => {
  it('gets the column in place (0 for the nodes it has) and counts from the next request on', async () => {
    const { dir, cleanup } = makeTempDir('rmq-broker-store-')
    const ctx = (now: number) => ({ now, maxLateness: 60_000 })
    try {
      let store = await openSqliteBrokerStore({ dataDir: dir })
      await store.ingest(batchOf('a', [wireMessage(1, T0)]), ctx(T0))
      const dbOf = (s: unknown) => (s as { db: import('better-sqlite3').Database }).db
      dbOf(store).exec('ALTER TABLE nodes DROP COLUMN epoch_batches')
      await store.close()

      store = await openSqliteBrokerStore({ dataDir: dir })
      const columns = dbOf(store).prepare("SELECT name FROM pragma_table_info('nodes')").pluck().all()
      expect(columns).toContain('epoch_batches')
      expect(await store.node('a')).toMatchObject({ epochBatches: 0, counters: { received: 1, batches: 1 } })
      await store.ingest(batchOf('a', [], { batch: 'b-hb' }), ctx(T0 + 1))
      expect(await store.node('a')).toMatchObject({ epochBatches: 1, counters: { batches: 2 } })
      await store.close()
    } finally {
      cleanup()
    }
  })
})

describe('sqlite broker store: topic block index', () => {
  it('a topic in more blocks than one read lists pages on with more: true and misses nothing', async () => {
    const { dir, cleanup } = makeTempDir('rmq-broker-store-')
    try {
      const store = await openSqliteBrokerStore({ dataDir: dir })
      // One rare message every 1,000 among 150,000: about 147 blocks of 1,024 hold one.
      const N = 150_000
      for (let i = 0; i < N; i += 10_000)
        await store.ingest(
          batchOf(
            'a',
            Array.from({ length: 10_000 }, (_, k) => {
              const seq = i + k + 1
              return wireMessage(seq, T0 + seq, seq % 1000 === 0 ? `rare/${seq % 3}` : 'bulk/x', 'p')
            }),
            { batch: `b${i}`, clock: T0 + N + 1 },
          ),
          { now: T0, maxLateness: 60_000 },
        )
      for (const order of ['event', 'arrival'] as const) {
        const seqs: number[] = []
        let after = 0
        let pages = 0
        let sawEarlyStop = false
        for (;;) {
          const page = await store.read({ order, after, limit: 1000, topic: 'rare/#' })
          seqs.push(...page.messages.map((m) => m.seq))
          if (page.more && page.messages.length < 1000) sawEarlyStop = true
          after = page.next
          if (!page.more || ++pages > 20) break
        }
        expect(seqs).toEqual(Array.from({ length: N / 1000 }, (_, k) => (k + 1) * 1000))
        // 147 blocks of 1,024 rows are more than one read examines (100,000 rows): it stops early, says more.
        expect(sawEarlyStop).toBe(true)
        const one: number[] = []
        after = 0
        pages = 0
        for (;;) {
          const page = await store.read({ order, after, limit: 1000, topic: 'bulk/x' })
          one.push(...page.messages.map((m) => m.seq))
          after = page.next
          if (!page.more || ++pages > 200) break
        }
        expect(one.length).toBe(N - N / 1000)
      }
      // A single rare topic in 147 blocks: the first read stops at its 128th block and says more.
      await store.ingest(
        batchOf(
          'b',
          Array.from({ length: 150 }, (_, k) => wireMessage(k + 1, T0 + N + 2, 'solo/t')),
          { clock: T0 + N + 3 },
        ),
        { now: T0, maxLateness: 60_000 },
      )
      const db = (store as unknown as { db: import('better-sqlite3').Database }).db
      // Spread solo/t over 150 blocks as if it had arrived one per block.
      db.exec(`INSERT OR IGNORE INTO topic_blocks (ord, topic_id, block)
        WITH RECURSIVE b(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM b WHERE n < 149)
        SELECT 0, (SELECT id FROM topics WHERE topic = 'solo/t'), n FROM b`)
      const solo: string[] = []
      let after = 0
      let reads = 0
      let last
      do {
        last = await store.read({ order: 'arrival', after, limit: 1000, topic: 'solo/t' })
        if (reads === 0) expect(last).toMatchObject({ messages: [], more: true })
        solo.push(...last.messages.map((m) => m.node + m.seq))
        after = last.next
      } while (last.more && ++reads < 50)
      expect(last.more).toBe(false)
      expect(reads).toBeGreaterThanOrEqual(1)
      expect(solo).toEqual(Array.from({ length: 150 }, (_, k) => `b${k + 1}`))
      await store.close()
    } finally {
      cleanup()
    }
  })
})

describe('sqlite broker store: schema 1 (node and epoch in every row, a position column)', () => {
  const V1 = `
    CREATE TABLE broker_meta (id INTEGER PRIMARY KEY CHECK (id = 1), schema_version INTEGER NOT NULL,
      watermark INTEGER, next_position INTEGER NOT NULL, next_arrival INTEGER NOT NULL);
    INSERT INTO broker_meta VALUES (1, 1, ${T0 + 25}, 3, 5);
    CREATE TABLE messages (arrival INTEGER PRIMARY KEY, node TEXT NOT NULL, epoch TEXT NOT NULL,
      seq INTEGER NOT NULL, topic TEXT NOT NULL, ts INTEGER NOT NULL, payload TEXT NOT NULL, enc TEXT NOT NULL,
      content_type TEXT, priority INTEGER NOT NULL, expires_at INTEGER, headers TEXT, received_at INTEGER NOT NULL,
      position INTEGER, late INTEGER NOT NULL DEFAULT 0, UNIQUE (node, epoch, seq));
    CREATE INDEX messages_held ON messages (ts, node, seq, epoch) WHERE position IS NULL;
    CREATE UNIQUE INDEX messages_position ON messages (position) WHERE position IS NOT NULL;
    INSERT INTO messages VALUES
      (1, 'b', 'eb', 1, 't/b', ${T0 + 20}, 'b1', 'utf8', NULL, 4, NULL, NULL, ${T0}, 2, 0),
      (2, 'a', 'ea', 1, 't/a', ${T0 + 10}, 'a1', 'utf8', 'text/plain', 7, ${T0 + 9999}, '{"k":"v"}', ${T0}, 1, 0),
      (3, 'a', 'ea', 2, 't/a', ${T0 + 40}, 'a2', 'utf8', NULL, 4, NULL, NULL, ${T0}, NULL, 0),
      (4, 'b', 'eb', 2, 't/b', ${T0 + 30}, 'b2', 'utf8', NULL, 4, NULL, NULL, ${T0}, NULL, 0);
  `

  it('migrates in place: reads, heads, dedup and positions carry on', async () => {
    const { dir, cleanup } = makeTempDir('rmq-broker-store-')
    try {
      const { default: Database } = await import('better-sqlite3')
      const old = new Database(path.join(dir, 'broker.db'))
      old.pragma('journal_mode = WAL')
      old.exec(V1)
      old.close()
      const store = await openSqliteBrokerStore({ dataDir: dir })
      expect(await store.heads()).toEqual({ event: 2, arrival: 4, watermark: T0 + 25, held: 2, total: 4 })
      const events = await store.read({ order: 'event', after: 0, limit: 10 })
      expect(events.messages.map((m) => [m.node, m.seq, m.position, m.arrival])).toEqual([
        ['a', 1, 1, 2],
        ['b', 1, 2, 1],
      ])
      expect(events.messages[0]).toMatchObject({
        epoch: 'ea',
        contentType: 'text/plain',
        priority: 7,
        expiresAt: T0 + 9999,
        headers: { k: 'v' },
      })
      const arrival = await store.read({ order: 'arrival', after: 0, limit: 10 })
      expect(arrival.messages.map((m) => [m.node, m.seq, m.position])).toEqual([
        ['b', 1, 2],
        ['a', 1, 1],
        ['a', 2, null],
        ['b', 2, null],
      ])
      // Old messages still deduplicate; the held ones are released with the new one, in event order.
      const ack = await store.ingest(
        batchOf('a', [wireMessage(2, T0 + 40), wireMessage(3, T0 + 35)], { epoch: 'ea', clock: T0 + 100 }),
        { now: T0 + 50, maxLateness: 60_000 },
      )
      expect(ack).toMatchObject({ accepted: 1, duplicates: 1, watermark: T0 + 100 })
      expect((await store.heads()).held).toBe(0)
      const all = await store.read({ order: 'event', after: 0, limit: 10 })
      expect(all.messages.map((m) => `${m.node}${m.seq}@${m.position}`)).toEqual([
        'a1@1',
        'b1@2',
        'b2@3',
        'a3@4',
        'a2@5',
      ])
      // The topic index is filled in by the migration (schema 3).
      const tb = await store.read({ order: 'event', after: 0, limit: 10, topic: 't/b' })
      expect(tb.messages.map((m) => `${m.node}${m.seq}@${m.position}`)).toEqual(['b1@2', 'b2@3'])
      expect(tb).toMatchObject({ next: 5, more: false, head: 5 })
      const ta = await store.read({ order: 'arrival', after: 0, limit: 10, topic: 't/+' })
      expect(ta.messages.map((m) => m.arrival)).toEqual([1, 2, 3, 4])
      const db = (store as unknown as { db: import('better-sqlite3').Database }).db
      expect(db.prepare('SELECT schema_version FROM broker_meta').pluck().get()).toBe(4)
      await store.close()
    } finally {
      cleanup()
    }
  })
})

describe('sqlite broker store: schema 2 (no topic index)', () => {
  it('migrates in place to schema 3: topic ids for old rows, filtered reads and ingest carry on', async () => {
    const { dir, cleanup } = makeTempDir('rmq-broker-store-')
    try {
      const ctx = { now: T0 + 100, maxLateness: 60_000 }
      let store = await openSqliteBrokerStore({ dataDir: dir })
      // b's low mark (T0 + 3) holds seqs 4 and 5 of a back: held rows are migrated too.
      await store.ingest(batchOf('b', [], { batch: 'hb1', clock: T0 + 3 }), ctx)
      const topics = ['x/1', 'id/a', 'x/2', 'id/b', 'x/1']
      await store.ingest(
        batchOf(
          'a',
          topics.map((t, i) => wireMessage(i + 1, T0 + i, t)),
          { clock: T0 + 5 },
        ),
        ctx,
      )
      await store.close()
      // Turn the file back into schema 2: the topic text in messages, no topics table, no topic ids.
      const { default: Database } = await import('better-sqlite3')
      const raw = new Database(path.join(dir, 'broker.db'))
      raw.exec(`DROP TABLE topic_blocks;
        ALTER TABLE messages ADD COLUMN topic TEXT;
        UPDATE messages SET topic = (SELECT topic FROM topics WHERE id = messages.topic_id);
        ALTER TABLE messages DROP COLUMN topic_id; ALTER TABLE events DROP COLUMN topic_id;
        ALTER TABLE held DROP COLUMN topic_id; DROP TABLE topics; UPDATE broker_meta SET schema_version = 2`)
      raw.close()
      store = await openSqliteBrokerStore({ dataDir: dir })
      const db = (store as unknown as { db: import('better-sqlite3').Database }).db
      // Schema 2 -> 3 (topic ids), then on to 4 (named credentials).
      expect(db.prepare('SELECT schema_version FROM broker_meta').pluck().get()).toBe(4)
      expect(db.prepare('SELECT topic FROM topics ORDER BY id').pluck().all()).toEqual([
        'id/a',
        'id/b',
        'x/1',
        'x/2',
      ])
      expect(db.prepare("SELECT name FROM sqlite_master WHERE name LIKE '%_v2'").all()).toEqual([])
      const seqs = async (order: 'event' | 'arrival', topic: string) =>
        (await store.read({ order, after: 0, limit: 100, topic })).messages.map((m) => m.seq)
      expect(await seqs('event', 'id/#')).toEqual([2])
      expect(await seqs('arrival', 'x/1')).toEqual([1, 5])
      const heldNow = { now: T0 + 100, maxLateness: 60_000 }
      expect(await store.heldBack({ topic: 'id/#', ...heldNow })).toEqual({
        count: 1,
        capped: false,
        nodes: [{ node: 'b', lowMark: T0 + 3, lastContact: T0 + 100 }],
      })
      // New messages on old and new topics after the migration.
      await store.ingest(
        batchOf('a', [wireMessage(6, T0 + 10, 'id/a'), wireMessage(7, T0 + 11, 'id/c')], {
          batch: 'b2',
          clock: T0 + 50,
        }),
        ctx,
      )
      await store.ingest(batchOf('b', [], { batch: 'hb2', clock: T0 + 60 }), ctx)
      expect(await seqs('event', 'id/#')).toEqual([2, 4, 6, 7])
      expect(await seqs('arrival', 'id/+')).toEqual([2, 4, 6, 7])
      await store.close()
    } finally {
      cleanup()
    }
  })
})

describe('sqlite broker store: fast ingest path', () => {
  /** A small deterministic PRNG, so a failure can be replayed. */
  function prng(seed: number) {
    let s = seed >>> 0
    return () => {
      s = (s + 0x6d2b79f5) >>> 0
      let t = Math.imul(s ^ (s >>> 15), 1 | s)
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296
    }
  }

  it('gives the same acks, arrivals, positions, late flags and node records as the general path', async () => {
    const { dir, cleanup } = makeTempDir('rmq-broker-store-')
    try {
      for (const seed of [1, 2, 3, 4, 5, 6]) {
        const rnd = prng(seed)
        const fast = await openSqliteBrokerStore({ dataDir: path.join(dir, `fast-${seed}`) })
        const slow = await openSqliteBrokerStore({ dataDir: path.join(dir, `slow-${seed}`) })
        slow.fastIngest = false
        // Nodes whose names sort differently in UTF-16 and in UTF-8 (astral vs U+E000..U+FFFF), one direct producer.
        const nodes = ['a', 'b', 'n-\u{1F600}', 'n-\uFF5E', 'direct']
        const next = new Map(nodes.map((n) => [n, 1]))
        let now = T0
        for (let round = 0; round < 25; round++) {
          now += Math.floor(rnd() * 3000)
          const group = Array.from({ length: 1 + Math.floor(rnd() * 4) }, () => {
            const node = nodes[Math.floor(rnd() * nodes.length)]
            const messages = []
            const count = rnd() < 0.15 ? 0 : Math.floor(rnd() * 12)
            for (let i = 0; i < count; i++) {
              // Sometimes resend an old seq (duplicate), sometimes a ts far behind (late), ties in ts across nodes.
              const top = next.get(node)!
              const resend = rnd() < 0.1 && top > 1
              const seq = resend ? 1 + Math.floor(rnd() * top) : top
              if (!resend) next.set(node, top + 1)
              const ts =
                now - Math.floor(rnd() * (rnd() < 0.1 ? 600_000 : 5000)) - (rnd() < 0.3 ? 0 : seq % 7)
              messages.push(wireMessage(seq, ts, `t/${node}`))
            }
            const pending = Math.floor(rnd() * 3)
            return batchOf(node, messages, {
              clock: now + Math.floor(rnd() * 2000) - 1000,
              backlog: {
                pending,
                bytes: pending * 10,
                oldestTs: pending ? now - Math.floor(rnd() * 8000) : null,
              },
              direct: node === 'direct' ? true : undefined,
            })
          })
          const ctx = { now, maxLateness: 60_000 }
          // Concurrent ingests share a group commit (and the group's watermark).
          const acks = await Promise.all(group.map((b) => fast.ingest(b, ctx)))
          const expected = await Promise.all(group.map((b) => slow.ingest(b, ctx)))
          expect(acks, `seed ${seed} round ${round}`).toEqual(expected)
          if (rnd() < 0.2) {
            const later = { now: now + 90_000, maxLateness: 60_000 }
            expect(await fast.release(later)).toEqual(await slow.release(later))
          }
        }
        for (const order of ['event', 'arrival'] as const) {
          const a = await fast.read({ order, after: 0, limit: 10_000 })
          const b = await slow.read({ order, after: 0, limit: 10_000 })
          expect(a, `seed ${seed} ${order}`).toEqual(b)
        }
        expect(await fast.heads()).toEqual(await slow.heads())
        expect(await fast.nodes()).toEqual(await slow.nodes())
        expect((await fast.heads()).event).toBeGreaterThan(0)
        await fast.close()
        await slow.close()
      }
    } finally {
      cleanup()
    }
  })

  it('large batches (bulk inserts of one shape, shape changes, duplicates, held) match the general path', async () => {
    const { dir, cleanup } = makeTempDir('rmq-broker-store-')
    try {
      const fast = await openSqliteBrokerStore({ dataDir: path.join(dir, 'fast') })
      const slow = await openSqliteBrokerStore({ dataDir: path.join(dir, 'slow') })
      slow.fastIngest = false
      const big = (node: string, from: number, count: number, clock: number) =>
        batchOf(
          node,
          Array.from({ length: count }, (_, i) => {
            const seq = from + i
            const m = wireMessage(seq, T0 + seq * 10 - (seq % 3), `t/${node}/${seq % 5}`)
            // Shape breaks inside a run: another priority, headers, an expiry, a base64 payload.
            if (seq % 211 === 0) return { ...m, priority: 9 }
            if (seq % 263 === 0) return { ...m, headers: { k: `v${seq}` } }
            if (seq % 307 === 0) return { ...m, expiresAt: T0 + 1e9 }
            if (seq % 401 === 0) return { ...m, enc: 'base64' as const, payload: 'AAEC' }
            return m
          }),
          { clock, backlog: { pending: 1, bytes: 1, oldestTs: T0 + (from + count) * 10 - 50 } },
        )
      const rounds: Array<Array<ReturnType<typeof big>>> = [
        [big('a', 1, 450, T0 + 4600), big('b', 1, 300, T0 + 2000)],
        [big('a', 400, 250, T0 + 6600)],
        [big('b', 301, 520, T0 + 9000), big('c', 1, 100, T0 + 1000)],
        [big('c', 101, 300, T0 + 20_000), big('a', 651, 120, T0 + 20_000)],
      ]
      let now = T0 + 5000
      for (const group of rounds) {
        const ctx = { now: (now += 1000), maxLateness: 600_000 }
        const acks = await Promise.all(group.map((b) => fast.ingest(b, ctx)))
        expect(acks).toEqual(await Promise.all(group.map((b) => slow.ingest(b, ctx))))
      }
      expect((await fast.heads()).held).toBeGreaterThan(0)
      const later = { now: now + 10_000_000, maxLateness: 60_000 }
      expect(await fast.release(later)).toEqual(await slow.release(later))
      for (const order of ['event', 'arrival'] as const) {
        const a = await fast.read({ order, after: 0, limit: 10_000 })
        expect(a).toEqual(await slow.read({ order, after: 0, limit: 10_000 }))
        expect(a.messages).toHaveLength(1989)
      }
      expect(await fast.heads()).toEqual(await slow.heads())
      await fast.close()
      await slow.close()
    } finally {
      cleanup()
    }
  })

  it('a batch repeating another one of the same group, or a bad row, takes the general path', async () => {
    const { dir, cleanup } = makeTempDir('rmq-broker-store-')
    try {
      const store = await openSqliteBrokerStore({ dataDir: dir })
      const ctx = { now: T0, maxLateness: 60_000 }
      const acks = await Promise.all([
        store.ingest(batchOf('a', [wireMessage(1, T0 - 10), wireMessage(2, T0 - 9)], { clock: T0 }), ctx),
        store.ingest(batchOf('a', [wireMessage(2, T0 - 9), wireMessage(3, T0 - 8)], { clock: T0 }), ctx),
      ])
      expect(acks.map((a) => [a.accepted, a.duplicates])).toEqual([
        [2, 0],
        [1, 1],
      ])
      const read = await store.read({ order: 'event', after: 0, limit: 10 })
      expect(read.messages.map((m) => [m.seq, m.position, m.arrival])).toEqual([
        [1, 1, 1],
        [2, 2, 2],
        [3, 3, 3],
      ])
      await store.close()
    } finally {
      cleanup()
    }
  })
})

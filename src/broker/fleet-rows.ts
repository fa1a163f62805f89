/**
 * The node rows and node credentials the fleet status is made of (GET
 * /v1/nodes, /metrics, the alert rules, the dashboard history), kept between
 * reads. Each read asks the store for fingerprints of the node rows and of
 * the node credentials (two aggregates, BrokerStore.fleetVersions). When the
 * rows' one moved, it reads every row's version (its id and accepted-request
 * count, a narrow read) and then only the rows that are new or whose version
 * moved; the credentials when theirs moved, or after 5 s. With a thousand
 * unchanged nodes a read costs about a fortieth of reading every row and
 * credential, and nothing is served older than the read: a node row written
 * before a read started (by this process or another broker on the same
 * store) is in its result, and so is a credential made or removed (but for
 * the fingerprint's one blind spot, see fleetVersions: then within 5 s).
 *
 * Reads do not pile up: while one runs, the reads asked for meanwhile wait
 * for it and then share one next read (so a burst of scrapes costs at most
 * two reads, and each still sees every write committed before it was asked).
 */
import type { BrokerStore, NodeRecord, NodeTokenRecord } from './store/types.js'

export interface FleetRowsRead {
  /** Every node row, by node id. */
  records: NodeRecord[]
  /** Every node credential, by name. */
  tokens: NodeTokenRecord[]
}

/**
 * The node credentials are read again at least this often (ms) even when their
 * fingerprint has not changed (one removed and one made in the same ms).
 */
const TOKENS_MAX_AGE_MS = 5000

/** The fleet's rows, kept between reads of one store (one per broker app). */
export class FleetRows {
  private readonly kept = new Map<string, { version: number; record: NodeRecord }>()
  private records: NodeRecord[] | undefined
  private nodesVersion = ''
  private tokens: NodeTokenRecord[] | undefined
  private tokensVersion = ''
  /** When the tokens were read (performance.now()). */
  private tokensAt = 0
  private running: Promise<FleetRowsRead> | undefined
  private queued: Promise<FleetRowsRead> | undefined
  /** Rows read by the last read (new or moved), for tests and the bench. */
  lastChanged = 0

  constructor(private readonly store: BrokerStore) {}

  /** The rows as the store has them now (see the module comment). */
  read(): Promise<FleetRowsRead> {
    if (!this.running) return this.start()
    // Asked while a read runs, which may have read some rows before this was asked: one more read after it.
    this.queued ??= this.running.then(
      () => this.next(),
      () => this.next(),
    )
    return this.queued
  }

  private next(): Promise<FleetRowsRead> {
    this.queued = undefined
    return this.start()
  }

  private start(): Promise<FleetRowsRead> {
    const p = this.load()
    this.running = p
    const done = () => {
      if (this.running === p) this.running = undefined
    }
    p.then(done, done)
    return p
  }

  private async load(): Promise<FleetRowsRead> {
    const { store } = this
    // The fingerprints first: a write after them is read now or, seen as a change, at the next read.
    const v = await store.fleetVersions()
    const t = performance.now()
    const nodesMoved = !this.records || v.nodes !== this.nodesVersion
    const tokensMoved =
      !this.tokens || v.tokens !== this.tokensVersion || t - this.tokensAt >= TOKENS_MAX_AGE_MS
    const [versions, tokens] = await Promise.all([
      nodesMoved ? store.nodeVersions() : undefined,
      tokensMoved ? store.nodeTokens() : this.tokens!,
    ])
    if (tokensMoved) {
      this.tokens = tokens
      this.tokensVersion = v.tokens
      this.tokensAt = t
    }
    this.lastChanged = 0
    if (versions) {
      const moved: string[] = []
      for (const [node, version] of versions) if (this.kept.get(node)?.version !== version) moved.push(node)
      // Most rows moved (every node reported since the last read): one read of them all is cheaper.
      if (moved.length > 0)
        for (const r of moved.length > versions.length / 2
          ? await store.nodes()
          : await store.nodesNamed(moved))
          this.kept.set(r.node, { version: r.counters.batches, record: r })
      this.lastChanged = moved.length
      const records: NodeRecord[] = []
      for (const [node] of versions) {
        const k = this.kept.get(node)
        // A row written again between the two reads is taken as read (its newer version is read next time).
        if (k) records.push(k.record)
      }
      if (this.kept.size > records.length) {
        const present = new Set(records.map((r) => r.node))
        for (const node of this.kept.keys()) if (!present.has(node)) this.kept.delete(node)
      }
      this.records = records
      this.nodesVersion = v.nodes
    }
    return { records: this.records!, tokens }
  }
}

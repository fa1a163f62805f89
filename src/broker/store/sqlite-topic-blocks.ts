/**
 * Upkeep of the topic block index (`topic_blocks`, schema 3) on the fast
 * ingest path: every (topic, block) pair that gets its first message in a
 * commit is inserted in that commit. Keys only grow, so a new message's block
 * is never below the highest block already listed for its topic: a pair needs
 * an insert only when its block is above the highest one this connection has
 * seen committed. That leaves a few inserts per block per topic instead of
 * one index entry per message. Another connection (the writer thread) may
 * have inserted the pair already: inserts ignore conflicts.
 */
import type BetterSqlite3 from 'better-sqlite3'
import { TOPIC_BLOCK } from './sqlite-schema.js'

export type BlockOrder = 0 | 1

export class TopicBlocks {
  /** Highest committed block per topic id, for ord 0 (arrival) and 1 (event position). */
  private readonly committed: [Map<number, number>, Map<number, number>] = [new Map(), new Map()]
  /** The same for pairs inserted by the transaction in progress. */
  private readonly pending: [Map<number, number>, Map<number, number>] = [new Map(), new Map()]
  private readonly insert: BetterSqlite3.Statement<[number, number, number]>

  constructor(db: BetterSqlite3.Database) {
    this.insert = db.prepare('INSERT OR IGNORE INTO topic_blocks (ord, topic_id, block) VALUES (?, ?, ?)')
  }

  /** A message of `topicId` at `key` in order `ord`, in the transaction in progress. */
  add(ord: BlockOrder, topicId: number, key: number): void {
    const block = Math.floor(key / TOPIC_BLOCK)
    const pending = this.pending[ord].get(topicId)
    if (pending !== undefined && block <= pending) return
    const known = this.committed[ord].get(topicId)
    if (known !== undefined && block <= known) return
    this.insert.run(ord, topicId, block)
    this.pending[ord].set(topicId, block)
  }

  /** The transaction committed: its pairs are known from now on. */
  committedNow(): void {
    for (const ord of [0, 1] as const) {
      for (const [topicId, block] of this.pending[ord])
        if ((this.committed[ord].get(topicId) ?? -1) < block) this.committed[ord].set(topicId, block)
      this.pending[ord].clear()
    }
  }

  /** The transaction rolled back: its pairs are gone with it. */
  rolledBack(): void {
    this.pending[0].clear()
    this.pending[1].clear()
  }
}

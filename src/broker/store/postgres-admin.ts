/**
 * The PostgreSQL store's tokens, consumer groups and alerts: small
 * transactions on the pool, each through the store's `wrap` (closed store,
 * unavailable database).
 */
import type pgTypes from 'pg'
import { alertKey, toAlert, type AlertRow } from './node-rows.js'
import type { AlertQuery, AlertRecord, GroupRecord, NewAlert, ReadOrder, TokenRecord } from './types.js'

type Wrap = <T>(fn: () => Promise<T>) => Promise<T>

export class PostgresAdmin {
  constructor(
    private readonly pool: pgTypes.Pool,
    private readonly wrap: Wrap,
  ) {}

  putToken(node: string, tokenHash: string, now: number): Promise<void> {
    return this.wrap(async () => {
      await this.pool.query(
        `INSERT INTO rmq_tokens (node, hash, created_at, last_used_at) VALUES ($1, $2, $3, NULL)
         ON CONFLICT (node) DO UPDATE SET hash = excluded.hash, created_at = excluded.created_at,
           last_used_at = NULL`,
        [node, tokenHash, now],
      )
    })
  }

  findToken(tokenHash: string): Promise<TokenRecord | undefined> {
    return this.wrap(async () => {
      const r = (
        await this.pool.query<TokenRecord>(
          `SELECT node, created_at AS "createdAt", last_used_at AS "lastUsedAt" FROM rmq_tokens WHERE hash = $1`,
          [tokenHash],
        )
      ).rows[0]
      return r ? { ...r } : undefined
    })
  }

  touchToken(node: string, now: number): Promise<void> {
    return this.wrap(async () => {
      await this.pool.query('UPDATE rmq_tokens SET last_used_at = $1 WHERE node = $2', [now, node])
    })
  }

  listTokens(): Promise<TokenRecord[]> {
    return this.wrap(async () => {
      const res = await this.pool.query<TokenRecord>(
        `SELECT node, created_at AS "createdAt", last_used_at AS "lastUsedAt" FROM rmq_tokens ORDER BY node`,
      )
      return res.rows.map((r) => ({ ...r }))
    })
  }

  revokeToken(node: string): Promise<boolean> {
    return this.wrap(
      async () =>
        ((await this.pool.query('DELETE FROM rmq_tokens WHERE node = $1', [node])).rowCount ?? 0) > 0,
    )
  }

  groupPosition(name: string, order: ReadOrder): Promise<number | undefined> {
    return this.wrap(async () => {
      const res = await this.pool.query<{ position: number }>(
        'SELECT position FROM rmq_groups WHERE name = $1 AND ord = $2',
        [name, order],
      )
      return res.rows[0]?.position
    })
  }

  commitGroup(name: string, order: ReadOrder, position: number, now: number): Promise<number> {
    return this.wrap(async () => {
      const res = await this.pool.query<{ position: number }>(
        `INSERT INTO rmq_groups AS g (name, ord, position, updated_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (name, ord) DO UPDATE SET
           position = GREATEST(g.position, excluded.position), updated_at = excluded.updated_at
         RETURNING position`,
        [name, order, position, now],
      )
      return res.rows[0].position
    })
  }

  listGroups(): Promise<GroupRecord[]> {
    return this.wrap(async () => {
      const res = await this.pool.query<GroupRecord>(
        `SELECT name, ord AS "order", position, updated_at AS "updatedAt" FROM rmq_groups ORDER BY name, ord`,
      )
      return res.rows.map((r) => ({ ...r }))
    })
  }

  listAlerts(q: AlertQuery): Promise<AlertRecord[]> {
    return this.wrap(async () => {
      const res = q.state
        ? await this.pool.query<AlertRow>(
            'SELECT * FROM rmq_alerts WHERE state = $1 ORDER BY id DESC LIMIT $2',
            [q.state, q.limit],
          )
        : await this.pool.query<AlertRow>('SELECT * FROM rmq_alerts ORDER BY id DESC LIMIT $1', [q.limit])
      return res.rows.map(toAlert)
    })
  }

  latestAlerts(): Promise<AlertRecord[]> {
    return this.wrap(async () => {
      const res = await this.pool.query<AlertRow>(
        'SELECT * FROM rmq_alerts WHERE id IN (SELECT MAX(id) FROM rmq_alerts GROUP BY key) ORDER BY id',
      )
      return res.rows.map(toAlert)
    })
  }

  fireAlert(a: NewAlert, now: number): Promise<AlertRecord | undefined> {
    return this.wrap(async () => {
      const res = await this.pool.query<AlertRow>(
        `INSERT INTO rmq_alerts (key, rule, node, state, severity, message, value, threshold, fired_at, updated_at,
           resolved_at)
         VALUES ($1, $2, $3, 'active', $4, $5, $6, $7, $8, $8, NULL)
         ON CONFLICT (key) WHERE state = 'active' DO NOTHING
         RETURNING *`,
        [
          alertKey(a.rule, a.node),
          a.rule,
          a.node,
          a.severity,
          a.message,
          Math.round(a.value),
          Math.round(a.threshold),
          now,
        ],
      )
      return res.rows[0] ? toAlert(res.rows[0]) : undefined
    })
  }

  updateAlert(key: string, patch: { value: number; message: string }, now: number): Promise<boolean> {
    return this.wrap(async () => {
      const res = await this.pool.query(
        `UPDATE rmq_alerts SET value = $1, message = $2, updated_at = $3 WHERE key = $4 AND state = 'active'`,
        [Math.round(patch.value), patch.message, now, key],
      )
      return (res.rowCount ?? 0) > 0
    })
  }

  resolveAlert(key: string, now: number): Promise<AlertRecord | undefined> {
    return this.wrap(async () => {
      const res = await this.pool.query<AlertRow>(
        `UPDATE rmq_alerts SET state = 'resolved', resolved_at = $1, updated_at = $1
         WHERE key = $2 AND state = 'active' RETURNING *`,
        [now, key],
      )
      return res.rows[0] ? toAlert(res.rows[0]) : undefined
    })
  }

  /**
   * Call `listener` after any broker sharing this database commits new
   * arrivals or releases (LISTEN/NOTIFY on a dedicated connection). Also
   * called after the listening connection is re-established, since
   * notifications may have been missed meanwhile. Returns an unsubscribe.
   */
}

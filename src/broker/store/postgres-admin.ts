/**
 * The PostgreSQL store's tokens, consumer groups and alerts: small
 * transactions on the pool, each through the store's `wrap` (closed store,
 * unavailable database).
 */
import type pgTypes from 'pg'
import {
  alertKey,
  grantsColumn,
  toAlert,
  toFoundToken,
  toToken,
  TOKEN_COLUMNS,
  type AlertRow,
  type TokenRow,
} from './node-rows.js'
import type {
  AlertQuery,
  AlertRecord,
  FoundToken,
  GroupRecord,
  NewAlert,
  NewTokenRecord,
  ReadOrder,
  TokenRecord,
} from './types.js'

type Wrap = <T>(fn: () => Promise<T>) => Promise<T>

export class PostgresAdmin {
  constructor(
    private readonly pool: pgTypes.Pool,
    private readonly wrap: Wrap,
  ) {}

  putToken(token: NewTokenRecord, tokenHash: string, now: number): Promise<void> {
    return this.wrap(async () => {
      await this.pool.query(
        `INSERT INTO rmq_tokens (name, hash, created_at, last_used_at, role, topic_grants, group_grants, expires_at,
           previous_hash, previous_until) VALUES ($1, $2, $3, NULL, $4, $5, $6, $7, NULL, NULL)
         ON CONFLICT (name) DO UPDATE SET hash = excluded.hash, created_at = excluded.created_at,
           last_used_at = NULL, role = excluded.role, topic_grants = excluded.topic_grants,
           group_grants = excluded.group_grants, expires_at = excluded.expires_at,
           previous_hash = NULL, previous_until = NULL`,
        [
          token.name,
          tokenHash,
          now,
          token.role,
          grantsColumn(token.topics),
          grantsColumn(token.groups),
          token.expiresAt,
        ],
      )
    })
  }

  rotateToken(name: string, tokenHash: string, previousUntil: number): Promise<boolean> {
    return this.wrap(
      async () =>
        ((
          await this.pool.query(
            'UPDATE rmq_tokens SET previous_hash = hash, hash = $1, previous_until = $2 WHERE name = $3',
            [tokenHash, previousUntil, name],
          )
        ).rowCount ?? 0) > 0,
    )
  }

  findToken(tokenHash: string): Promise<FoundToken | undefined> {
    return this.wrap(async () => {
      const r = (
        await this.pool.query<TokenRow>(
          `SELECT ${TOKEN_COLUMNS}, hash <> $1 AS previous FROM rmq_tokens WHERE hash = $1 OR previous_hash = $1`,
          [tokenHash],
        )
      ).rows[0]
      return r ? toFoundToken(r) : undefined
    })
  }

  touchToken(name: string, now: number): Promise<void> {
    return this.wrap(async () => {
      await this.pool.query('UPDATE rmq_tokens SET last_used_at = $1 WHERE name = $2', [now, name])
    })
  }

  listTokens(): Promise<TokenRecord[]> {
    return this.wrap(async () => {
      const res = await this.pool.query<TokenRow>(`SELECT ${TOKEN_COLUMNS} FROM rmq_tokens ORDER BY name`)
      return res.rows.map(toToken)
    })
  }

  revokeToken(name: string): Promise<boolean> {
    return this.wrap(
      async () =>
        ((await this.pool.query('DELETE FROM rmq_tokens WHERE name = $1', [name])).rowCount ?? 0) > 0,
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

/**
 * The token, consumer-group and alert methods of the broker store, written
 * once for SQLite and PostgreSQL against a QueryAdapter (query-adapter.ts).
 * Each is one statement, so each is atomic on its own and commits before its
 * promise resolves, in either store. The SQL sticks to what both speak
 * (ON CONFLICT ... DO UPDATE, partial unique indexes, RETURNING).
 */
import type { AdminTables, QueryAdapter } from './query-adapter.js'
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
  BrokerStore,
  FoundToken,
  GroupRecord,
  NewAlert,
  NewTokenRecord,
  NodeTokenRecord,
  ReadOrder,
  TokenRecord,
} from './types.js'

/** The BrokerStore methods this class implements. */
export type AdminMethods =
  | 'putToken'
  | 'rotateToken'
  | 'findToken'
  | 'touchToken'
  | 'listTokens'
  | 'nodeTokens'
  | 'revokeToken'
  | 'groupPosition'
  | 'commitGroup'
  | 'listGroups'
  | 'listAlerts'
  | 'latestAlerts'
  | 'fireAlert'
  | 'updateAlert'
  | 'resolveAlert'

interface GroupRow {
  name: string
  ord: ReadOrder
  position: number
  updated_at: number
}

function adminSql(t: AdminTables) {
  return {
    // A new token replaces the credential of that name whole: no previous hash, never used.
    putToken: `INSERT INTO ${t.tokens} (name, hash, created_at, last_used_at, role, topic_grants, group_grants,
        expires_at, previous_hash, previous_until) VALUES (?, ?, ?, NULL, ?, ?, ?, ?, NULL, NULL)
      ON CONFLICT (name) DO UPDATE SET hash = excluded.hash, created_at = excluded.created_at,
        last_used_at = NULL, role = excluded.role, topic_grants = excluded.topic_grants,
        group_grants = excluded.group_grants, expires_at = excluded.expires_at,
        previous_hash = NULL, previous_until = NULL`,
    rotateToken: `UPDATE ${t.tokens} SET previous_hash = hash, hash = ?, previous_until = ? WHERE name = ?`,
    findToken: `SELECT ${TOKEN_COLUMNS}, hash <> ? AS previous FROM ${t.tokens} WHERE hash = ? OR previous_hash = ?`,
    touchToken: `UPDATE ${t.tokens} SET last_used_at = ? WHERE name = ?`,
    listTokens: `SELECT ${TOKEN_COLUMNS} FROM ${t.tokens} ORDER BY name`,
    nodeTokens: `SELECT name, created_at FROM ${t.tokens} WHERE role = 'node' ORDER BY name`,
    revokeToken: `DELETE FROM ${t.tokens} WHERE name = ?`,
    groupPosition: `SELECT position FROM ${t.groups} WHERE name = ? AND ord = ?`,
    // Never backwards: the larger of the stored and the new position (RETURNING gives the row as stored).
    commitGroup: `INSERT INTO ${t.groups} (name, ord, position, updated_at) VALUES (?, ?, ?, ?)
      ON CONFLICT (name, ord) DO UPDATE SET
        position = CASE WHEN excluded.position > ${t.groups}.position
                        THEN excluded.position ELSE ${t.groups}.position END,
        updated_at = excluded.updated_at
      RETURNING position`,
    listGroups: `SELECT name, ord, position, updated_at FROM ${t.groups} ORDER BY name, ord`,
    listAlerts: `SELECT * FROM ${t.alerts} ORDER BY id DESC LIMIT ?`,
    listAlertsIn: `SELECT * FROM ${t.alerts} WHERE state = ? ORDER BY id DESC LIMIT ?`,
    latestAlerts: `SELECT * FROM ${t.alerts} WHERE id IN (SELECT MAX(id) FROM ${t.alerts} GROUP BY key) ORDER BY id`,
    // The partial unique index on (key) WHERE state = 'active' makes a second active alert of a key a no-op.
    fireAlert: `INSERT INTO ${t.alerts} (key, rule, node, state, severity, message, value, threshold, fired_at,
        updated_at, resolved_at)
      VALUES (?, ?, ?, 'active', ?, ?, ?, ?, ?, ?, NULL)
      ON CONFLICT (key) WHERE state = 'active' DO NOTHING
      RETURNING *`,
    updateAlert: `UPDATE ${t.alerts} SET value = ?, message = ?, updated_at = ? WHERE key = ? AND state = 'active'`,
    resolveAlert: `UPDATE ${t.alerts} SET state = 'resolved', resolved_at = ?, updated_at = ?
      WHERE key = ? AND state = 'active' RETURNING *`,
  }
}

export class StoreAdmin implements Pick<BrokerStore, AdminMethods> {
  private readonly sql: ReturnType<typeof adminSql>

  constructor(
    private readonly db: QueryAdapter,
    tables: AdminTables,
  ) {
    this.sql = adminSql(tables)
  }

  async putToken(token: NewTokenRecord, tokenHash: string, now: number): Promise<void> {
    await this.db.run(this.sql.putToken, [
      token.name,
      tokenHash,
      now,
      token.role,
      grantsColumn(token.topics),
      grantsColumn(token.groups),
      token.expiresAt,
    ])
  }

  async rotateToken(name: string, tokenHash: string, previousUntil: number): Promise<boolean> {
    return (await this.db.run(this.sql.rotateToken, [tokenHash, previousUntil, name])) > 0
  }

  async findToken(tokenHash: string): Promise<FoundToken | undefined> {
    const r = await this.db.get<TokenRow>(this.sql.findToken, [tokenHash, tokenHash, tokenHash])
    return r ? toFoundToken(r) : undefined
  }

  async touchToken(name: string, now: number): Promise<void> {
    await this.db.run(this.sql.touchToken, [now, name])
  }

  async listTokens(): Promise<TokenRecord[]> {
    return (await this.db.all<TokenRow>(this.sql.listTokens)).map(toToken)
  }

  async nodeTokens(): Promise<NodeTokenRecord[]> {
    return (await this.db.all<{ name: string; created_at: number }>(this.sql.nodeTokens)).map((r) => ({
      name: r.name,
      createdAt: r.created_at,
    }))
  }

  async revokeToken(name: string): Promise<boolean> {
    return (await this.db.run(this.sql.revokeToken, [name])) > 0
  }

  async groupPosition(name: string, order: ReadOrder): Promise<number | undefined> {
    return (await this.db.get<{ position: number }>(this.sql.groupPosition, [name, order]))?.position
  }

  async commitGroup(name: string, order: ReadOrder, position: number, now: number): Promise<number> {
    const r = await this.db.get<{ position: number }>(this.sql.commitGroup, [name, order, position, now])
    return r!.position
  }

  async listGroups(): Promise<GroupRecord[]> {
    return (await this.db.all<GroupRow>(this.sql.listGroups)).map((r) => ({
      name: r.name,
      order: r.ord,
      position: r.position,
      updatedAt: r.updated_at,
    }))
  }

  async listAlerts(q: AlertQuery): Promise<AlertRecord[]> {
    const rows = q.state
      ? await this.db.all<AlertRow>(this.sql.listAlertsIn, [q.state, q.limit])
      : await this.db.all<AlertRow>(this.sql.listAlerts, [q.limit])
    return rows.map(toAlert)
  }

  async latestAlerts(): Promise<AlertRecord[]> {
    return (await this.db.all<AlertRow>(this.sql.latestAlerts)).map(toAlert)
  }

  async fireAlert(a: NewAlert, now: number): Promise<AlertRecord | undefined> {
    const r = await this.db.get<AlertRow>(this.sql.fireAlert, [
      alertKey(a.rule, a.node),
      a.rule,
      a.node,
      a.severity,
      a.message,
      Math.round(a.value),
      Math.round(a.threshold),
      now,
      now,
    ])
    return r ? toAlert(r) : undefined
  }

  async updateAlert(key: string, patch: { value: number; message: string }, now: number): Promise<boolean> {
    return (await this.db.run(this.sql.updateAlert, [Math.round(patch.value), patch.message, now, key])) > 0
  }

  async resolveAlert(key: string, now: number): Promise<AlertRecord | undefined> {
    const r = await this.db.get<AlertRow>(this.sql.resolveAlert, [now, now, key])
    return r ? toAlert(r) : undefined
  }
}

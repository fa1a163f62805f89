/**
 * The fault suite's tally: every scenario adds its run, faults and check
 * result; afterAll prints one table (and writes it as JSON next to the temp
 * files, RMQ_FAULTS_TALLY=path to choose where).
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { renderPairs, renderTable } from '../../src/cli/render.js'
import type { CheckResult } from './checker.js'
import type { Cluster } from './harness.js'

interface Row {
  scenario: string
  runs: number
  faults: number
  acknowledged: number
  unknown: number
  failed: number
  deliveredOnce: number
  lost: number
  duplicated: number
  unexpected: number
  orderViolations: number
  late: number
}

const rows: Row[] = []
const faultKinds = new Map<string, number>()
const exits = new Map<string, number>()

export function record(scenario: string, cluster: Cluster, check: CheckResult, runs = 1): void {
  let faults = 0
  for (const [k, v] of cluster.faults.counts) {
    faultKinds.set(k, (faultKinds.get(k) ?? 0) + v)
    faults += v
  }
  for (const [k, v] of cluster.exits.counts) exits.set(k, (exits.get(k) ?? 0) + v)
  const prev = rows.find((r) => r.scenario === scenario)
  const row: Row = prev ?? {
    scenario,
    runs: 0,
    faults: 0,
    acknowledged: 0,
    unknown: 0,
    failed: 0,
    deliveredOnce: 0,
    lost: 0,
    duplicated: 0,
    unexpected: 0,
    orderViolations: 0,
    late: 0,
  }
  row.runs += runs
  row.faults += faults
  row.acknowledged += check.acknowledged
  row.unknown += check.unknown
  row.failed += check.failed
  row.deliveredOnce += check.deliveredOnce
  row.lost += check.lost.length
  row.duplicated += check.duplicated.length
  row.unexpected += check.unexpected.length + check.phantom.length
  row.orderViolations += check.orderViolations.length
  row.late += check.late
  if (!prev) rows.push(row)
}

export function renderTally(title: string): string {
  const total: Row = {
    scenario: 'TOTAL',
    runs: 0,
    faults: 0,
    acknowledged: 0,
    unknown: 0,
    failed: 0,
    deliveredOnce: 0,
    lost: 0,
    duplicated: 0,
    unexpected: 0,
    orderViolations: 0,
    late: 0,
  }
  for (const r of rows)
    for (const k of Object.keys(total) as Array<keyof Row>)
      if (k !== 'scenario') (total[k] as number) += r[k] as number
  const cols: Array<[keyof Row, string]> = [
    ['scenario', 'scenario'],
    ['runs', 'runs'],
    ['faults', 'faults'],
    ['acknowledged', 'acked'],
    ['unknown', 'unknown'],
    ['failed', 'failed'],
    ['deliveredOnce', 'delivered once'],
    ['lost', 'lost'],
    ['duplicated', 'duplicated'],
    ['unexpected', 'unexpected'],
    ['orderViolations', 'order violations'],
    ['late', 'late (flagged)'],
  ]
  const table = renderTable(
    cols.map((c) => c[1]),
    [...rows, total].map((r) => cols.map((c) => r[c[0]] as string | number)),
  )
  const kinds = renderPairs([...faultKinds].sort((a, b) => b[1] - a[1]))
  const ex = renderPairs([...exits].sort())
  const text = `\n${title}\n\n${table}\n\nfaults injected by kind\n${kinds}\n\nprocess outcomes\n${ex}\n`
  const file = process.env.RMQ_FAULTS_TALLY ?? path.join(os.tmpdir(), `rmq-faults-tally-${process.pid}.txt`)
  fs.writeFileSync(file, text)
  return text
}

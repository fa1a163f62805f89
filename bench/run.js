#!/usr/bin/env node
// Runs every bench/suites/*.js suite in this one process run, so ratios are
// measured on the same machine state, prints one table and writes JSON to
// bench/results/. `node bench/run.js publish broker` runs the named suites only.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import Table from 'cli-table3'

const here = path.dirname(fileURLToPath(import.meta.url))
const only = process.argv.slice(2)
const suites = fs
  .readdirSync(path.join(here, 'suites'))
  .filter((f) => f.endsWith('.js'))
  .filter((f) => only.length === 0 || only.some((o) => f.includes(o)))
  .sort()

const rows = []
for (const file of suites) {
  const mod = await import(pathToFileURL(path.join(here, 'suites', file)).href)
  process.stderr.write(`bench: ${file} ...\n`)
  const started = Date.now()
  try {
    const results = await mod.run()
    for (const r of results) rows.push({ suite: file.replace(/\.js$/, ''), ...r })
  } catch (err) {
    rows.push({
      suite: file.replace(/\.js$/, ''),
      metric: 'ERROR',
      value: String(err?.message ?? err),
      unit: '',
      target: '',
      pass: false,
    })
  }
  process.stderr.write(`bench: ${file} done in ${((Date.now() - started) / 1000).toFixed(1)}s\n`)
}

const table = new Table({ head: ['suite', 'metric', 'value', 'unit', 'target', 'ok'] })
for (const r of rows) {
  const value =
    typeof r.value === 'number' ? (Number.isInteger(r.value) ? r.value : Number(r.value.toFixed(3))) : r.value
  table.push([
    r.suite,
    r.metric,
    value,
    r.unit ?? '',
    r.target ?? '',
    r.pass === undefined ? '' : r.pass ? 'yes' : 'NO',
  ])
}
console.log(table.toString())

const stamp = new Date().toISOString().replace(/[:.]/g, '-')
const out = path.join(here, 'results', `bench-${stamp}.json`)
fs.mkdirSync(path.dirname(out), { recursive: true })
const machine = {
  node: process.version,
  cpus: os.cpus().length,
  cpuModel: os.cpus()[0]?.model,
  memGiB: Math.round(os.totalmem() / 2 ** 30),
}
fs.writeFileSync(out, JSON.stringify({ at: new Date().toISOString(), machine, rows }, null, 2) + '\n')
console.log(`results written to ${path.relative(process.cwd(), out)}`)

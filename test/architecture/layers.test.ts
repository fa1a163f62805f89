/**
 * The shape of src/ (docs/architecture.md): imports point down the layers,
 * there are no import circles, and no file is too long to read in one
 * sitting. The same layer rule runs in `npm run lint` (rule `rmq/layers`);
 * the last test proves that lint fails on an upward import.
 */
import fs from 'node:fs'
import path from 'node:path'
import { ESLint } from 'eslint'
import { describe, expect, it } from 'vitest'
import { ROOT } from '../helpers/cli.js'
// @ts-expect-error plain JavaScript shared with eslint.config.js
import { layerProblem } from '../../scripts/layers.js'

const SRC = path.join(ROOT, 'src')
const IMPORT_RE =
  /(?:^|\n)\s*(?:import|export)\s[^'"]*?from\s+['"](\.{1,2}\/[^'"]+)['"]|import\(\s*['"](\.{1,2}\/[^'"]+)['"]\s*\)|(?:^|\n)\s*import\s+['"](\.{1,2}\/[^'"]+)['"]/g

function sourceFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name)
    if (e.isDirectory()) return sourceFiles(p)
    return /\.ts$/.test(e.name) && !e.name.endsWith('.d.ts') ? [p] : []
  })
}

/** Relative imports of each file, resolved to the .ts file they name. */
function importGraph(): Map<string, Array<{ to: string; specifier: string }>> {
  const graph = new Map<string, Array<{ to: string; specifier: string }>>()
  for (const file of sourceFiles(SRC)) {
    const text = fs.readFileSync(file, 'utf8')
    const edges: Array<{ to: string; specifier: string }> = []
    for (const m of text.matchAll(IMPORT_RE)) {
      const specifier = m[1] ?? m[2] ?? m[3]
      const base = path.resolve(path.dirname(file), specifier)
      const to = [base.replace(/\.js$/, '.ts'), base + '.ts', path.join(base, 'index.ts')].find((c) =>
        fs.existsSync(c),
      )
      if (to) edges.push({ to, specifier })
    }
    graph.set(file, edges)
  }
  return graph
}

/** Strongly connected components with more than one file (Tarjan), or a file importing itself. */
function circles(graph: Map<string, Array<{ to: string }>>): string[][] {
  let index = 0
  const idx = new Map<string, number>()
  const low = new Map<string, number>()
  const stack: string[] = []
  const on = new Set<string>()
  const out: string[][] = []
  const visit = (v: string) => {
    idx.set(v, index)
    low.set(v, index++)
    stack.push(v)
    on.add(v)
    for (const { to: w } of graph.get(v) ?? []) {
      if (!idx.has(w)) {
        visit(w)
        low.set(v, Math.min(low.get(v)!, low.get(w)!))
      } else if (on.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!))
    }
    if (low.get(v) === idx.get(v)) {
      const comp: string[] = []
      let w: string
      do {
        w = stack.pop()!
        on.delete(w)
        comp.push(path.relative(ROOT, w))
      } while (w !== v)
      if (comp.length > 1 || (graph.get(v) ?? []).some((e) => e.to === v)) out.push(comp.sort())
    }
  }
  for (const v of graph.keys()) if (!idx.has(v)) visit(v)
  return out
}

describe('the layers of src/', () => {
  const graph = importGraph()

  it('reads a real graph (every layer has files, imports were found)', () => {
    const edges = [...graph.values()].reduce((n, e) => n + e.length, 0)
    expect(graph.size).toBeGreaterThan(50)
    expect(edges).toBeGreaterThan(200)
    for (const layer of ['shared', 'protocol', 'core', 'plugins', 'broker', 'cli', 'commands', 'testing'])
      expect(fs.existsSync(path.join(SRC, layer)), layer).toBe(true)
  })

  it('every import points down', () => {
    const upward: string[] = []
    for (const [from, edges] of graph)
      for (const { specifier } of edges) {
        const problem = layerProblem(from, specifier)
        if (problem) upward.push(`${path.relative(ROOT, from)}: ${problem}`)
      }
    expect(upward).toEqual([])
  })

  it('has no import circles', () => {
    expect(circles(graph)).toEqual([])
  })

  it('finds a circle when there is one (the check itself works)', () => {
    const a = path.join(SRC, 'a.ts')
    const b = path.join(SRC, 'b.ts')
    const fake = new Map([
      [a, [{ to: b }]],
      [b, [{ to: a }]],
    ])
    expect(circles(fake)).toEqual([['src/a.ts', 'src/b.ts']])
  })

  it('no file in src/ is over 600 lines (a file is read in one sitting)', () => {
    const long = sourceFiles(SRC)
      .map((f) => [path.relative(ROOT, f), fs.readFileSync(f, 'utf8').split('\n').length] as const)
      .filter(([, n]) => n > 600)
    expect(long).toEqual([])
  })

  it('SyncRun, the heart of the sync engine, stays under 300 lines', () => {
    const text = fs.readFileSync(path.join(SRC, 'core/sync/run.ts'), 'utf8').split('\n')
    const start = text.findIndex((l) => l.startsWith('class SyncRun'))
    const end = text.findIndex((l, i) => i > start && l === '}')
    expect(start).toBeGreaterThan(-1)
    expect(end - start + 1).toBeLessThan(300)
  })

  it('npm run lint fails on an upward import (rule rmq/layers), and passes a downward one', async () => {
    const eslint = new ESLint({ cwd: ROOT })
    const up = await eslint.lintText(
      "import { createBrokerApp } from '../broker/app.js'\nexport const x = createBrokerApp\n",
      {
        filePath: path.join(SRC, 'core', 'upward-import-fixture.ts'),
      },
    )
    const messages = up[0].messages.filter((m) => m.ruleId === 'rmq/layers')
    expect(messages).toHaveLength(1)
    expect(messages[0].message).toContain('src/core/ must not import src/broker/')
    const down = await eslint.lintText(
      "import { ConfigError } from '../shared/errors.js'\nexport const x = ConfigError\n",
      {
        filePath: path.join(SRC, 'core', 'downward-import-fixture.ts'),
      },
    )
    expect(down[0].messages.filter((m) => m.ruleId === 'rmq/layers')).toEqual([])
  })
})

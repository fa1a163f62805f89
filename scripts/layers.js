// The layer rule of src/ (docs/architecture.md): every import points down.
// Used by eslint.config.js (rule `rmq/layers`) and by the import-graph test,
// so the lint step and the test agree on what "down" means.
import path from 'node:path'
import { fileURLToPath } from 'node:url'

/** src/ of this checkout, wherever the linter or test runs from. */
const SRC = fileURLToPath(new URL('../src', import.meta.url))

/** Rooms of src/, bottom first. A file may import its own layer or a lower one. */
export const LAYERS = ['shared', 'protocol', 'core', 'plugins', 'broker', 'cli', 'commands', 'testing']
/** Files at the top of src/ (the library entry) sit above every layer. */
const TOP = LAYERS.length

/** The layer index of a path inside src/, or undefined outside src/. */
export function layerOf(file) {
  const rel = path.relative(SRC, path.resolve(file)).split(path.sep)
  if (rel[0] === '..' || path.isAbsolute(rel[0])) return undefined
  if (rel.length === 1) return TOP
  const i = LAYERS.indexOf(rel[0])
  return i === -1 ? TOP : i
}

/** The problem with importing `specifier` from `file`, or undefined when it points down. */
export function layerProblem(file, specifier) {
  if (!specifier.startsWith('.')) return undefined
  const from = layerOf(file)
  if (from === undefined) return undefined
  const target = path.resolve(path.dirname(path.resolve(file)), specifier)
  const to = layerOf(target)
  if (to === undefined || to <= from) return undefined
  const name = (i) => (i === TOP ? 'src/ (top)' : `src/${LAYERS[i]}/`)
  return `${name(from)} must not import ${name(to)} (${specifier}): imports point down, ${LAYERS.join(' < ')}`
}

/** ESLint rule: static imports, re-exports and import() of a string literal. */
export const layersRule = {
  meta: {
    type: 'problem',
    docs: { description: 'imports in src/ point down the layers of docs/architecture.md' },
    schema: [],
  },
  create(context) {
    const file = context.filename ?? context.getFilename()
    const check = (node, source) => {
      if (!source || typeof source.value !== 'string') return
      const problem = layerProblem(file, source.value)
      if (problem) context.report({ node, message: problem })
    }
    return {
      ImportDeclaration: (node) => check(node, node.source),
      ExportAllDeclaration: (node) => check(node, node.source),
      ExportNamedDeclaration: (node) => check(node, node.source),
      ImportExpression: (node) => check(node, node.source.type === 'Literal' ? node.source : undefined),
    }
  },
}

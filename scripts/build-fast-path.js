#!/usr/bin/env node
// Bundles the `rmq publish` fast path into one CommonJS file. A shell script
// that publishes one reading at a time pays Node's start-up on every call, and
// loading ~20 ES modules one by one costs ~15% of it (measured: 1.40x vs
// 1.23x of `node -e 0`). Packages stay external and load as before (lazily),
// except better-sqlite3's JavaScript (below).
import fs from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { build } from 'esbuild'

const require = createRequire(import.meta.url)

// better-sqlite3's 13 JavaScript files, which every publish loads, cost about 6 ms one by one and 2 ms
// as part of the bundle (21 runs each). The storage driver loads them with a createRequire()'d
// require, which esbuild leaves alone, so for this bundle only that call becomes an import esbuild
// follows. Its addon still loads from node_modules (the driver passes its path), and `bindings`,
// which better-sqlite3 needs only without that path, stays external.
const SQLITE_DRIVER = /dist[\\/]plugins[\\/]storage[\\/]sqlite[\\/]addon\.js$/
const LOAD_BETTER_SQLITE3 = "const Database = require('better-sqlite3');"
const bundleBetterSqlite3 = {
  name: 'bundle-better-sqlite3',
  setup(b) {
    b.onResolve({ filter: /^better-sqlite3$/ }, () => ({ path: require.resolve('better-sqlite3') }))
    b.onLoad({ filter: SQLITE_DRIVER }, async (args) => {
      const source = await fs.promises.readFile(args.path, 'utf8')
      if (!source.includes(LOAD_BETTER_SQLITE3))
        throw new Error(`${args.path} no longer loads better-sqlite3 with ${LOAD_BETTER_SQLITE3}`)
      return {
        contents:
          "import __betterSqlite3 from 'better-sqlite3';\n" +
          source.replace(LOAD_BETTER_SQLITE3, 'const Database = __betterSqlite3;'),
        loader: 'js',
        resolveDir: path.dirname(args.path),
      }
    })
  },
}

await build({
  entryPoints: ['dist/cli/publish-fast.js'],
  outfile: 'dist/cli/publish-fast.cjs',
  bundle: true,
  format: 'cjs',
  platform: 'node',
  target: 'node20',
  packages: 'external',
  logLevel: 'warning',
  plugins: [bundleBetterSqlite3],
  // createRequire(import.meta.url) resolves packages; in CommonJS the file's own URL does the same.
  define: { 'import.meta.url': '__rmqFileUrl' },
  banner: {
    js:
      "// rmq's publish fast path, with better-sqlite3's JavaScript (MIT licensed, see node_modules/better-sqlite3)\n" +
      "const __rmqFileUrl = require('node:url').pathToFileURL(__filename).href;",
  },
})

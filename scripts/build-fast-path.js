#!/usr/bin/env node
// Bundles the `rmq publish` fast path into one CommonJS file, and got into one ES module. A shell script
// that publishes one reading at a time pays Node's start-up on every call, and
// loading ~20 ES modules one by one costs ~15% of it (measured: 1.40x vs
// 1.23x of `node -e 0`). Packages stay external and load as before (lazily).
import { build } from 'esbuild'

await build({
  entryPoints: ['dist/cli/publish-fast.js'],
  outfile: 'dist/cli/publish-fast.cjs',
  bundle: true,
  format: 'cjs',
  platform: 'node',
  target: 'node20',
  packages: 'external',
  logLevel: 'warning',
  // createRequire(import.meta.url) resolves packages; in CommonJS the file's own URL does the same.
  define: { 'import.meta.url': '__rmqFileUrl' },
  banner: { js: "const __rmqFileUrl = require('node:url').pathToFileURL(__filename).href;" },
})

// got as one ES module: `rmq sync` loads it for its first request, and one file compiles in about
// half the time of got's ~40 modules loaded one by one (measured 50 ms against 85-125 ms). The
// package stays a dependency (its license and types come from node_modules); from the TypeScript
// sources, and if this file is missing, src/core/broker-client.ts loads the package itself.
await build({
  stdin: { contents: "export { default } from 'got'", resolveDir: process.cwd(), loader: 'js' },
  outfile: 'dist/vendor/got.js',
  bundle: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  legalComments: 'inline',
  logLevel: 'warning',
  banner: {
    js:
      '// got and its dependencies (MIT licensed, see node_modules/got), bundled by scripts/build-fast-path.js\n' +
      // Its CommonJS dependencies require Node's built-ins (http2, …).
      "import { createRequire as __rmqCreateRequire } from 'node:module';\n" +
      'const require = __rmqCreateRequire(import.meta.url);',
  },
})

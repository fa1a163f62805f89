#!/usr/bin/env node
// CommonJS (bin/package.json): the ES module loader alone costs a few percent
// of start-up. `rmq publish` is the hot path of shell scripts on gateways: it
// skips oclif (about +60 ms) unless help is asked for, and loads one bundled
// file instead of ~20 modules (scripts/build-fast-path.js).
const path = require('node:path')

const argv = process.argv.slice(2)
if (
  argv[0] === 'publish' &&
  !process.env.RMQ_NO_FAST_PATH &&
  !argv.some((a) => a === '--help' || a === '-h')
) {
  const { runPublishCli } = require('../dist/cli/publish-fast.cjs')
  runPublishCli(argv.slice(1)).then((code) => (process.exitCode = code))
} else {
  // The project root, not bin/: bin/package.json only sets the module type.
  require('@oclif/core').execute({ dir: path.join(__dirname, '..', 'package.json') })
}

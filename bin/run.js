#!/usr/bin/env node
// `rmq publish` is the hot path of shell scripts on gateways: it skips oclif
// (about +60 ms of start-up) unless help is asked for.
const argv = process.argv.slice(2)
if (
  argv[0] === 'publish' &&
  !process.env.RMQ_NO_FAST_PATH &&
  !argv.some((a) => a === '--help' || a === '-h')
) {
  const { runPublishCli } = await import('../dist/cli/publish-fast.js')
  process.exitCode = await runPublishCli(argv.slice(1))
} else {
  const { execute } = await import('@oclif/core')
  await execute({ dir: import.meta.url })
}

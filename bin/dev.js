#!/usr/bin/env node
// Runs the TypeScript sources directly (no build step), for development.
// oclif's own tsx hook does not find tsx 4.2x, so register it here and point
// oclif at src/commands.
import fs from 'node:fs'
import { register } from 'tsx/esm/api'

register()
const { execute } = await import('@oclif/core')
const pjson = JSON.parse(fs.readFileSync(new URL('../package.json', import.meta.url), 'utf8'))
pjson.oclif.commands = './src/commands'
await execute({ dir: import.meta.url, loadOptions: { root: new URL('..', import.meta.url).pathname, pjson } })

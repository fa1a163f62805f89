#!/usr/bin/env node
// Runs the TypeScript sources directly (no build step), for development.
// tsx's CommonJS API and oclif's own tsx hook both miss tsx 4.2x's files, so
// register tsx's ES module API here and point oclif at src/commands.
const fs = require('node:fs')
const path = require('node:path')

const root = path.join(__dirname, '..')
import('tsx/esm/api').then(({ register }) => {
  register()
  const pjson = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'))
  pjson.oclif.commands = './src/commands'
  return require('@oclif/core').execute({
    dir: path.join(root, 'package.json'),
    loadOptions: { root, pjson },
  })
})

import fs from 'node:fs'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { CONFIG_KEYS, envVarFor } from '../../src/core/config/schema.js'
import { ROOT } from '../helpers/cli.js'

describe('README', () => {
  const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8')
  it('documents every configuration key with its environment variable', () => {
    const missing = CONFIG_KEYS.filter((k) => !readme.includes(`| \`${k.key}\` | \`${envVarFor(k.key)}\` |`))
    expect(missing.map((k) => k.key)).toEqual([])
  })
  it('documents every exit code', () => {
    for (const code of [0, 1, 2, 65, 69, 73, 75, 78])
      expect(readme).toMatch(new RegExp(`^\\| ${code} \\|`, 'm'))
  })
})

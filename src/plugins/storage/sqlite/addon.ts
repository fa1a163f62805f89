/**
 * better-sqlite3, loaded for the outbox: the package's JavaScript and its
 * native addon. scripts/build-fast-path.js bundles the JavaScript into the
 * `rmq publish` fast path by rewriting the require() line below (it checks
 * that the line is still there).
 */
import fs from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import type BetterSqlite3 from 'better-sqlite3'

// require() skips the CommonJS export scan that `import` does: a few ms of every `rmq publish`.
export const require = createRequire(import.meta.url)
export const Database = require('better-sqlite3') as typeof BetterSqlite3
/**
 * better-sqlite3's addon, found here so that better-sqlite3 need not search for it with `bindings`,
 * which guesses the package from its caller's file and so cannot find it from the publish fast-path
 * bundle (scripts/build-fast-path.js bundles better-sqlite3's JavaScript). Usually the path of the
 * usual build; else `bindings` searches better-sqlite3's own folder (a debug build, say).
 */
let nativeBinding: string | object | undefined
export function nativeAddon(): string | object | undefined {
  if (nativeBinding === undefined) {
    try {
      const root = path.dirname(require.resolve('better-sqlite3/package.json'))
      const usual = path.join(root, 'build/Release/better_sqlite3.node')
      nativeBinding = fs.existsSync(usual)
        ? usual
        : (createRequire(path.join(root, 'package.json'))('bindings') as (o: object) => object)({
            bindings: 'better_sqlite3.node',
            module_root: root,
          })
    } catch {
      nativeBinding = ''
    }
  }
  return nativeBinding || undefined
}
export type Database = BetterSqlite3.Database
export type Statement = BetterSqlite3.Statement

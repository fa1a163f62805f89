import { describe, expect, it } from 'vitest'
import { findJsonSyntaxError } from '../../src/core/config/json-syntax.js'

describe('findJsonSyntaxError', () => {
  it.each([
    ['{\n  "nodeId": "gw",\n  "sync": { "batchSize": 5, }\n}\n', 3, 29, 'a comma before "}"'],
    ['{ "a": 1\n', 2, 1, 'expected "," or "}" after a property value, found the end of the file'],
    ['{\n  // note\n  "a": 1}', 2, 3, 'comments are not allowed in JSON'],
    ["{'a': 1}", 1, 2, 'expected a property name in double quotes'],
    ['{"a": \'x\'}', 1, 7, 'not single quotes'],
    ['{"a" 1}', 1, 6, 'expected ":" after the property name, found "1"'],
    ['{"a": "x\ny"}', 1, 9, 'a string cannot contain a raw line break'],
    ['[1, 2,]', 1, 7, 'a comma before "]"'],
    ['[1 2]', 1, 4, 'expected "," or "]" after a list item'],
    ['{"a": 1} x', 1, 10, 'unexpected "x" after the end of the JSON value'],
    ['{\n"nodeId": tru\n}', 2, 11, 'expected a value after ":", found "t"'],
    ['{"a": 01}', 1, 7, 'expected a value after ":", found "0"'],
    ['"\\x"', 1, 2, 'invalid escape \\x'],
    ['', 1, 1, 'found the end of the file'],
  ])('%j: %i:%i %s', (text, line, column, message) => {
    const e = findJsonSyntaxError(text)
    expect(e).toMatchObject({ line, column })
    expect(e!.message).toContain(message)
  })

  it('agrees with JSON.parse on every one-character deletion, insertion and replacement of a config', () => {
    const base =
      '{"nodeId":"gw-1","sync":{"batchSize":500,"interval":"30s"},"x":[1,-2.5e3,true,null,"\\u00e9"]}'
    const inserts = ['', ',', '}', ']', '"', ':', ' ', '0', '.', 'e', '-', '\\', 'x', '\n']
    let checked = 0
    for (let i = 0; i <= base.length; i++)
      for (const c of inserts)
        for (const text of [base.slice(0, i) + c + base.slice(i), base.slice(0, i) + c + base.slice(i + 1)]) {
          let valid = true
          try {
            JSON.parse(text)
          } catch {
            valid = false
          }
          expect(findJsonSyntaxError(text) === undefined, text).toBe(valid)
          checked++
        }
    expect(checked).toBeGreaterThan(2000)
  })
})

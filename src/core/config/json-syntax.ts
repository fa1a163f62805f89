/**
 * Where a JSON text first goes wrong, and what is wrong there. JSON.parse's
 * messages differ between Node versions and often carry no position ("Unexpected
 * token '}'... is not valid JSON"), so a config file's syntax error is located
 * here, with the same rules (RFC 8259), to say FILE:LINE:COL.
 */

export interface JsonSyntaxError {
  /** 1-based. */
  line: number
  /** 1-based, in characters. */
  column: number
  message: string
}

/** Deeper than any configuration; past it, give up rather than use up the stack. */
const MAX_DEPTH = 512

class Found extends Error {
  constructor(
    readonly offset: number,
    message: string,
  ) {
    super(message)
  }
}

/** The first syntax error in `text`, or undefined if it is valid JSON (or nested too deeply to tell). */
export function findJsonSyntaxError(text: string): JsonSyntaxError | undefined {
  let i = text.charCodeAt(0) === 0xfeff ? 1 : 0
  const what = (at: number) => (at >= text.length ? 'the end of the file' : JSON.stringify(text[at]))
  const fail = (message: string, at = i): never => {
    const comment = text[at] === '/' && (text[at + 1] === '/' || text[at + 1] === '*')
    throw new Found(at, comment ? 'comments are not allowed in JSON' : message)
  }
  const space = () => {
    while (i < text.length && ' \t\n\r'.includes(text[i])) i++
  }
  const expect = (c: string, context: string) => {
    space()
    if (text[i] !== c) fail(`expected ${JSON.stringify(c)} ${context}, found ${what(i)}`)
    i++
  }
  const string = () => {
    i++ // the opening quote
    for (;;) {
      if (i >= text.length) fail('this string is never closed (a " is missing)')
      const c = text.charCodeAt(i)
      if (c === 0x22) return void i++
      if (c < 0x20) fail(`a string cannot contain a raw ${c === 0x0a ? 'line break' : 'control character'}`)
      if (c === 0x5c) {
        const e = text[i + 1]
        if (e === 'u') {
          if (!/^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) fail('\\u must be followed by 4 hex digits')
          i += 6
        } else if (e !== undefined && '"\\/bfnrt'.includes(e)) i += 2
        else fail(`invalid escape \\${e ?? ''} in a string`)
      } else i++
    }
  }
  const value = (depth: number, context: string): void => {
    if (depth > MAX_DEPTH) throw new Found(-1, '')
    space()
    const c = text[i]
    if (c === '{') return object(depth)
    if (c === '[') return array(depth)
    if (c === '"') return string()
    const word = /^(?:true|false|null)(?![\w$])/.exec(text.slice(i, i + 6))
    if (word) return void (i += word[0].length)
    const num = /^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/.exec(text.slice(i, i + 400))
    if (num && num[0] !== '-' && !/[\w.]/.test(text[i + num[0].length] ?? ''))
      return void (i += num[0].length)
    if (c === "'") fail('strings and names must be in double quotes, not single quotes')
    fail(`expected a value ${context}, found ${what(i)}`)
  }
  const object = (depth: number) => {
    i++
    space()
    if (text[i] === '}') return void i++
    for (;;) {
      space()
      if (text[i] !== '"')
        fail(
          text[i] === '}'
            ? 'a comma before "}" (trailing commas are not allowed in JSON)'
            : `expected a property name in double quotes, found ${what(i)}`,
        )
      string()
      expect(':', 'after the property name')
      value(depth + 1, 'after ":"')
      space()
      if (text[i] === '}') return void i++
      if (text[i] !== ',') fail(`expected "," or "}" after a property value, found ${what(i)}`)
      i++
    }
  }
  const array = (depth: number) => {
    i++
    space()
    if (text[i] === ']') return void i++
    for (;;) {
      space()
      if (text[i] === ']') fail('a comma before "]" (trailing commas are not allowed in JSON)')
      value(depth + 1, 'in the list')
      space()
      if (text[i] === ']') return void i++
      if (text[i] !== ',') fail(`expected "," or "]" after a list item, found ${what(i)}`)
      i++
    }
  }
  try {
    value(0, 'at the start of the file')
    space()
    if (i < text.length) fail(`unexpected ${what(i)} after the end of the JSON value`)
    return undefined
  } catch (err) {
    if (!(err instanceof Found) || err.offset < 0) return undefined
    const before = text.slice(0, err.offset)
    const line = before.split('\n').length
    const column = err.offset - (before.lastIndexOf('\n') + 1) + 1
    return { line, column, message: err.message }
  }
}

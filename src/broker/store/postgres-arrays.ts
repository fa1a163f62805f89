/**
 * PostgreSQL array literals for the ingest's array parameters, built here
 * rather than by the pg driver: it converts and quotes every element of an
 * array parameter one at a time (prepareValue, then two regex replaces and
 * three concatenations each), which was about 2 µs of the broker's work per
 * message for a batch's seq, ts, length and topic arrays. The server parses
 * the same text either way.
 */

/** `{1,2,NULL}`: integers (seqs, timestamps, lengths) or NULL. */
export function integerArray(values: readonly (number | null)[]): string {
  let out = '{'
  for (let i = 0; i < values.length; i++) {
    const v = values[i]
    if (i > 0) out += ','
    out += v === null ? 'NULL' : String(v)
  }
  return out + '}'
}

const NEEDS_ESCAPE = /["\\]/
const BACKSLASH = /\\/g
const QUOTE = /"/g

/** `{"a","b\"c",NULL}`: every element quoted, so that NULL, spaces and commas stay text. */
export function textArray(values: readonly (string | null)[]): string {
  let out = '{'
  for (let i = 0; i < values.length; i++) {
    const v = values[i]
    if (i > 0) out += ','
    if (v === null) out += 'NULL'
    else if (NEEDS_ESCAPE.test(v)) out += '"' + v.replace(BACKSLASH, '\\\\').replace(QUOTE, '\\"') + '"'
    else out += '"' + v + '"'
  }
  return out + '}'
}

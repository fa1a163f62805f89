/**
 * The node-id rule, one definition for the edge (config validation), the
 * broker (batch schema, token creation) and the CLI: 1 to 128 characters, no
 * whitespace, no slash, no control characters. A node id names a stream and
 * becomes part of every message id (`node/epoch/seq`), so a slash or a space
 * would make ids ambiguous.
 */
export const NODE_ID_MAX = 128
/** As a JSON-schema `pattern` (the batch schema) and as a RegExp (everything else). */
export const NODE_ID_PATTERN = '^[^\\u0000-\\u001f\\u007f/\\s]+$'
const NODE_ID_RE = new RegExp(NODE_ID_PATTERN)

/** What the rule says, for error messages and fix lines. */
export const NODE_ID_RULE = `1-${NODE_ID_MAX} characters without spaces, slashes or control characters (e.g. gw-17)`

/** Why `id` is not a valid node id, or undefined when it is. */
export function nodeIdProblem(id: string): string | undefined {
  if (id.length === 0) return 'it is empty'
  if (id.length > NODE_ID_MAX) return `it has ${id.length} characters, more than ${NODE_ID_MAX}`
  if (!NODE_ID_RE.test(id)) return 'it contains a space, a slash or a control character'
  return undefined
}

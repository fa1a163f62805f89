/** The shape of one configuration key (schema.ts lists them). */
export type KeyType = 'string' | 'int' | 'number' | 'bool' | 'duration' | 'size' | 'enum' | 'url' | 'list'

export interface KeyDef {
  key: string
  type: KeyType
  default: string | number | boolean | string[]
  description: string
  values?: readonly string[]
  secret?: boolean
  min?: number
  max?: number
  /** A rule beyond the type: why a value is wrong (undefined when right), and what the rule is. */
  check?: { problem(value: string): string | undefined; rule: string }
}

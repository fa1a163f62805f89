/** A duration flag (`--timeout 5m`, `--until-idle 30s`) to ms, or a usage error naming the flag (exit 2). */
import { UsageError } from '../shared/errors.js'
import { DURATION_FORMS, parseDuration } from '../shared/units.js'

export function parseDurationFlag(value: string, flag: string, opts: { positive?: boolean } = {}): number {
  const ms = parseDuration(value)
  if (ms === undefined || ((opts.positive ?? true) && ms <= 0))
    throw new UsageError(`${flag}: ${JSON.stringify(value)} is not a duration`, {
      suggestion: `use ${DURATION_FORMS}`,
    })
  return ms
}

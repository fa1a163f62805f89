/** Checks of what `rmq schedule` prints: crontab(5) lines and systemd unit files. */
const FIELDS: Array<[string, number, number]> = [
  ['minute', 0, 59],
  ['hour', 0, 23],
  ['day of month', 1, 31],
  ['month', 1, 12],
  ['day of week', 0, 7],
]

/** Problems with one crontab(5) line: 5 time fields (numbers, *, ranges, lists, steps), then a command. */
export function cronProblems(line: string): string[] {
  const m = /^(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(.+)$/.exec(line)
  if (!m) return ['not 5 fields and a command']
  const out: string[] = []
  FIELDS.forEach(([name, lo, hi], i) => {
    for (const item of m[i + 1].split(',')) {
      const im = /^(\*|(\d+)(?:-(\d+))?)(?:\/(\d+))?$/.exec(item)
      if (!im) {
        out.push(`${name}: bad item ${item}`)
        continue
      }
      const nums = [im[2], im[3]].filter((x) => x !== undefined).map(Number)
      if (nums.some((n) => n < lo || n > hi)) out.push(`${name}: ${item} outside ${lo}-${hi}`)
      if (nums.length === 2 && nums[0] > nums[1]) out.push(`${name}: reversed range ${item}`)
      if (im[4] !== undefined && Number(im[4]) < 1) out.push(`${name}: step 0`)
    }
  })
  // In the command field an unescaped % ends the command (the rest goes to stdin).
  if (/(^|[^\\])%/.test(m[6])) out.push('unescaped % in the command')
  return out
}

export function cronLines(crontab: string): string[] {
  return crontab.split('\n').filter((l) => l.trim() !== '' && !l.startsWith('#'))
}

/** Sections and Key=Value lines of a unit file. */
export function parseUnit(text: string): Record<string, Record<string, string>> {
  const out: Record<string, Record<string, string>> = {}
  let section = ''
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const s = /^\[(\w+)\]$/.exec(line)
    if (s) {
      section = s[1]
      out[section] = {}
      continue
    }
    const kv = /^([A-Za-z]+)=(.*)$/.exec(line)
    if (!kv || !section) throw new Error(`not a unit file line: ${line}`)
    out[section][kv[1]] = kv[2]
  }
  return out
}

import Table from 'cli-table3'

/** A plain, borderless table that reads well in a terminal and in logs. */
export function renderTable(head: string[], rows: Array<Array<string | number>>): string {
  const table = new Table({
    head,
    style: { head: [], border: [], compact: true, 'padding-left': 0, 'padding-right': 2 },
    chars: {
      top: '',
      'top-mid': '',
      'top-left': '',
      'top-right': '',
      bottom: '',
      'bottom-mid': '',
      'bottom-left': '',
      'bottom-right': '',
      left: '',
      'left-mid': '',
      mid: '',
      'mid-mid': '',
      right: '',
      'right-mid': '',
      middle: '',
    },
  })
  for (const r of rows) table.push(r.map(String))
  return table.toString().replace(/[ \t]+$/gm, '')
}

/** Key/value pairs as a two-column table. */
export function renderPairs(pairs: Array<[string, string | number]>): string {
  const table = new Table({
    style: { head: [], border: [], compact: true, 'padding-left': 0, 'padding-right': 2 },
    chars: {
      top: '',
      'top-mid': '',
      'top-left': '',
      'top-right': '',
      bottom: '',
      'bottom-mid': '',
      'bottom-left': '',
      'bottom-right': '',
      left: '',
      'left-mid': '',
      mid: '',
      'mid-mid': '',
      right: '',
      'right-mid': '',
      middle: '',
    },
  })
  for (const [k, v] of pairs) table.push([k, String(v)])
  return table.toString().replace(/[ \t]+$/gm, '')
}

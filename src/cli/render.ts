import Table from 'cli-table3'

// Borderless, compact: reads well in a terminal and in logs.
const PLAIN: ConstructorParameters<typeof Table>[0] = {
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
}

function render(rows: Array<Array<string | number>>, head?: string[]): string {
  const table = new Table(head ? { ...PLAIN, head } : PLAIN)
  for (const r of rows) table.push(r.map(String))
  return table.toString().replace(/[ \t]+$/gm, '')
}

/** A table with a header row. */
export function renderTable(head: string[], rows: Array<Array<string | number>>): string {
  return render(rows, head)
}

/** Key/value pairs as a two-column table. */
export function renderPairs(pairs: Array<[string, string | number]>): string {
  return render(pairs)
}

/**
 * Seqs as runs of consecutive numbers: how sync names the batches it
 * excludes (StorageDriver.oldestPendingTs) and how drivers mark them sent.
 */

/** Distinct seqs in any order as sorted [first, last] runs of consecutive seqs (ascending input is not copied). */
export function sortedRuns(seqs: ArrayLike<number>): Array<[number, number]> {
  let ascending = true
  for (let i = 1; i < seqs.length && ascending; i++) ascending = seqs[i] > seqs[i - 1]
  const sorted = ascending ? seqs : Float64Array.from(seqs).sort()
  const out: Array<[number, number]> = []
  for (let i = 0; i < sorted.length;) {
    let j = i
    while (j + 1 < sorted.length && sorted[j + 1] - sorted[j] <= 1) j++
    out.push([sorted[i], sorted[j]])
    i = j + 1
  }
  return out
}

/**
 * The contract of a store's salvage (`rmq doctor --repair`, core/repair.ts):
 * copy every readable message of a damaged store into a fresh one, with its
 * seq, status and times, and the store's state (epoch, node id), so that the
 * broker's dedup on (node, epoch, seq) still holds for what is sent again.
 * Drivers with a file register one (src/plugins/builtins.ts); core decides
 * when it may run and moves the files.
 */
export interface LeaseRow {
  name: string
  owner: string
  expiresAt: number
}

export interface SalvageOptions {
  /** The damaged store. */
  path: string
  /** Where the fresh store is written (must not exist). */
  target: string
  now: number
  /**
   * Called once the damaged store's small tables are read and before
   * anything is written: throw to refuse (a sync holds the store).
   * `state` is every readable state key.
   */
  check?: (leases: LeaseRow[], state: Record<string, string>) => void
  /**
   * Called once the fresh store is complete and closed, while the damaged
   * one is still locked against writers: core moves it aside here (the
   * fresh one takes its place once the salvager has closed it).
   */
  finish?: () => void
  /** Progress through the seq range: seqs looked at, of `total`. */
  onProgress?: (done: number, total: number) => void
}

export interface SalvageResult {
  epoch: string
  nodeId: string | null
  /** Messages copied, by status in the fresh store. */
  recovered: { messages: number; pending: number; sent: number; expired: number; bytes: number }
  /** Seq ranges [first, last] that could not be read: their messages are lost (or were removed before). */
  lost: Array<[number, number]>
  /** Seqs in `lost` (an upper bound of the messages lost: cleanup may have removed some before). */
  lostSeqs: number
  /** Pending messages known lost: their queue row was readable, the message was not. */
  lostPending: number
  /** Recovered messages whose queue state could not be read: kept pending (the broker drops a copy it has). */
  statusUnknown: number
  /** Seq range looked at. */
  firstSeq: number
  lastSeq: number
  /** State keys that could not be read (the epoch is never among them: without it nothing is written). */
  stateLost: boolean
}

export type StorageSalvager = (options: SalvageOptions) => Promise<SalvageResult>

const SALVAGERS: Record<string, () => Promise<StorageSalvager>> = {}

/** Make `driver`'s stores repairable, by `load`ed salvager (loaded the first time a repair runs). */
export function registerStorageSalvager(driver: string, load: () => Promise<StorageSalvager>): void {
  SALVAGERS[driver] = load
}

export async function storageSalvager(driver: string): Promise<StorageSalvager | undefined> {
  return Object.hasOwn(SALVAGERS, driver) ? SALVAGERS[driver]() : undefined
}

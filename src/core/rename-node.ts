/**
 * `rmq outbox rename-node`: make an outbox store for another node id, under a
 * new epoch (docs/operations.md "Renaming a node"; the identity rule is in
 * ./identity.ts).
 */
import { ConfigError } from '../shared/errors.js'
import { edgeNow } from '../shared/clock.js'
import { readBackoff } from './backoff.js'
import { NODE_ID_STATE, type IdentityProblem } from './identity.js'
import { Lease } from './lease.js'
import type { StorageDriver } from './storage/driver.js'
import { SYNC_LEASE } from './sync/types.js'

export interface RenameResult {
  before: string | null
  after: string
  epochBefore: string
  epoch: string
  pending: number
  /** It already stored for that node: nothing changed. */
  unchanged: boolean
}

/**
 * Make the outbox store for `nodeId` from now on, under a new epoch, so no
 * seq can collide with what the broker has from the old id. Refused while a
 * sync runs, and (unless `force`) when the last sync attempt failed: a batch
 * of that attempt may have reached the broker under the old id.
 */
export async function renameNode(
  driver: StorageDriver,
  nodeId: string,
  { force = false }: { force?: boolean } = {},
): Promise<RenameResult> {
  const before = (await driver.getState(NODE_ID_STATE)) ?? null
  if (before === nodeId) {
    const { pending } = await driver.stats(edgeNow())
    return { before, after: nodeId, epochBefore: driver.epoch, epoch: driver.epoch, pending, unchanged: true }
  }
  const lease = new Lease(driver, SYNC_LEASE, { ttlMs: 60_000, now: edgeNow })
  if (!(await lease.take()))
    throw new ConfigError('a sync is running on this outbox', {
      details: { problem: 'rename-while-syncing' satisfies IdentityProblem },
    })
  try {
    const { pending } = await driver.stats(edgeNow())
    const backoff = await readBackoff(driver)
    if (backoff && pending > 0 && !force)
      throw new ConfigError(
        `the last sync attempt failed (${backoff.reason}): a batch of it may have reached the broker as ${before ?? 'the old node'} without an acknowledgement`,
        { details: { problem: 'rename-after-failure' satisfies IdentityProblem, pending } },
      )
    const epochBefore = driver.epoch
    // A driver that cannot renew its epoch keeps it: seqs never repeat within an epoch, so the
    // messages still go to the broker as new ones under the new node id.
    const epoch = driver.renewEpoch ? await driver.renewEpoch() : epochBefore
    await driver.setState(NODE_ID_STATE, nodeId)
    return { before, after: nodeId, epochBefore, epoch, pending, unchanged: false }
  } finally {
    await lease.release()
  }
}

/**
 * The node an outbox stores for (docs/operations.md "Renaming a node"). The
 * broker deduplicates on (node, epoch, seq): a batch that reached it as gw-a
 * and is resent as gw-b is a new message, delivered twice. So an outbox
 * records the node id it was first opened for, and sync (`rmq sync`, `drain`,
 * the Producer API's forwarding) refuses to send it under another id; `rmq
 * outbox rename-node` changes it deliberately, under a new epoch.
 */
import { ConfigError } from '../shared/errors.js'
import { edgeNow } from '../shared/clock.js'
import { readBackoff } from './backoff.js'
import { Lease } from './lease.js'
import type { StorageDriver } from './storage/driver.js'

/**
 * Why an identity check or a rename refused, as data (`details.problem` of
 * its ConfigError); the CLI words the fix (src/cli/advice.ts).
 */
export type IdentityProblem =
  /** The outbox stores for another node than nodeId. */
  | 'node-forked'
  /** rename: a sync holds the outbox. */
  | 'rename-while-syncing'
  /** rename: the last attempt failed with messages pending (a batch may be at the broker as the old id). */
  | 'rename-after-failure'

/** The state key holding the node id. */
export const NODE_ID_STATE = 'nodeId'
/** The lease sync holds (core/sync.ts SYNC_LEASE): a rename waits for no running sync. */
const SYNC_LEASE_NAME = 'sync'

/** Record `nodeId` as the outbox's node when it has none yet (a new outbox, or one from before this check). */
export async function recordNodeIdentity(driver: StorageDriver, nodeId: string): Promise<void> {
  if ((await driver.getState(NODE_ID_STATE)) === undefined) await driver.setState(NODE_ID_STATE, nodeId)
}

/** Throw ConfigError (exit 78) when the outbox stores for another node than `nodeId`. */
export async function checkNodeIdentity(driver: StorageDriver, nodeId: string): Promise<void> {
  const stored = await driver.getState(NODE_ID_STATE)
  if (stored === undefined) return recordNodeIdentity(driver, nodeId)
  if (stored === nodeId) return
  const { pending } = await driver.stats(edgeNow())
  throw new ConfigError(
    `this outbox stores messages for node ${stored}, but nodeId is ${nodeId}: ${pending} pending message(s) ` +
      `would be sent as ${nodeId}, and any the broker already has as ${stored} would be delivered twice`,
    { details: { problem: 'node-forked' satisfies IdentityProblem, outboxNodeId: stored, nodeId, pending } },
  )
}

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
  const lease = new Lease(driver, SYNC_LEASE_NAME, { ttlMs: 60_000, now: edgeNow })
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

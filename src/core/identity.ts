/**
 * The node an outbox stores for (docs/operations.md "Renaming a node"). The
 * broker deduplicates on (node, epoch, seq): a batch that reached it as gw-a
 * and is resent as gw-b is a new message, delivered twice. So an outbox
 * records the node id it was first opened for, and sync (`rmq sync`, `drain`,
 * the Producer API's forwarding) refuses to send it under another id; `rmq
 * outbox rename-node` changes it deliberately, under a new epoch
 * (./rename-node.ts, kept apart so that every outbox open, `rmq publish`'s
 * included, loads no lease code: node:crypto and node:os cost ~4 ms of start-up).
 */
import { ConfigError } from '../shared/errors.js'
import { edgeNow } from '../shared/clock.js'
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

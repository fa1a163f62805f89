/**
 * The fixes of this CLI for errors core leaves unadvised. Core names what
 * went wrong (the message) and which problem it is (`details.problem`, with
 * the figures), and leaves `suggestion` unset where the fix is a command or
 * flag of this CLI; the base command adds the fix here before it reports the
 * error (the `fix:` line, `suggestion` in --json).
 */
import type { IdentityProblem } from '../core/identity.js'
import type { RepairProblem } from '../core/repair.js'
import type { StorageProblem } from '../core/storage/driver.js'
import type { SyncProblem } from '../core/sync.js'
import { isRmqError } from '../shared/errors.js'

const ADVICE: Record<
  SyncProblem | IdentityProblem | StorageProblem | RepairProblem,
  (d: Record<string, unknown>) => string
> = {
  // src/core/sync/ (SyncProblem)
  'drain-locked': () =>
    'wait for the other `rmq sync` / `rmq drain` to finish (see `rmq status`), then run `rmq drain` again',
  'drain-interrupted': () =>
    'run `rmq drain` again to send the rest (a batch cut off in flight is sent again; the broker keeps one copy)',
  'drain-timeout': () =>
    'check that the broker is reachable (`rmq status --broker`), then run `rmq drain` again',
  'token-refused': (d) =>
    `set \`token\` (RMQ_TOKEN) to a token made with \`rmq broker token create ${String(d.node)}\` on the broker`,
  'token-other-node': (d) =>
    'the token is bound to another node: set nodeId to its node, or create one with ' +
    `\`rmq broker token create ${String(d.node)}\``,
  'certificate-refused': (d) =>
    `set tls.cert and tls.key (RMQ_TLS_CERT, RMQ_TLS_KEY) to a certificate naming node ${String(d.node)}, ` +
    "signed by the broker's broker.tls.clientCa",
  'batch-rejected': () =>
    'fix the cause the broker gives (or upgrade the broker/edge so they agree), then run `rmq sync` again',
  'message-too-large': () =>
    'one message is larger than the broker accepts: raise broker.limits.* on the broker or lower sync.batchBytes',
  'attempt-failed': () =>
    'the messages are safe in the outbox; later runs retry after the backoff (`rmq sync --force` tries now)',
  // src/core/identity.ts (IdentityProblem)
  'node-forked': (d) =>
    `set nodeId back to ${String(d.outboxNodeId)}; or, if this gateway is ${String(d.nodeId)} from now on, run ` +
    `\`rmq outbox rename-node ${String(d.nodeId)}\` (docs/operations.md)`,
  'rename-while-syncing': () => 'wait for it to finish (or stop `rmq sync --watch`), then rename',
  'rename-after-failure': () =>
    'run `rmq sync` (or `rmq drain`) with the old nodeId until it succeeds, then rename; --force renames ' +
    'anyway and may deliver those messages twice',
  // src/core/storage (StorageProblem)
  'outbox-corrupt': () =>
    'stop `rmq sync --watch` and the timers, then run `rmq doctor --repair`: it copies every readable message ' +
    'into a fresh outbox and keeps the damaged file (docs/operations.md "Repairing a damaged outbox")',
  // src/core/repair.ts (RepairProblem)
  'repair-while-syncing': () =>
    'stop `rmq sync --watch` (and the sync timer or cron job: `rmq schedule`), then run `rmq doctor --repair` again',
}

/** The fix for an error core left it to the CLI to word (by its `details.problem`), else undefined. */
export function adviceFor(err: unknown): string | undefined {
  if (!isRmqError(err)) return undefined
  const problem = err.details?.problem
  if (typeof problem !== 'string' || !Object.hasOwn(ADVICE, problem)) return undefined
  return ADVICE[problem as keyof typeof ADVICE](err.details ?? {})
}

/**
 * The error with the CLI's fix when the engine left it to the caller (the
 * `suggestion` shown as `fix:` and in `--json`); any other error unchanged.
 */
export function withAdvice(err: unknown): unknown {
  if (!isRmqError(err) || err.suggestion) return err
  const suggestion = adviceFor(err)
  if (suggestion) (err as { suggestion?: string }).suggestion = suggestion
  return err
}

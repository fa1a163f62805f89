// The environment for rmq processes a suite starts: the bench's own RMQ_BENCH_* settings are left
// out, because rmq refuses unknown RMQ_* variables (a typo must not be ignored silently).
export function childEnv(extra = {}) {
  const env = { ...process.env }
  for (const k of Object.keys(env)) if (k.startsWith('RMQ_BENCH_')) delete env[k]
  return { ...env, ...extra }
}

/**
 * Node options for the rmq processes a suite starts, from RMQ_BENCH_NODE_ARGS (space-separated),
 * e.g. `RMQ_BENCH_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/prof'` to profile them (NODE_OPTIONS
 * refuses --cpu-prof). The broker writes its profile when it stops on SIGTERM.
 */
export function nodeArgs() {
  return (process.env.RMQ_BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean)
}

// The environment for rmq processes a suite starts: the bench's own RMQ_BENCH_* settings are left
// out, because rmq refuses unknown RMQ_* variables (a typo must not be ignored silently).
export function childEnv(extra = {}) {
  const env = { ...process.env }
  for (const k of Object.keys(env)) if (k.startsWith('RMQ_BENCH_')) delete env[k]
  return { ...env, ...extra }
}

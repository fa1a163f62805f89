/**
 * A full garbage collection on demand, for the store's writer thread after
 * a large JSON body (json-ingest.ts). `--expose-gc` cannot be given to a
 * worker (V8 flags are not per thread), so the flag is set at run time and
 * `gc` taken from a new context, as jest's leak detector does. Without it
 * (a runtime that refuses the flag) collection is left to V8.
 */
import v8 from 'node:v8'
import vm from 'node:vm'

export function collector(): () => void {
  try {
    v8.setFlagsFromString('--expose-gc')
    const gc = vm.runInNewContext('gc') as unknown
    if (typeof gc === 'function') return () => (gc as () => void)()
  } catch {
    // fall through: no explicit collection
  }
  return () => {}
}

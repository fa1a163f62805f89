/**
 * The built-in salvagers (`rmq doctor --repair`, core/storage/salvage.ts),
 * registered apart from src/plugins/builtins.ts: that module is on the
 * `rmq publish` fast path, and a repair is not. Imported by the command that
 * repairs (src/commands/doctor.ts) before it calls core.
 */
import { registerStorageSalvager } from '../core/storage/salvage.js'

registerStorageSalvager('sqlite', async () => (await import('./storage/sqlite/salvage.js')).salvageSqlite)

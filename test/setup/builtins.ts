// Tests call core directly (openOutbox, syncOnce, resolveCodec) without an
// entry point, so register the built-in plugins the way src/index.ts does.
import '../../src/plugins/builtins.js'

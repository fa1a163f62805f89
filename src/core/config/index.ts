export * from './schema.js'
export * from './parse.js'
export * from './load.js'
export * from './file.js'

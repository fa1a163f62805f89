/**
 * Files that hold a token or payloads (config written by `rmq config set`,
 * the outbox and its -wal/-shm, the broker's data directory and database)
 * are readable by their owner only: created 0600 (directories 0700) whatever
 * the umask. SQLite gives its -wal and -shm files the mode of the database
 * file, so creating that one 0600 first covers all three.
 */
import { once } from 'node:events'
import fs from 'node:fs'
import path from 'node:path'

export const PRIVATE_FILE_MODE = 0o600
export const PRIVATE_DIR_MODE = 0o700

/**
 * Create `dir` (and missing parents) 0700. Directories that exist already are
 * left as they are (the working directory is the user's). Best effort: a
 * failure is left for the caller's own open to report in its words.
 */
export function ensurePrivateDir(dir: string): void {
  try {
    const first = fs.mkdirSync(dir, { recursive: true, mode: PRIVATE_DIR_MODE })
    if (first === undefined) return
    // mkdir's mode is masked by the umask: set it exactly on each directory made here.
    for (let d = path.resolve(dir); ; d = path.dirname(d)) {
      fs.chmodSync(d, PRIVATE_DIR_MODE)
      if (d === path.resolve(first) || d === path.dirname(d)) break
    }
  } catch {
    // reported by the open that follows
  }
}

/** Create `file` empty and 0600 unless it exists (an existing file keeps its mode; `rmq status` warns). */
export function ensurePrivateFile(file: string): void {
  try {
    const fd = fs.openSync(
      file,
      fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL,
      PRIVATE_FILE_MODE,
    )
    try {
      fs.fchmodSync(fd, PRIVATE_FILE_MODE)
    } finally {
      fs.closeSync(fd)
    }
  } catch {
    // EEXIST: keep it as it is; anything else: reported by the open that follows
  }
}

/** Write `data` to `file` atomically (temp file and rename), the result 0600. */
export function writePrivateFileAtomic(file: string, data: string | Buffer): void {
  const tmp = `${file}.${process.pid}.tmp`
  fs.writeFileSync(tmp, data, { mode: PRIVATE_FILE_MODE })
  try {
    fs.chmodSync(tmp, PRIVATE_FILE_MODE)
    fs.renameSync(tmp, file)
  } catch (err) {
    fs.rmSync(tmp, { force: true })
    throw err
  }
}

/** `-rw-r--r--` when group or others may read or write `file`; undefined when private or absent. */
export function looseMode(file: string): string | undefined {
  let st: fs.Stats
  try {
    st = fs.statSync(file)
  } catch {
    return undefined
  }
  if ((st.mode & 0o077) === 0) return undefined
  const bits = 'rwxrwxrwx'
  let s = st.isDirectory() ? 'd' : '-'
  for (let i = 0; i < 9; i++) s += st.mode & (0o400 >> i) ? bits[i] : '-'
  return s
}

export interface PrivateFileStream {
  stream: fs.WriteStream
  /** Finish writing and rename `FILE.partial` to `FILE`. */
  commit(): Promise<void>
  /** Stop and remove `FILE.partial` (what was there as FILE stays). */
  abort(): void
}

/**
 * A 0600 write stream that becomes `file` only when complete: it writes
 * `file.partial` and renames it on commit, so a reader never finds half an
 * export under the final name. Rejects with the open's error.
 */
export async function openPrivateFileStream(file: string): Promise<PrivateFileStream> {
  const partial = `${file}.partial`
  const stream = fs.createWriteStream(partial, { mode: PRIVATE_FILE_MODE })
  await once(stream, 'open')
  return {
    stream,
    async commit() {
      stream.end()
      await once(stream, 'finish')
      fs.renameSync(partial, file)
    },
    abort() {
      stream.destroy()
      fs.rmSync(partial, { force: true })
    },
  }
}

// Approximate indexes built once per host and mapped by every replica (issue 11). Over 1M rows a
// build takes minutes of both cores, and each API replica (`npm start` runs one per core) built
// its own, as did every restart. Now the first replica to need an index builds it and saves it;
// the others, and later restarts, wait for the file and map it (loadApproximateIndex), which takes
// no time and no memory of their own: the page cache holds one copy for all of them, and the
// builder swaps its own copy for the mapped file too.
//
// A file is named by what it indexes: the hash of the rows' bytes, their shape, the index options
// and the library's version. It can therefore never be the wrong index, needs no invalidation when
// a version is retrained or deleted, and two versions with the same rows share it. The name also
// carries the hash of the file's own bytes, checked before loading: the library does not check
// what it reads, and a damaged file crashed the process (a segmentation fault, not an error). Replicas
// coordinate through a lock file beside it (created exclusively, refreshed while its holder
// builds, taken over once it is stale), so a replica that dies mid-build holds the others up for
// at most INDEX_STORE_DEFAULTS.lockStaleMs.
import { createHash } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { ANN_DEFAULTS, approximateIndexInSlices, indexLibrary, loadApproximateIndex, type ApproximateIndexOptions, type ApproximateItemIndex, type ItemRows } from './item-index.ts'

export interface IndexStore {
  /** A folder the replicas of one host share. */
  dir: string
  /** Index files kept at most; the least recently used go first. */
  maxFiles?: number
}

export const INDEX_STORE_DEFAULTS = {
  /** two versions' pairs of indexes (recommendations and similar items) */
  maxFiles: 4,
  /** a lock untouched this long belongs to a replica that died: its holder refreshes it 4 times as often */
  lockStaleMs: 60_000,
  /** how often a replica waiting for another's build looks for the file */
  pollMs: 1_000,
}

/** The folder `npm start` uses unless ITEM_INDEX_DIR says otherwise. */
export function defaultIndexStoreDir(): string {
  return path.join(os.tmpdir(), 'iisan-item-index')
}

/** Rows hashed between turns of the event loop: 16 MB at D = 64, some milliseconds. */
const HASH_ROWS = 65_536

/** Where an index came from: built here (and saved for the others) or loaded from another's build. */
export type IndexSource = 'built' | 'loaded'

/**
 * The index over rows 1..N of `rows`: loaded from the store when a replica saved one over the same
 * rows and options, else built here in slices (approximateIndexInSlices) and saved. Waits while
 * another replica builds it. A file that cannot be read is deleted and the index built again; one
 * that cannot be written, or a folder that cannot be used, leaves the index built here and unsaved.
 */
export async function storedApproximateIndex(
  rows: ItemRows,
  D: number,
  options: ApproximateIndexOptions & { isCancelled?: () => boolean },
  store: IndexStore,
  timing: { lockStaleMs?: number; pollMs?: number } = {},
): Promise<{ index: ApproximateItemIndex; source: IndexSource }> {
  const lockStaleMs = timing.lockStaleMs ?? INDEX_STORE_DEFAULTS.lockStaleMs
  const pollMs = timing.pollMs ?? INDEX_STORE_DEFAULTS.pollMs
  // a folder that cannot be used costs the sharing, not the index
  const alone = async () => ({ index: await approximateIndexInSlices(rows, D, options), source: 'built' as const })
  if (!writable(store.dir)) return alone()
  const key = await fingerprint(rows, D, options)
  const lock = path.join(store.dir, `${key}.lock`)
  for (;;) {
    if (options.isCancelled?.()) throw new Error('index build cancelled')
    const loaded = await loadIfSaved(store, key, rows, D, options)
    if (loaded) return { index: loaded, source: 'loaded' }
    const locked = takeLock(lock)
    if (locked === undefined) return alone()
    if (locked) {
      try {
        // saved between the look above and the lock
        const late = await loadIfSaved(store, key, rows, D, options)
        if (late) return { index: late, source: 'loaded' }
        let refreshed = Date.now()
        const index = await approximateIndexInSlices(rows, D, {
          ...options,
          onSlice: () => {
            if (Date.now() - refreshed < lockStaleMs / 4) return
            refreshed = Date.now()
            touch(lock)
          },
        })
        const file = await save(index, store, key)
        return { index: (file && mappedInstead(index, file, rows, D, options)) || index, source: 'built' }
      } finally {
        fs.rmSync(lock, { force: true })
      }
    }
    if (isStale(lock, lockStaleMs)) {
      fs.rmSync(lock, { force: true })
      continue
    }
    await new Promise((resolve) => setTimeout(resolve, pollMs))
  }
}

/** sha256 of the library, the options that shape the graph, D, N and rows 1..N, hashed a slice at a time. */
async function fingerprint(rows: ItemRows, D: number, options: ApproximateIndexOptions): Promise<string> {
  const hash = createHash('sha256')
  const shape = {
    library: indexLibrary(),
    D,
    N: rows.count - 1,
    metric: options.metric ?? 'ip',
    quantization: options.quantization ?? ANN_DEFAULTS.quantization,
    connectivity: options.connectivity ?? ANN_DEFAULTS.connectivity,
    efConstruction: options.efConstruction ?? ANN_DEFAULTS.efConstruction,
  }
  hash.update(JSON.stringify(shape))
  for (let first = 1; first < rows.count; first += HASH_ROWS) {
    await new Promise((resolve) => setImmediate(resolve))
    // the view is fetched again each slice: the rows' owner may have moved them meanwhile (ItemRows)
    const values = rows.values()
    const last = Math.min(rows.count, first + HASH_ROWS)
    hash.update(new Uint8Array(values.buffer, values.byteOffset + first * D * 4, (last - first) * D * 4))
  }
  return hash.digest('hex').slice(0, 40)
}

/** `<key>.<sha256 of the file, 16 hex>.usearch` */
const FILE_NAME = /^([0-9a-f]{40})\.([0-9a-f]{16})\.usearch$/

/** The saved index for `key`, if one is there and its bytes are what its name says. */
async function loadIfSaved(store: IndexStore, key: string, rows: ItemRows, D: number, options: ApproximateIndexOptions): Promise<ApproximateItemIndex | undefined> {
  for (const name of fs.readdirSync(store.dir)) {
    const match = FILE_NAME.exec(name)
    if (match?.[1] !== key) continue
    const file = path.join(store.dir, name)
    try {
      if ((await fileHash(file)) !== match[2]) throw new Error(`${file} is damaged`)
      const index = loadApproximateIndex(file, rows, D, options)
      touch(file) // recently used: kept when the store is pruned
      return index
    } catch {
      // damaged, cut short, or deleted meanwhile: built again
      fs.rmSync(file, { force: true })
    }
  }
  return undefined
}

/**
 * Written under a temporary name and renamed once hashed: a reader sees the whole file or none.
 * Returns the file, or undefined when it could not be written.
 */
async function save(index: ApproximateItemIndex, store: IndexStore, key: string): Promise<string | undefined> {
  const partial = path.join(store.dir, `${key}.${process.pid}.partial`)
  let file: string
  try {
    index.save(partial)
    file = path.join(store.dir, `${key}.${await fileHash(partial)}.usearch`)
    fs.renameSync(partial, file)
  } catch {
    // a full disk costs the other replicas their own build, not this one its index
    fs.rmSync(partial, { force: true })
    return undefined
  }
  prune(store)
  return file
}

/**
 * The builder's index swapped for the file it just saved, mapped: its pages are then the ones the
 * other replicas map, and the host holds one copy instead of one per replica. Undefined (keep the
 * built one) when the file cannot be mapped.
 */
function mappedInstead(built: ApproximateItemIndex, file: string, rows: ItemRows, D: number, options: ApproximateIndexOptions): ApproximateItemIndex | undefined {
  try {
    const mapped = loadApproximateIndex(file, rows, D, options)
    built.dispose?.()
    return mapped
  } catch {
    return undefined
  }
}

/** sha256 of a file's bytes (16 hex), read as a stream beside serving. */
async function fileHash(file: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 4 << 20 })) hash.update(chunk as Buffer)
  return hash.digest('hex').slice(0, 16)
}

/** Deletes the least recently used index files beyond store.maxFiles. */
function prune(store: IndexStore): void {
  const keep = store.maxFiles ?? INDEX_STORE_DEFAULTS.maxFiles
  const files = fs
    .readdirSync(store.dir)
    .filter((name) => FILE_NAME.test(name))
    .map((name) => {
      const file = path.join(store.dir, name)
      return { file, used: fs.statSync(file, { throwIfNoEntry: false })?.mtimeMs ?? 0 }
    })
    .sort((a, b) => b.used - a.used)
  for (const { file } of files.slice(keep)) fs.rmSync(file, { force: true })
}

/** true: taken; false: another holds it; undefined: the folder refuses files (read-only, full, gone). */
function takeLock(lock: string): boolean | undefined {
  try {
    fs.writeFileSync(lock, `${process.pid}\n`, { flag: 'wx' })
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EEXIST' ? false : undefined
  }
}

function writable(dir: string): boolean {
  try {
    fs.mkdirSync(dir, { recursive: true })
    fs.accessSync(dir, fs.constants.W_OK)
    return true
  } catch {
    return false
  }
}

function isStale(lock: string, staleMs: number): boolean {
  const stat = fs.statSync(lock, { throwIfNoEntry: false })
  // gone since we looked: not stale, the next turn takes it or finds the file
  return stat !== undefined && Date.now() - stat.mtimeMs > staleMs
}

function touch(file: string): void {
  const now = new Date()
  try {
    fs.utimesSync(file, now, now)
  } catch {
    // deleted meanwhile (pruned, or a stale lock taken over): nothing to keep fresh
  }
}

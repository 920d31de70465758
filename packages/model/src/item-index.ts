// Approximate top-k by inner product over the item matrix (issue 11), for catalogues too large
// for the batched exact scan (item-scoring.ts). Backed by USearch (HNSW, a prebuilt N-API
// binary shipped inside the npm tarball: nothing is compiled or downloaded at install time, and
// its `node-gyp-build` install script is not needed — the binary is found at import time).
// See docs/ann-choice.md for why USearch and how the defaults below were measured.
//
// The graph is built and searched with USearch's inner-product metric directly ("ip-NSW").
// The textbook MIPS → nearest-neighbour reduction (append sqrt(M² − |x|²) to each row, 0 to
// the query) was measured and rejected: with the spread of norms trained embeddings have, most
// augmented rows crowd around the extra axis, the graph loses its contrast and recall@10 fell
// to ~0.2 at 20k items (docs/ann-choice.md).
//
// The library's candidates are re-ranked by the exact dot product u·e_j recomputed from the
// rows, so a returned score is exactly what the exact scan computes for that item. The rows are
// read through ItemRows, so that a caller holding its matrix elsewhere (ServingModel: a backend
// tensor) need not keep a JS copy beside it and the library's own.
import fs from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import type { Index } from 'usearch'

/**
 * The library, loaded on the first index built: a process that never builds one (small
 * catalogues) does not need the native binary at all. Through its CommonJS build: the ESM build
 * looks for its binary from the caller's stack trace, which under tsx (`npm start`, the benches)
 * points at our sources and fails with "Could not find native build for usearch".
 */
let library: typeof import('usearch') | undefined
function usearch(): typeof import('usearch') {
  library ??= createRequire(import.meta.url)('usearch') as typeof import('usearch')
  return library
}
import type { ScoredItem } from './serving.ts'

let libraryVersion: string | undefined
/** The library and its version ("usearch@2.25.3"): a saved index is read only by the build that wrote it. */
export function indexLibrary(): string {
  // the package exports no package.json: found beside its CommonJS entry (javascript/dist/cjs/usearch.js)
  libraryVersion ??= (() => {
    const root = path.resolve(path.dirname(createRequire(import.meta.url).resolve('usearch')), '..', '..', '..')
    return `usearch@${(JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string }).version}`
  })()
  return libraryVersion
}

/**
 * Graph and search parameters, measured on 64-dimensional synthetic catalogues of 20k–1M items
 * with clustered directions and log-normal norms (bench/ann.ts, docs/ann-choice.md):
 * - connectivity (HNSW M) 32 (chosen with efSearch 256, efConstruction 128; the beam at query time:
 *   the library is asked for max(efSearch, k + |excluded| + overfetch) candidates): at 1M items on the EPYC, both graphs
 *   built from the same rows and each query sent to both in turn (bench/ann.ts, December 7,
 *   third session), M = 32 answered at recall@10 0.9855 in 2.43 ms (median, shortlist scored in
 *   JS) where M = 16 needed efSearch 512 for 0.987 in 3.56 ms; at equal time (~2.1 ms) M = 32
 *   with efSearch 192 reached 0.9815 against 0.978. With the states of bench:serve's catalogue
 *   run (a random-weights user encoder), recall@10 is 0.992 (0.980 with M 16, ef 512). The graph
 *   costs 504 against 331 MB and the build 1.08× the time. Earlier, without the shortlist below:
 *   20k 0.994 (M 16, ef 256); 200k 0.984 (M 16, ef 512), 0.990 (M 32, ef 512). Latency grows
 *   about linearly with efSearch, so the property can be changed at run time.
 * - efConstruction 256 and efSearch 160 (December 8): a graph built with the wider beam needs a
 *   narrower one to search. At 1M items, both graphs built from the same rows and each query sent
 *   to both in turn (bench/results/ann-ef-construction.json), efConstruction 256 with efSearch 160
 *   answered at recall@10 0.9857 in 2.73 ms (median, shortlist scored in JS) where 128 needed
 *   efSearch 256 for 0.9850 in 3.28 ms; the build took 279 s against 114 s. Searches are paid on
 *   every request, the build once per version and host, so the build gives.
 * - similarEfConstruction 128, similarEfSearch 256: the similar-items (cosine, i8) index keeps
 *   the cheaper build, which already answers at recall@10 0.9945 (1M items), so the version's
 *   indexes are not both delayed.
 * - rerank 64: of the candidates the library returns in its (quantized) order, the first 64 not
 *   excluded are re-scored exactly; the rest of the beam could not make the top 10 (recall@10
 *   0.9835 at efSearch 256 re-ranking 32, 64 or all 256), and skipping them saved 10 % of a search.
 * - overfetch 16: candidates beyond k + |excluded| when that exceeds efSearch, so exact
 *   re-ranking and history exclusion still leave k items.
 * - exactTail 4096: appended (cold-start) rows go into the graph at once, and the most recent
 *   4096 of them are also scored exactly on every search (~0.1 ms at D = 64), so a new item
 *   the exact scan would return is never lost to a graph miss. Past that many appends,
 *   rebuild (re-activate) the index. A graph mapped from a file (loadApproximateIndex) takes no
 *   inserts: there every appended row is scored exactly, a cost that grows with the appends.
 * - normShortlist 4096: the longest base rows are also scored exactly on every search. An inner
 *   product favours long rows wherever they point, which a graph built on neighbourhoods misses
 *   most: on the synthetic catalogues (queries mixing 3 items, bench/ann.ts' kind) recall@10 rose
 *   from 0.977 to 0.992 at 200k items (efSearch 256) and from 0.972 to 0.986 at 1M (efSearch
 *   512) with 4,096 rows. Scored in JS that costs ~0.7 ms a search; ServingModel scores the
 *   shortlist against a whole batch's states in one ORT product and passes the scores in.
 * - quantization bf16: the library's copy of the vectors, which its graph is built and searched on
 *   (candidates are re-ranked from the f32 rows). At 1M items on the EPYC, each query sent to both
 *   indexes in turn: median search 3.4 ms against 4.1 ms for f32 at efSearch 512 (2.1 against 3.0
 *   at 256), recall@10 0.9865 against 0.9885, build 148 s against 242 s, 383 MB against 455 MB.
 * - similarQuantization i8: the similar-items (cosine) index's copy, a quarter of f32; at 1M items
 *   recall@10 0.9945 at efSearch 512 against the exact cosine scan.
 * - insertionOrder locality: the base rows go into the graph in localityOrder, not 1..N (see there).
 */
export const ANN_DEFAULTS = {
  quantization: 'bf16' as IndexQuantization,
  similarQuantization: 'i8' as IndexQuantization,
  connectivity: 32,
  efConstruction: 256,
  efSearch: 160,
  similarEfConstruction: 128,
  similarEfSearch: 256,
  rerank: 64,
  overfetch: 16,
  exactTail: 4096,
  normShortlist: 4096,
  insertionOrder: 'locality' as 'index' | 'locality',
} as const

/**
 * Suggested catalogue size from which serving should switch from the exact scan to the index.
 * With scoring on ONNX Runtime (the default wherever it loads), one core answered exactly 12,683
 * requests/s at 20k items, 2,095 at 200k and 218 at 1M; the index 1,356 at 200k (recall 0.992)
 * and 1,066 at 1M (bench:serve, December 7): exact wins below about 300k items, on rate and on
 * recall. (On tfjs the switch-over was ≈ 100k: 360 exact against 562 indexed at 200k.)
 */
export const ANN_MIN_ITEMS = 300_000

/**
 * Items to leave out of a search: a set of item indices (e.g. the user's history; its size
 * tells how many extra candidates to fetch) or a predicate. With a predicate the index fetches
 * max(efSearch, k + overfetch) candidates and doubles that until k survive or the catalogue is
 * exhausted.
 */
export type Exclusion = ReadonlySet<number> | ((index: number) => boolean)

export interface ItemIndex {
  /**
   * Top-k rows 1..N by u·e_j (best first; ties by lower index), skipping `exclude`. Scores are
   * the exact dot products recomputed from the rows. Fewer than k only when fewer than k items
   * are left after exclusion. `upTo` limits the answer to items 1..upTo: a model whose index was
   * handed to its reload still searches it, and must not return items it has no ids for.
   */
  search(query: Float32Array, k: number, exclude?: Exclusion, upTo?: number, shortlistScores?: Float32Array): ScoredItem[]
  /**
   * The rows every search also scores exactly besides the graph's candidates ([M, D] packed; see
   * ANN_DEFAULTS.normShortlist). A caller with many queries can score them all at once with a fast
   * product and pass each query's M scores to `search` as `shortlistScores`.
   */
  readonly shortlist: Float32Array
  /**
   * Adds rows [n, D] as items firstIndex, firstIndex + 1, …; firstIndex must be size + 1 (items
   * are appended in order, as ServingModel.appendItems numbers them). Findable at once.
   */
  append(rows: Float32Array, firstIndex: number): void
  /** Number of items indexed (N). */
  readonly size: number
  /** Drops the native index; the object must not be used afterwards. */
  dispose?(): void
}

export interface ApproximateItemIndex extends ItemIndex {
  /**
   * The search beam: each search asks the library for max(efSearch, k + |excluded| + overfetch)
   * candidates, which is also the beam HNSW explores. Can be changed between searches.
   */
  efSearch: number
  /**
   * Candidates re-scored exactly: the first `rerank` the library returns (in its own, quantized
   * order) that are not excluded. Can be changed between searches.
   */
  rerank: number
  /** Writes the graph and the library's vectors to `file` (loadApproximateIndex reads them back). */
  save(file: string): void
  /** The graph is mapped from a file (loadApproximateIndex): appended rows stay out of it. */
  readonly mapped: boolean
}

/**
 * An item matrix (row 0 padding) that the index reads where it lives instead of keeping a copy:
 * ServingModel's is a backend tensor, read through a view of the wasm heap. Rows 1..count−1 are
 * the ones indexed; they must not change (later rows may be added).
 */
export interface ItemRows {
  /** rows indexed, padding included (N + 1) */
  readonly count: number
  /**
   * The matrix's values, [≥ count, D] row-major, without a copy. Valid only until the caller next
   * lets the matrix's owner allocate (a wasm view dies when the heap grows): read it at once, never keep it.
   */
  values(): Float32Array
}

/** ItemRows over a matrix held in JS ([N+1, D] row-major), which the index then keeps. */
export function matrixRows(matrix: Float32Array, D: number): ItemRows {
  if (!Number.isInteger(D) || D <= 0) throw new Error(`D must be a positive integer, got ${D}`)
  if (matrix.length % D !== 0) throw new Error(`item matrix size ${matrix.length} is not a multiple of D = ${D}`)
  return { count: matrix.length / D, values: () => matrix }
}

/**
 * How the library stores the vectors its graph is built and searched on. Candidates are always
 * re-ranked by the exact f32 product from the rows, so a coarser copy only decides which
 * candidates are found, not their scores. 'i8' (values × 127, clamped to ±127) suits rows whose
 * components lie within ±1.
 */
export const INDEX_QUANTIZATIONS = ['f32', 'f16', 'bf16', 'i8'] as const
export type IndexQuantization = (typeof INDEX_QUANTIZATIONS)[number]

/**
 * What the index ranks by: 'ip', u·e_j (recommendations: a user state against the rows); 'cos',
 * u·e_j / (|u| |e_j|) (similar items: a row against the rows; a zero vector's norm counts as 1,
 * as in the exact scan).
 */
export type IndexMetric = 'ip' | 'cos'

export interface ApproximateIndexOptions {
  metric?: IndexMetric
  quantization?: IndexQuantization
  connectivity?: number
  efConstruction?: number
  efSearch?: number
  rerank?: number
  overfetch?: number
  /** The last this many appended rows are also scanned exactly on every search. */
  exactTail?: number
  /** The this many longest base rows are also scored exactly on every search (0: none). */
  normShortlist?: number
  /** Threads for building and appending (0 = all cores). Searches are single-threaded. */
  threads?: number
  /**
   * The order the base rows go into the graph, which is the order the library lays out their nodes
   * and vectors in memory: 'index' (1..N) or 'locality' (localityOrder: rows near in space near in memory).
   */
  insertionOrder?: 'index' | 'locality'
}

/**
 * The similar-items index beside a recommendations index built with `options`: the same graph
 * degree and insertion order over the same rows, ranked by cosine, its vectors stored as
 * `similarQuantization`, built and searched with its own beams (similarEfConstruction, similarEfSearch).
 * The library makes cosine vectors unit before it quantizes them, so 'i8' keeps their directions
 * whatever the rows' lengths (test/item-index.test.ts checks it on rows 40 times unit length).
 */
export function similarIndexOptions(options: ApproximateIndexOptions): ApproximateIndexOptions {
  return { ...options, metric: 'cos', quantization: ANN_DEFAULTS.similarQuantization, efConstruction: ANN_DEFAULTS.similarEfConstruction, efSearch: ANN_DEFAULTS.similarEfSearch }
}

/** Rows per native add while building. */
const BUILD_CHUNK = 65_536
/**
 * Time per native add when building beside other work: the event loop is given back this often,
 * so a replica keeps answering, and a transaction (a round trip a turn) finishes within its
 * timeout, while it builds. A fixed 2,048 rows took 350 ms a slice at 200k items on an EPYC, and a
 * transaction of three statements took 1.75 s (median) beside the build; now 15 ms and 82 ms.
 */
const SLICE_MS = 15

/** Rows for the next slice: as many as took SLICE_MS last time, within bounds. */
export function nextSliceRows(rows: number, elapsedMs: number): number {
  const scaled = elapsedMs > 0 ? Math.round((rows * SLICE_MS) / elapsedMs) : rows * 2
  // shrinks at once (a slow slice is what holds requests up), grows at most twofold a slice
  return Math.min(4_096, rows * 2, Math.max(8, scaled))
}

/**
 * Builds an approximate inner-product index over rows 1..N of `matrix` ([N+1, D] row-major, or
 * read through ItemRows; row 0 is padding and never returned). Synchronous and CPU-bound (all
 * cores unless options.threads says otherwise): see docs/ann-choice.md for build times.
 */
export function approximateIndex(matrix: Float32Array | ItemRows, D: number, options: ApproximateIndexOptions = {}): ApproximateItemIndex {
  const index = new UsearchItemIndex(matrix, D, options)
  if (insertionOrderOf(options) === 'locality') index.order = runToEnd(localityOrder(() => index.baseValues(), index.baseRows, D))
  for (let first = 1; first < index.baseRows; first += BUILD_CHUNK) index.addBase(first, Math.min(index.baseRows, first + BUILD_CHUNK))
  index.finishBase()
  return index
}

/**
 * The index `save` wrote to `file`, over the same rows 1..N (the caller vouches for that: see
 * item-index-store.ts, which names files by their rows' hash). Throws when the file does not hold
 * N vectors of D values.
 *
 * The file is mapped, not read: the index opens at once, whatever its size, and the processes that
 * map one file share its pages (the page cache holds one copy for all the replicas of a host). The
 * file must then never change (the index store's never do: they are written under another name and
 * renamed). A mapped graph cannot grow: appended rows are not inserted but all scored exactly on
 * every search (see ANN_DEFAULTS.exactTail).
 */
export function loadApproximateIndex(file: string, matrix: Float32Array | ItemRows, D: number, options: ApproximateIndexOptions = {}): ApproximateItemIndex {
  const index = new UsearchItemIndex(matrix, D, options)
  index.map(file)
  index.finishBase()
  return index
}

/**
 * The same index, built a slice of rows at a time with the event loop given back in between: for
 * a process that serves while it builds. Resolves when every row is in; `isCancelled` (checked
 * between slices) abandons the build, which then rejects.
 */
export async function approximateIndexInSlices(
  matrix: Float32Array | ItemRows,
  D: number,
  options: ApproximateIndexOptions & { isCancelled?: () => boolean; onSlice?: (rowsDone: number) => void } = {},
): Promise<ApproximateItemIndex> {
  const index = new UsearchItemIndex(matrix, D, options)
  const cancelled = () => {
    if (!options.isCancelled?.()) return false
    index.dispose()
    return true
  }
  if (insertionOrderOf(options) === 'locality') {
    // worked out in slices too: a few seconds at 1M items
    const steps = localityOrder(() => index.baseValues(), index.baseRows, D)
    let started = performance.now()
    for (;;) {
      const step = steps.next()
      if (step.done) {
        index.order = step.value
        break
      }
      if (performance.now() - started < SLICE_MS) continue
      await new Promise((resolve) => setImmediate(resolve))
      if (cancelled()) throw new Error('index build cancelled')
      started = performance.now()
    }
  }
  let rows = 64
  for (let first = 1; first < index.baseRows; ) {
    await new Promise((resolve) => setImmediate(resolve))
    if (cancelled()) throw new Error('index build cancelled')
    const started = performance.now()
    const last = Math.min(index.baseRows, first + rows)
    index.addBase(first, last)
    rows = nextSliceRows(last - first, performance.now() - started)
    first = last
    options.onSlice?.(last - 1)
  }
  index.finishBase()
  return index
}

class UsearchItemIndex implements ApproximateItemIndex {
  efSearch: number
  rerank: number
  private native: Index | undefined
  private readonly metric: IndexMetric
  private readonly D: number
  private readonly overfetch: number
  private readonly exactTail: number
  private readonly normShortlist: number
  /** the longest base rows (pickLongest): their indices and a packed copy of their values */
  private longest = new Int32Array(0)
  private longestRows = new Float32Array(0)
  private readonly threads: number
  /** the base rows in the order they go into the graph while it is built (position p holds row order[p − 1]); undefined: 1..N */
  order: Int32Array | undefined
  /** rows 0..baseRows−1 are read from `base`; appended ones from `extra`, the index's own copy */
  private readonly base: ItemRows
  readonly baseRows: number
  private extra = new Float32Array(0)
  private extraRows = 0
  private count = 0
  mapped = false

  constructor(matrix: Float32Array | ItemRows, D: number, options: ApproximateIndexOptions) {
    if (!Number.isInteger(D) || D <= 0) throw new Error(`D must be a positive integer, got ${D}`)
    this.base = matrix instanceof Float32Array ? matrixRows(matrix, D) : matrix
    this.D = D
    this.metric = options.metric ?? 'ip'
    this.efSearch = options.efSearch ?? ANN_DEFAULTS.efSearch
    this.rerank = options.rerank ?? ANN_DEFAULTS.rerank
    this.overfetch = options.overfetch ?? ANN_DEFAULTS.overfetch
    this.exactTail = options.exactTail ?? ANN_DEFAULTS.exactTail
    // the longest rows win an inner product wherever they point, never a cosine
    this.normShortlist = this.metric === 'cos' ? 0 : (options.normShortlist ?? ANN_DEFAULTS.normShortlist)
    this.threads = options.threads ?? 0
    this.baseRows = this.base.count

    const { Index, MetricKind, ScalarKind } = usearch()
    const scalarKind = { f32: ScalarKind.F32, f16: ScalarKind.F16, bf16: ScalarKind.BF16, i8: ScalarKind.I8 }
    this.native = new Index({
      dimensions: D,
      metric: this.metric === 'cos' ? MetricKind.Cos : MetricKind.IP,
      quantization: scalarKind[options.quantization ?? ANN_DEFAULTS.quantization],
      connectivity: options.connectivity ?? ANN_DEFAULTS.connectivity,
      expansion_add: options.efConstruction ?? ANN_DEFAULTS.efConstruction,
      // the search beam is max(expansion_search, candidates asked for): set per search
      expansion_search: 1,
      multi: false,
    })
  }

  /** Adds base rows first..last−1 (in order, from 1). */
  addBase(first: number, last: number): void {
    const { D, order } = this
    const values = this.base.values()
    if (!order) return this.addRows(values.subarray(first * D, last * D), keyRange(first, last - first))
    const rows = new Float32Array((last - first) * D)
    const keys = new BigUint64Array(last - first)
    for (let p = first; p < last; p++) {
      const r = order[p - 1]
      rows.set(values.subarray(r * D, (r + 1) * D), (p - first) * D)
      keys[p - first] = BigInt(r)
    }
    this.addRows(rows, keys)
  }

  get size(): number {
    return this.count
  }

  save(file: string): void {
    if (this.extraRows > 0) throw new Error('only an index of base rows is saved: save before appending')
    this.live().save(file)
  }

  /** Replaces the (empty) graph with the one saved in `file`, mapped; it must hold exactly the base rows. */
  map(file: string): void {
    const native = this.live()
    native.view(file)
    this.mapped = true
    const size = Number(native.size())
    if (native.dimensions() !== this.D || size !== this.baseRows - 1) {
      throw new Error(`${file} holds ${size} vectors of ${native.dimensions()} values, expected ${this.baseRows - 1} of ${this.D}`)
    }
    this.count = size
  }

  /** The base rows' values (read anew each time: see ItemRows.values). */
  baseValues(): Float32Array {
    return this.base.values()
  }

  /** Once the base rows are in: drops the build order, keeps the normShortlist longest rows for exact scoring. */
  finishBase(): void {
    this.order = undefined
    this.pickLongest()
  }

  private pickLongest(): void {
    const rows = this.baseRows - 1
    const M = Math.min(this.normShortlist, rows)
    if (M <= 0) return
    const D = this.D
    const base = this.base.values()
    const norms = new Float32Array(rows)
    for (let r = 1; r <= rows; r++) norms[r - 1] = dot(base, r * D, base.subarray(r * D, (r + 1) * D))
    const threshold = Float32Array.from(norms).sort()[rows - M]
    const longest: number[] = []
    for (let r = 1; r <= rows && longest.length < M; r++) if (norms[r - 1] >= threshold) longest.push(r)
    this.longest = Int32Array.from(longest)
    this.longestRows = new Float32Array(longest.length * D)
    longest.forEach((r, i) => this.longestRows.set(base.subarray(r * D, (r + 1) * D), i * D))
  }

  get shortlist(): Float32Array {
    return this.longestRows
  }

  search(given: Float32Array, k: number, exclude?: Exclusion, upTo = this.count, shortlistScores?: Float32Array): ScoredItem[] {
    const native = this.live()
    if (given.length !== this.D) throw new Error(`query has ${given.length} values, expected D = ${this.D}`)
    if (k <= 0 || this.count === 0) return []
    // cosine: the query made unit once (as the exact scan does), so a row's score is u·e_j / |e_j|
    const query = this.metric === 'cos' ? scaled(given, 1 / (Math.sqrt(dot(given, 0, given)) || 1)) : given
    const last = Math.min(upTo, this.count)
    const excludes = exclude === undefined ? undefined : typeof exclude === 'function' ? exclude : (i: number) => exclude.has(i)
    const isExcluded = last === this.count ? excludes : (i: number) => i > last || excludes?.(i) === true
    const excludedCount = exclude === undefined || typeof exclude === 'function' ? 0 : exclude.size

    let fetch = Math.min(this.count, Math.max(k + excludedCount + this.overfetch, this.efSearch, 1))
    for (;;) {
      const { keys } = native.search(query, fetch, 1)
      // the library's order (its quantized distance) is close to the exact one: only its head can
      // make the top k, so the rest of the beam is neither converted nor read from the rows
      const depth = Math.max(k, this.rerank)
      const seen = new Set<number>()
      const candidates: number[] = []
      for (let i = 0; i < keys.length && candidates.length < depth; i++) {
        const index = Number(keys[i])
        seen.add(index)
        if (!isExcluded?.(index)) candidates.push(index)
      }
      const found = this.rescore(candidates, query)
      this.scanTail(query, k, last, found, seen, isExcluded)
      this.scanLongest(query, k, last, found, seen, isExcluded, shortlistScores)
      if (found.length >= k || fetch >= this.count) {
        found.sort((a, b) => b.score - a.score || a.index - b.index)
        return found.length > k ? found.slice(0, k) : found
      }
      fetch = Math.min(this.count, fetch * 2)
    }
  }

  append(rows: Float32Array, firstIndex: number): void {
    this.live()
    const D = this.D
    if (rows.length % D !== 0) throw new Error(`rows of ${rows.length} values are not a multiple of D = ${D}`)
    if (firstIndex !== this.count + 1) throw new Error(`append at ${firstIndex}, but the next item index is ${this.count + 1}`)
    const n = rows.length / D
    if (n === 0) return
    // the base rows' reader covers the rows built from; appended ones are few (a rebuild is due
    // past a few thousand), so the index keeps them, and its exact tail scans them on every search
    const needed = (this.extraRows + n) * D
    if (needed > this.extra.length) {
      const grown = new Float32Array(Math.max(needed, this.extra.length * 2))
      grown.set(this.extra.subarray(0, this.extraRows * D))
      this.extra = grown
    }
    this.extra.set(rows, this.extraRows * D)
    this.extraRows += n
    if (this.mapped) this.count += n // scored exactly by scanTail, every one of them
    else this.addRows(rows, keyRange(firstIndex, n))
  }

  dispose(): void {
    // The binding frees the native index when its wrapper is garbage-collected; dropping the
    // reference is all there is to do (and later calls fail loudly instead of using it).
    this.native = undefined
  }

  private live(): Index {
    if (!this.native) throw new Error('item index used after dispose()')
    return this.native
  }

  /** Adds rows [n, D] under `keys` (the library copies them). */
  private addRows(rows: Float32Array, keys: BigUint64Array): void {
    this.live().add(keys, rows, this.threads)
    this.count += keys.length
  }

  /**
   * Exact scores of the last `exactTail` appended rows (of all of them when the graph is mapped),
   * added to `found` where they can make the top k: a cold-start item is returned whenever the
   * exact scan would return it, even when the graph search misses a freshly inserted node.
   */
  private scanTail(query: Float32Array, k: number, last: number, found: ScoredItem[], seen: Set<number>, isExcluded: ((index: number) => boolean) | undefined): void {
    const first = this.mapped ? this.baseRows : Math.max(this.baseRows, last + 1 - this.exactTail)
    if (first > last) return
    const threshold = kthBestScore(found, k)
    for (let index = first; index <= last; index++) {
      if (seen.has(index) || isExcluded?.(index)) continue
      const score = this.score(this.extra, (index - this.baseRows) * this.D, query)
      if (score >= threshold) found.push({ index, score })
    }
  }

  /** Exact scores of the longest base rows (pickLongest) the graph search did not return, added to `found` where they can make the top k. */
  private scanLongest(query: Float32Array, k: number, last: number, found: ScoredItem[], seen: Set<number>, isExcluded: ((index: number) => boolean) | undefined, given?: Float32Array): void {
    const { longest, longestRows, D } = this
    if (longest.length === 0) return
    if (given && given.length !== longest.length) throw new Error(`${given.length} shortlist scores given for ${longest.length} shortlisted rows`)
    const threshold = kthBestScore(found, k)
    // the score first (one pass over a packed 1 MB, or the caller's), the look-ups only for the few that can enter
    for (let i = 0; i < longest.length; i++) {
      const score = given ? given[i] : dot(longestRows, i * D, query)
      if (score < threshold) continue
      const index = longest[i]
      if (index > last || seen.has(index) || isExcluded?.(index)) continue
      found.push({ index, score })
    }
  }

  /** Exact scores of these items: base rows read where they live, appended ones from the index's copy. */
  private rescore(indices: number[], query: Float32Array): ScoredItem[] {
    // fetched once per search and used before anything else runs (see ItemRows.values)
    const base = this.base.values()
    return indices.map((index) => ({
      index,
      score: index < this.baseRows ? this.score(base, index * this.D, query) : this.score(this.extra, (index - this.baseRows) * this.D, query),
    }))
  }

  /** The exact score by the index's metric of the row at `offset` of `rows` against `query` (unit for cosine: see search). */
  private score(rows: Float32Array, offset: number, query: Float32Array): number {
    const product = dot(rows, offset, query)
    return this.metric === 'ip' ? product : product / (Math.sqrt(dot(rows, offset, rows.subarray(offset, offset + this.D))) || 1)
  }
}

/** Keys first, first + 1, …, first + n − 1. */
function keyRange(first: number, n: number): BigUint64Array {
  const keys = new BigUint64Array(n)
  for (let i = 0; i < n; i++) keys[i] = BigInt(first + i)
  return keys
}

/**
 * Rows 1..count−1 in an order where rows near in space are near in the order: the leaves of a
 * random-projection tree, left to right. Each node splits its rows by their projection on the
 * difference of two of them, at the mean projection, down to LEAF_ROWS rows. Deterministic (a
 * fixed seed). A generator that yields every YIELD_ROWS rows of work, so that a serving process
 * can give the event loop back in between (`values` is read again after each yield: a wasm view
 * dies when the heap grows); runToEnd runs it at once.
 *
 * Why: USearch lays out nodes and vectors in the order they are added, and building and searching
 * are chains of dependent reads over the whole graph; added in this order, neighbours tend to share
 * pages. At 1M items the build took 0.71–0.73× the time (154 s against 211–215 s in two runs), an
 * append of 1k rows 0.76×, and search time and recall@10 did not change beyond the noise
 * (bench/ann.ts --order index,locality; docs/ann-choice.md).
 */
export function* localityOrder(values: () => Float32Array, count: number, D: number): Generator<void, Int32Array> {
  const LEAF_ROWS = 32
  const YIELD_ROWS = 16_384
  const order = Int32Array.from({ length: Math.max(0, count - 1) }, (_, i) => i + 1)
  const projections = new Float64Array(count)
  let seed = 0x9e3779b9
  const random = () => {
    seed = (Math.imul(seed ^ (seed >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0
    return seed / 4294967296
  }
  const direction = new Float32Array(D)
  const stack: [number, number][] = [[0, order.length]]
  let work = 0
  while (stack.length) {
    const [begin, end] = stack.pop()!
    if (end - begin <= LEAF_ROWS) continue
    let m = values()
    const a = order[begin + Math.floor(random() * (end - begin))]
    const b = order[begin + Math.floor(random() * (end - begin))]
    for (let d = 0; d < D; d++) direction[d] = m[a * D + d] - m[b * D + d]
    let mean = 0
    for (let i = begin; i < end; i++) {
      const r = order[i]
      let p = 0
      for (let d = 0; d < D; d++) p += m[r * D + d] * direction[d]
      projections[r] = p
      mean += p
      if (++work % YIELD_ROWS === 0) {
        yield
        m = values()
      }
    }
    mean /= end - begin
    let left = begin
    for (let i = begin; i < end; i++) {
      const r = order[i]
      if (projections[r] < mean) {
        order[i] = order[left]
        order[left++] = r
      }
    }
    // a split that leaves one side empty (equal rows) ends the node
    if (left === begin || left === end) continue
    stack.push([left, end], [begin, left])
  }
  return order
}

/** Runs a generator to its end and returns what it returns. */
function runToEnd<R>(steps: Generator<void, R>): R {
  for (;;) {
    const step = steps.next()
    if (step.done) return step.value
  }
}

/** The insertion order options ask for (ANN_DEFAULTS' by default). */
function insertionOrderOf(options: ApproximateIndexOptions): 'index' | 'locality' {
  return options.insertionOrder ?? ANN_DEFAULTS.insertionOrder
}

/** The k-th best score found so far (−∞ while fewer than k): what an exactly scored extra must reach. */
function kthBestScore(found: ScoredItem[], k: number): number {
  return found.length >= k ? found.map((f) => f.score).sort((a, b) => b - a)[k - 1] : -Infinity
}

function scaled(values: Float32Array, factor: number): Float32Array {
  return values.map((x) => x * factor)
}

/** u·e of the row at `offset` of `rows`, accumulated in the same order as topKByDot. */
function dot(rows: Float32Array, offset: number, query: Float32Array): number {
  let score = 0
  for (let d = 0; d < query.length; d++) score += rows[offset + d] * query[d]
  return score
}

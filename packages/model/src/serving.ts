// The serving path (docs/GOALS.md): no item-encoder or backbone work per request. A batch of
// requests is one user-encoder forward over their windows, one matrix product of the item
// matrix with their states, and a top-k per request with its history excluded: one ONNX Runtime
// run where it loads (useRuntime, serving-onnx.ts), else tfjs kernels and a JS partial selection.
// The item matrix is held once, as a tensor on the backend: the ORT graphs (fed a view of its
// buffer), the scoring kernel, the user encoder's embedding lookup, the similar-items queries and
// the approximate index's re-ranking all read that one copy (the index keeps only the library's
// own copy beside it).
import * as tf from '@tensorflow/tfjs-core'
import { readBack } from '@iisan/tensor-ops'
import { valuesInPlace } from './backend.ts'
import { readCheckpoint } from './checkpoint.ts'
import { leftPad } from './data.ts'
import { SequentialRecommender, type RecommenderConfig } from './recommender.ts'
import type { NewItemStates } from './cached-states.ts'
import { getMethod } from './methods/registry.ts'
import { maxBatchFor, topKOfQueries, type ScoredItem } from './item-scoring.ts'
import { ANN_MIN_ITEMS, approximateIndex, approximateIndexInSlices, similarIndexOptions, type ApproximateIndexOptions, type ApproximateItemIndex, type ItemIndex, type ItemRows } from './item-index.ts'
import { storedApproximateIndex, type IndexSource, type IndexStore } from './item-index-store.ts'
import { ServingRuntime, type TopRows } from './serving-onnx.ts'
import { resolveRuntime } from '@iisan/backbones/onnx/onnx-runtime'

export type { ScoredItem } from './item-scoring.ts'

export interface RecommendRequest {
  /** item indices, oldest first; only the last T are used, all are excluded from the answer */
  history: ArrayLike<number>
  k: number
}

export interface ServingOptions {
  /**
   * Catalogue size (N) from which recommendations come from an approximate index built at load
   * instead of the exact scan (Infinity: never). Default ANN_MIN_ITEMS.
   */
  approximateFrom?: number
  /** How that index is built, at load or by buildIndex (the library defaults otherwise; tests pin `threads: 1` for a repeatable graph). */
  index?: ApproximateIndexOptions
  /** Where buildIndex saves the indexes it builds and finds those other replicas built (item-index-store.ts); none: each builds its own. */
  indexStore?: IndexStore
}

/**
 * An approximate index and the model that owns it. The owner extends it with its appended rows and
 * disposes it, and a build in progress is abandoned only when the owner is disposed. A reload whose
 * first rows are the owner's takes ownership (ServingModel.takeIndexFrom); the models it passed
 * through keep searching it within their own rows until the owner disposes it.
 */
interface SharedIndex {
  owner: ServingModel
  /** recommendations (inner product); undefined while building, and after the owner disposed it */
  index: ApproximateItemIndex | undefined
  /** similar items (cosine), built after `index`; undefined until then, and after disposal */
  similar: ApproximateItemIndex | undefined
  /** both built */
  ready: Promise<void>
  /** how each was provided, in order (recommendations, similar items), once ready */
  sources: IndexSource[]
}

/** Rows per slice when comparing two models' matrices (4 MB a side at D = 64), the event loop given back in between. */
const COMPARE_ROWS = 16_384

export interface SimilarRequest {
  /** item index 1..N */
  index: number
  k: number
}

export class ServingModel {
  private readonly model: SequentialRecommender
  /** [N+1, D]; row 0 = padding. Replaced (not copied beside) when cold-start items are appended. */
  private items: tf.Tensor2D
  /** |e_r| of every row, for cosine similarity; built on first use */
  private norms: Float32Array | undefined
  /** the norms with 0 replaced by 1, as ORT's cosine graph divides by them */
  private safeNorms: Float32Array | undefined
  /** inner-product index over rows 1..N, for catalogues of approximateFrom items or more */
  private shared: SharedIndex | undefined
  /** the serving graphs on ONNX Runtime (useRuntime); null: tfjs */
  private runtime: ServingRuntime | null = null
  /** a copy of the matrix for ORT where the backend cannot lend its own (cpu); dropped on append */
  private rowsForRuntime: Float32Array | undefined
  private disposed = false

  private constructor(
    readonly config: RecommenderConfig,
    model: SequentialRecommender,
    items: tf.Tensor2D,
    approximate: boolean,
    private readonly indexOptions: ApproximateIndexOptions,
    private readonly indexStore: IndexStore | undefined,
  ) {
    this.model = model
    this.items = items
    if (approximate) {
      const shared: SharedIndex = { owner: this, index: undefined, similar: undefined, ready: Promise.resolve(), sources: ['built', 'built'] }
      shared.index = approximateIndex(this.rowsOf(shared), config.embeddingDim, indexOptions)
      shared.similar = approximateIndex(this.rowsOf(shared), config.embeddingDim, similarIndexOptions(indexOptions))
      this.shared = shared
    }
  }

  /**
   * weights: a platform checkpoint; itemMatrix: [N+1, D] float32 (copied to the backend; the
   * caller may drop it). Builds the approximate index when the catalogue is large enough.
   */
  static load(weights: Uint8Array, itemMatrix: Float32Array, options: ServingOptions = {}): ServingModel {
    const { config, values } = readCheckpoint<RecommenderConfig>(weights)
    const D = config.embeddingDim
    if (itemMatrix.length % D !== 0) throw new Error(`item matrix size ${itemMatrix.length} is not a multiple of D = ${D}`)
    const rows = itemMatrix.length / D
    const model = new SequentialRecommender(config)
    model.params.restore(values)
    const approximate = rows - 1 >= (options.approximateFrom ?? ANN_MIN_ITEMS)
    return new ServingModel(config, model, tf.tensor2d(itemMatrix, [rows, D]), approximate, options.index ?? {}, options.indexStore)
  }

  /**
   * Moves this version's scoring to ONNX Runtime (serving-onnx.ts) where it loads and
   * BACKBONE_RUNTIME allows it: a batch of requests is then one ORT run (user encoder, product,
   * exclusions, top k). tfjs answers until it is ready, and everywhere it is not. Returns whether
   * ORT now serves.
   *
   * `packed` (default: unless the model answers from an approximate index): the graph holds the
   * rows known now as a constant that ORT lays out once for its product, at the cost of a second
   * copy of them (serving-onnx.ts). Worth it only where the exact product serves.
   */
  async useRuntime({ packed = !this.shared }: { packed?: boolean } = {}): Promise<boolean> {
    if (this.runtime) return true
    const rt = await resolveRuntime(undefined, () => undefined)
    if (rt.name !== 'onnx' || this.disposed) return false
    const { embeddingDim, maxSeqLen, numHeads } = this.config
    const rows = packed ? this.itemRows() : undefined
    const runtime = await ServingRuntime.create(rt.ort, this.model.userEncoder, embeddingDim, maxSeqLen, numHeads, rows)
    if (this.disposed) {
      runtime.release()
      return false
    }
    this.runtime = runtime
    return true
  }

  /** Where a batch is scored: 'onnx' once useRuntime succeeded, else 'tfjs'. */
  get scoringRuntime(): 'onnx' | 'tfjs' {
    return this.runtime ? 'onnx' : 'tfjs'
  }

  /** Whether recommendations come from the approximate index rather than the exact scan. */
  get approximate(): boolean {
    return this.shared?.index !== undefined
  }

  /** How this model's indexes were provided (recommendations', then similar items'): built here, or loaded from another replica's build. Empty until ready. */
  get indexSources(): readonly IndexSource[] {
    return this.shared?.similar ? this.shared.sources : []
  }

  /** The search beams the indexes answer with once both are ready (ITEM_INDEX_EF_SEARCH sets the first). */
  get indexSearchBeams(): { recommendations: number; similar: number } | undefined {
    const { index, similar } = this.shared ?? {}
    return index && similar ? { recommendations: index.efSearch, similar: similar.efSearch } : undefined
  }

  /** Whether similar items come from the cosine index rather than the exact scan (built after the recommendations' index). */
  get approximateSimilar(): boolean {
    return this.shared?.similar !== undefined
  }

  /**
   * Builds the approximate indexes beside serving, a slice of rows at a time: recommendations' (inner
   * product), then similar items' (cosine). The exact scan answers each until its index is ready.
   * Rows appended meanwhile are added first. With an index store, an index another replica saved
   * over the same rows is loaded instead, and one built here is saved for the others. With indexes
   * already (built, building, or taken over from the previous load) it waits for those.
   */
  buildIndex(): Promise<void> {
    if (this.shared) return this.shared.ready
    const shared: SharedIndex = { owner: this, index: undefined, similar: undefined, ready: Promise.resolve(), sources: [] }
    const build = async (options: ApproximateIndexOptions): Promise<ApproximateItemIndex> => {
      const rows = this.rowsOf(shared)
      const building = { ...options, isCancelled: () => shared.owner.disposed }
      const { index, source } = this.indexStore
        ? await storedApproximateIndex(rows, this.config.embeddingDim, building, this.indexStore)
        : { index: await approximateIndexInSlices(rows, this.config.embeddingDim, building), source: 'built' as const }
      shared.sources.push(source)
      if (shared.owner.disposed) {
        index.dispose?.()
        throw new Error('index build cancelled')
      }
      shared.owner.catchUp(index)
      return index
    }
    // recommendations switch over as soon as theirs is built; similar items when theirs is
    shared.ready = (async () => {
      shared.index = await build(this.indexOptions)
      shared.similar = await build(similarIndexOptions(this.indexOptions))
    })()
    // a failed build leaves the models sharing it on the exact scan, and its owner free to build again
    shared.ready.catch(() => {
      if (shared.owner.shared === shared) shared.owner.shared = undefined
    })
    this.shared = shared
    return shared.ready
  }

  /**
   * Takes over `previous`'s index, built or still building, when this model's rows 1..N' are
   * bitwise `previous`'s rows 1..N' (a reload after cold-start appends): only the rows after N' are
   * added, where a build would index all N again. Returns N' (0: nothing taken, e.g. the rows
   * differ, or `previous` has no index of its own; build one then).
   *
   * The rows are compared, not checksummed: a comparison is exact with no state to keep, costs one
   * read of both matrices in place, a slice at a time (the event loop is given back in between;
   * 0.17 s for 1M rows here against minutes for a build), and a checksum would have to cover
   * exactly the first N' rows, which change from one reload to the next. `previous` keeps
   * searching the index within its own rows (its in-flight requests); this model extends and
   * disposes it.
   */
  async takeIndexFrom(previous: ServingModel): Promise<number> {
    const shared = previous.shared
    const rows = previous.items.shape[0]
    if (!shared || shared.owner !== previous || this.shared || previous === this || rows > this.items.shape[0] || previous.config.embeddingDim !== this.config.embeddingDim) return 0
    if (!(await this.startsWith(previous, rows))) return 0
    // the awaits gave others a turn: take it only if nothing moved meanwhile
    if (shared.owner !== previous || previous.shared !== shared || this.shared || this.disposed || previous.items.shape[0] !== rows) return 0
    shared.owner = this
    this.shared = shared
    if (shared.index) this.catchUp(shared.index)
    if (shared.similar) this.catchUp(shared.similar)
    return rows - 1
  }

  /**
   * The index's rows: the matrix tensor of whichever model owns the index, read in place (an owner's
   * first rows are those of every model it was taken from), so no JS copy of the matrix is kept for
   * re-ranking. A tfjs gather per search would cost more than the search (~1–4 ms for 540 rows on
   * wasm here). On a backend that cannot be read in place, a copy taken now.
   */
  private rowsOf(shared: SharedIndex): ItemRows {
    const count = this.items.shape[0]
    if (valuesInPlace(this.items)) return { count, values: () => valuesInPlace(shared.owner.items) ?? shared.owner.itemRows() }
    const copy = this.itemRows()
    return { count, values: () => copy }
  }

  /** Whether rows 1..rows−1 of this model and of `other` are the same bits. */
  private async startsWith(other: ServingModel, rows: number): Promise<boolean> {
    for (let first = 1; first < rows; first += COMPARE_ROWS) {
      await new Promise((resolve) => setImmediate(resolve))
      if (this.disposed || other.disposed || other.items.shape[0] !== rows) return false
      const last = Math.min(first + COMPARE_ROWS, rows)
      if (!sameBits(this.rowRange(first, last), other.rowRange(first, last))) return false
    }
    return true
  }

  /** Adds the rows of this model that `index` lacks: appended while it was built, or since the model it was taken from. */
  private catchUp(index: ItemIndex): void {
    const have = index.size + 1
    const rows = this.items.shape[0]
    if (rows > have) index.append(this.rowRange(have, rows), have)
  }

  /**
   * Rows first..last−1 of the matrix: in place where the backend allows (valid until the next tfjs
   * call: use at once), else copied out. tf.slice costs the whole matrix on wasm here (22 s to
   * compare two 1M-row matrices in 16k-row slices), a view nothing.
   */
  private rowRange(first: number, last: number): Float32Array {
    const D = this.config.embeddingDim
    return valuesInPlace(this.items)?.subarray(first * D, last * D) ?? readBack(() => tf.slice(this.items, [first, 0], [last - first, D]))
  }

  /** Number of recommendable items (N). */
  get numItems(): number {
    return this.items.shape[0] - 1
  }

  /** Requests one scoring pass takes at most (fewer for larger catalogues). */
  get maxBatch(): number {
    return maxBatchFor(this.items.shape[0])
  }

  /** A copy of the item matrix [N+1, D] (for exact reference scans and index builds). */
  itemRows(): Float32Array {
    return this.items.dataSync() as Float32Array
  }

  /** User states [B, D] after each history (item indices, oldest first; the last T are used). */
  userStates(histories: readonly ArrayLike<number>[]): Float32Array {
    if (this.runtime) return this.runtime.states(this.runtimeRows(), this.windowsOf(histories))
    const windows = histories.map((h) => leftPad(h, this.config.maxSeqLen))
    return readBack(() => this.model.userStates(windows, this.items))
  }

  /** The last T items of each history, left-padded, row-major [B·T]; ids must be rows of the matrix. */
  private windowsOf(histories: readonly ArrayLike<number>[]): Int32Array {
    const T = this.config.maxSeqLen
    const rows = this.items.shape[0]
    const windows = new Int32Array(histories.length * T)
    histories.forEach((h, b) => {
      const window = leftPad(h, T)
      for (const id of window) if (!(id >= 0 && id < rows)) throw new RangeError(`item index ${id} is outside the model's 0..${rows - 1}`)
      windows.set(window, b * T)
    })
    return windows
  }

  /** Each request's excluded rows, [B·X] with X = 1 + the longest list: every row holds a 0 (padding). */
  private exclusionsOf(lists: readonly ArrayLike<number>[]): Int32Array {
    const rows = this.items.shape[0]
    const X = 1 + Math.max(...lists.map((l) => l.length))
    const exclude = new Int32Array(lists.length * X)
    lists.forEach((list, b) => {
      for (let i = 0; i < list.length; i++) if (list[i] > 0 && list[i] < rows) exclude[b * X + i] = list[i]
    })
    return exclude
  }

  /** The matrix as ORT reads it: the backend's own buffer where it lends it (wasm), else one copy. */
  private runtimeRows(): Float32Array {
    return valuesInPlace(this.items) ?? (this.rowsForRuntime ??= this.itemRows())
  }

  /** Requests in batches of at most maxBatch, each batch answered by `score`. */
  private inBatches<R>(requests: readonly R[], score: (batch: readonly R[]) => ScoredItem[][]): ScoredItem[][] {
    const step = this.maxBatch
    const out: ScoredItem[][] = []
    for (let start = 0; start < requests.length; start += step) out.push(...score(requests.slice(start, start + step)))
    return out
  }

  userState(history: ArrayLike<number>): Float32Array {
    return this.userStates([history])
  }

  /** Top-k items by u·e_j over 1..N for each request, its history excluded: one forward, one product. */
  recommendMany(requests: readonly RecommendRequest[]): ScoredItem[][] {
    if (requests.length === 0) return []
    const index = this.shared?.index
    const runtime = this.runtime
    if (runtime && !index) {
      return this.inBatches(requests, (batch) => {
        const k = Math.max(...batch.map((r) => r.k))
        const top = runtime.recommend(this.runtimeRows(), this.windowsOf(batch.map((r) => r.history)), this.exclusionsOf(batch.map((r) => r.history)), k)
        return batch.map((r, b) => scoredRows(top, b, r.k))
      })
    }
    const states = this.userStates(requests.map((r) => r.history))
    if (index) {
      const D = this.config.embeddingDim
      // the index's shortlist against every state of the batch in one product, where ORT serves
      const shortlist = index.shortlist
      const M = shortlist.length / D
      const shortlistScores = this.runtime && M > 0 ? this.runtime.product(states, shortlist) : undefined
      // a shared index may hold a later reload's rows too: this model's answers stop at its own
      return requests.map((r, b) =>
        index.search(states.subarray(b * D, (b + 1) * D), r.k, new Set(Array.from(r.history)), this.numItems, shortlistScores?.subarray(b * M, (b + 1) * M)),
      )
    }
    return topKOfQueries(
      this.items,
      states,
      requests.map((r) => ({ k: r.k, exclude: r.history })),
    )
  }

  recommend(history: ArrayLike<number>, k: number): ScoredItem[] {
    return this.recommendMany([{ history, k }])[0]
  }

  /** Item-to-item: nearest items by cosine similarity of their embeddings, the item itself excluded. */
  similarMany(requests: readonly SimilarRequest[]): ScoredItem[][] {
    if (requests.length === 0) return []
    const similar = this.shared?.similar
    if (similar) {
      // each item's own row is the query (copied: a view of the backend's memory lives until its next call)
      return requests.map((r) => similar.search(this.rowRange(r.index, r.index + 1).slice(), r.k, new Set([r.index]), this.numItems))
    }
    this.norms ??= readBack(() => tf.norm(this.items, 'euclidean', 1))
    const norms = this.norms
    const runtime = this.runtime
    if (runtime) {
      // a zero row scores 0 against everything: divided by 1, as below
      const safeNorms = (this.safeNorms ??= norms.map((n) => n || 1))
      return this.inBatches(requests, (batch) => {
        const k = Math.max(...batch.map((r) => r.k))
        const top = runtime.similar(this.runtimeRows(), safeNorms, Int32Array.from(batch, (r) => r.index), this.exclusionsOf(batch.map((r) => [r.index])), k)
        return batch.map((r, b) => scoredRows(top, b, r.k))
      })
    }
    const D = this.config.embeddingDim
    const queries = readBack(() => tf.gather(this.items, tf.tensor1d(requests.map((r) => r.index), 'int32')))
    requests.forEach((r, b) => {
      const scale = 1 / (norms[r.index] || 1)
      for (let d = 0; d < D; d++) queries[b * D + d] *= scale
    })
    return topKOfQueries(
      this.items,
      queries,
      requests.map((r) => ({ k: r.k, exclude: [r.index] })),
      norms,
    )
  }

  similar(index: number, k: number): ScoredItem[] {
    return this.similarMany([{ index, k }])[0]
  }

  /** True when items can be embedded without retraining: the method says it can, and its encoder does it. */
  get supportsColdStart(): boolean {
    return getMethod(this.config.method).capabilities.coldStart && this.model.itemEncoder.embedFromStates !== undefined
  }

  /**
   * Runs only the SAN + fusion for new items (no backbone, no training) → [n, D] rows, in the
   * order given. Throws for ID-based models, which have no way to embed an unseen item.
   */
  embedNewItems(items: NewItemStates[]): Float32Array {
    const encoder = this.model.itemEncoder
    if (!this.supportsColdStart || !encoder.embedFromStates) throw new Error(`${this.config.method} models cannot embed new items`)
    return encoder.embedFromStates(items)
  }

  /** Appends rows [n, D] as items N+1, …; returns their indices. */
  appendItems(rows: Float32Array): number[] {
    const D = this.config.embeddingDim
    if (rows.length % D !== 0) throw new Error(`rows of ${rows.length} values are not a multiple of D = ${D}`)
    const first = this.items.shape[0]
    const grown = tf.tidy(() => tf.concat([this.items, tf.tensor2d(rows, [rows.length / D, D])]))
    this.items.dispose()
    this.items = grown
    this.norms = undefined
    this.safeNorms = undefined
    this.rowsForRuntime = undefined
    // an index handed on belongs to the reload now, which has rows of its own after ours
    if (this.shared && this.shared.owner !== this) this.shared = undefined
    this.shared?.index?.append(rows, first)
    this.shared?.similar?.append(rows, first)
    return Array.from({ length: rows.length / D }, (_, i) => first + i)
  }

  dispose(): void {
    this.disposed = true
    if (this.shared?.owner === this) {
      this.shared.index?.dispose?.()
      this.shared.index = undefined
      this.shared.similar?.dispose?.()
      this.shared.similar = undefined
    }
    this.shared = undefined
    this.runtime?.release()
    this.runtime = null
    this.items.dispose()
    this.model.dispose()
  }
}

/** Request b's first k rows of ORT's top rows, stopping at the excluded (−∞) ones. */
function scoredRows(top: TopRows, b: number, k: number): ScoredItem[] {
  const out: ScoredItem[] = []
  for (let i = b * top.width; i < b * top.width + Math.min(k, top.width); i++) {
    if (top.scores[i] === -Infinity) break
    out.push({ index: top.rows[i], score: top.scores[i] })
  }
  return out
}

function sameBits(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length)
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length)
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false
  return true
}

/**
 * The reference scan: dot products of every row 1..N with `query` in a scalar loop, then an
 * ordered top-k. Kept as the exact answer the batched path is tested and benchmarked against.
 */
export function topKByDot(matrix: Float32Array, D: number, query: Float32Array, k: number, exclude: ReadonlySet<number>): ScoredItem[] {
  const rows = matrix.length / D
  const best: ScoredItem[] = []
  let threshold = -Infinity
  for (let r = 1; r < rows; r++) {
    if (exclude.has(r)) continue
    let score = 0
    const base = r * D
    for (let d = 0; d < D; d++) score += matrix[base + d] * query[d]
    if (best.length < k) {
      best.push({ index: r, score })
      if (best.length === k) {
        best.sort((a, b) => b.score - a.score)
        threshold = best[k - 1].score
      }
    } else if (score > threshold) {
      // insert in order, drop the last
      let i = k - 1
      while (i > 0 && best[i - 1].score < score) i--
      best.splice(i, 0, { index: r, score })
      best.pop()
      threshold = best[k - 1].score
    }
  }
  return best.sort((a, b) => b.score - a.score)
}

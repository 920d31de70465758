// The serving path (docs/GOALS.md): no item-encoder or backbone work per request. A batch of
// requests is one user-encoder forward over their windows, one matrix product of the item
// matrix with their states, and a partial top-k per request with its history excluded.
// The item matrix is held once, as a tensor on the backend: the scoring kernel, the user
// encoder's embedding lookup and the similar-items queries all read that one copy.
import * as tf from '@tensorflow/tfjs-core'
import { readBack } from '@iisan/tensor-ops'
import { readCheckpoint } from './checkpoint.ts'
import { leftPad } from './data.ts'
import { SequentialRecommender, type RecommenderConfig } from './recommender.ts'
import type { NewItemStates } from './cached-states.ts'
import { getMethod } from './methods/registry.ts'
import { maxBatchFor, topKOfQueries, type ScoredItem } from './item-scoring.ts'
import { ANN_MIN_ITEMS, approximateIndex, approximateIndexInSlices, type ItemIndex } from './item-index.ts'

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
}

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
  /** inner-product index over rows 1..N, for catalogues of approximateFrom items or more */
  private index: ItemIndex | undefined
  private indexBuild: Promise<void> | undefined
  private disposed = false

  private constructor(
    readonly config: RecommenderConfig,
    model: SequentialRecommender,
    items: tf.Tensor2D,
    index: ItemIndex | undefined,
  ) {
    this.model = model
    this.items = items
    this.index = index
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
    const index = rows - 1 >= (options.approximateFrom ?? ANN_MIN_ITEMS) ? approximateIndex(itemMatrix, D) : undefined
    const model = new SequentialRecommender(config)
    model.params.restore(values)
    return new ServingModel(config, model, tf.tensor2d(itemMatrix, [rows, D]), index)
  }

  /** Whether recommendations come from the approximate index rather than the exact scan. */
  get approximate(): boolean {
    return this.index !== undefined
  }

  /**
   * Builds the approximate index beside serving, a slice of rows at a time: the exact scan answers
   * until it is ready, then the index takes over. Rows appended meanwhile are added to it first.
   */
  buildIndex(): Promise<void> {
    if (this.index) return Promise.resolve()
    if (!this.indexBuild) {
      const D = this.config.embeddingDim
      const rows = this.itemRows()
      this.indexBuild = approximateIndexInSlices(rows, D, { isCancelled: () => this.disposed }).then((index) => {
        const built = rows.length / D
        if (this.items.shape[0] > built) index.append(this.itemRows().subarray(built * D), built)
        this.index = index
      })
      this.indexBuild.catch(() => (this.indexBuild = undefined))
    }
    return this.indexBuild
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
    const windows = histories.map((h) => leftPad(h, this.config.maxSeqLen))
    return readBack(() => this.model.userStates(windows, this.items))
  }

  userState(history: ArrayLike<number>): Float32Array {
    return this.userStates([history])
  }

  /** Top-k items by u·e_j over 1..N for each request, its history excluded: one forward, one product. */
  recommendMany(requests: readonly RecommendRequest[]): ScoredItem[][] {
    if (requests.length === 0) return []
    const states = this.userStates(requests.map((r) => r.history))
    const index = this.index
    if (index) {
      const D = this.config.embeddingDim
      return requests.map((r, b) => index.search(states.subarray(b * D, (b + 1) * D), r.k, new Set(Array.from(r.history))))
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
    this.norms ??= readBack(() => tf.norm(this.items, 'euclidean', 1))
    const norms = this.norms
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
    this.index?.append(rows, first)
    return Array.from({ length: rows.length / D }, (_, i) => first + i)
  }

  dispose(): void {
    this.disposed = true
    this.index?.dispose?.()
    this.items.dispose()
    this.model.dispose()
  }
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

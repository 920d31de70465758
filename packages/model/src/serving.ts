// The serving path (docs/GOALS.md): no item-encoder or backbone work per request. A request is
// encode ≤ T history items with the user encoder + one N×D matrix–vector product + top-k with
// the history excluded.
import * as tf from '@tensorflow/tfjs-core'
import { readCheckpoint } from './checkpoint.ts'
import { leftPad } from './data.ts'
import { SequentialRecommender, type RecommenderConfig } from './recommender.ts'
import type { NewItemStates } from './cached-states.ts'
import { getMethod } from './methods/registry.ts'

export interface ScoredItem {
  /** item index 1..N */
  index: number
  score: number
}

export class ServingModel {
  private readonly model: SequentialRecommender
  /** [N+1, D] row-major; row 0 = padding. Grows when cold-start items are appended. */
  private matrix: Float32Array
  private rows: number
  private matrixTensor: tf.Tensor2D | undefined
  /** unit-length rows of the matrix, for item-to-item similarity; built on first use */
  private unitRows: Float32Array | undefined

  private constructor(
    readonly config: RecommenderConfig,
    model: SequentialRecommender,
    itemMatrix: Float32Array,
  ) {
    this.model = model
    this.matrix = itemMatrix
    this.rows = itemMatrix.length / config.embeddingDim
  }

  /** weights: a platform checkpoint; itemMatrix: [N+1, D] float32. */
  static load(weights: Uint8Array, itemMatrix: Float32Array): ServingModel {
    const { config, values } = readCheckpoint<RecommenderConfig>(weights)
    if (itemMatrix.length % config.embeddingDim !== 0) throw new Error(`item matrix size ${itemMatrix.length} is not a multiple of D = ${config.embeddingDim}`)
    const model = new SequentialRecommender(config)
    model.params.restore(values)
    return new ServingModel(config, model, itemMatrix)
  }

  /** Number of recommendable items (N). */
  get numItems(): number {
    return this.rows - 1
  }

  /** User state after the history (item indices, oldest first; only the last T are used). */
  userState(history: ArrayLike<number>): Float32Array {
    const window = leftPad(history, this.config.maxSeqLen)
    this.matrixTensor ??= tf.tensor2d(this.matrix, [this.rows, this.config.embeddingDim])
    return tf.tidy(() => this.model.userStates([window], this.matrixTensor!).dataSync() as Float32Array)
  }

  /** Top-k items by u·e_j over 1..N, skipping `exclude`. */
  topK(state: Float32Array, k: number, exclude: ReadonlySet<number>): ScoredItem[] {
    return topKByDot(this.matrix, this.config.embeddingDim, state, k, exclude)
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
    const grown = new Float32Array(this.matrix.length + rows.length)
    grown.set(this.matrix)
    grown.set(rows, this.matrix.length)
    const first = this.rows
    this.matrix = grown
    this.rows = grown.length / D
    this.matrixTensor?.dispose()
    this.matrixTensor = undefined
    this.unitRows = undefined
    return Array.from({ length: rows.length / D }, (_, i) => first + i)
  }

  recommend(history: ArrayLike<number>, k: number): ScoredItem[] {
    return this.topK(this.userState(history), k, new Set(Array.from(history)))
  }

  /** Item-to-item: nearest items by cosine similarity of their embeddings. */
  similar(index: number, k: number): ScoredItem[] {
    const D = this.config.embeddingDim
    if (!this.unitRows) {
      this.unitRows = new Float32Array(this.matrix.length)
      for (let r = 1; r < this.rows; r++) this.unitRows.set(normalised(this.matrix.subarray(r * D, (r + 1) * D)), r * D)
    }
    return topKByDot(this.unitRows, D, this.unitRows.subarray(index * D, (index + 1) * D), k, new Set([index]))
  }

  dispose(): void {
    this.matrixTensor?.dispose()
    this.model.dispose()
  }
}

function normalised(v: Float32Array): Float32Array {
  let norm = 0
  for (const x of v) norm += x * x
  norm = Math.sqrt(norm) || 1
  return Float32Array.from(v, (x) => x / norm)
}

/** Dot products of every row 1..N with `query`, then a bounded min-heap-free top-k (k is small). */
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

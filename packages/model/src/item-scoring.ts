// The exact scoring step of serving: every item row against a batch of queries in one matrix
// product on the tensor backend (the wasm backend's XNNPACK kernel, not a scalar JS loop), then
// each query's top k by partial selection over its column of scores.
import * as tf from '@tensorflow/tfjs-core'
import { readBack } from '@iisan/tensor-ops'

export interface ScoredItem {
  /** item index 1..N */
  index: number
  score: number
}

export interface ScoringRequest {
  k: number
  /** item indices never returned (a user's history, or the item itself for similar items) */
  exclude: ArrayLike<number>
}

/**
 * Scores a batch holds at most (queries × rows): bounds the one temporary a batch allocates, so a
 * 1M-item catalogue scores 8 queries at a time and the demo catalogue many more.
 */
const MAX_BATCH_SCORES = 8_000_000
/** Above this, a batch's matrix product is already efficient; more queries only add latency. */
const MAX_BATCH_QUERIES = 64

/** How many queries one scoring pass over `rows` item rows takes at most. */
export function maxBatchFor(rows: number): number {
  return Math.max(1, Math.min(MAX_BATCH_QUERIES, Math.floor(MAX_BATCH_SCORES / rows)))
}

/**
 * items [N+1, D] (row 0 = padding, never returned), queries [B, D] row-major → for each query
 * the top k rows by u·e_r (by u·e_r / scale[r] when `rowScale` is given: cosine with unit
 * queries and row norms), best first, skipping its excluded rows.
 */
export function topKOfQueries(items: tf.Tensor2D, queries: Float32Array, requests: readonly ScoringRequest[], rowScale?: Float32Array): ScoredItem[][] {
  const [rows, D] = items.shape
  const B = requests.length
  if (queries.length !== B * D) throw new Error(`queries hold ${queries.length} values, not ${B} × ${D}`)
  const results: ScoredItem[][] = []
  const step = maxBatchFor(rows)
  for (let start = 0; start < B; start += step) {
    const n = Math.min(step, B - start)
    // items × queriesᵀ [N+1, n], with the item matrix as XNNPACK's input and the few queries as
    // its weights: packed per call, and small (with the matrix as the weights the kernel would
    // cache a packed second copy of it). Read row by row, every query at once: no transpose.
    const scores = readBack(() => tf.matMul(items, tf.transpose(tf.tensor2d(queries.subarray(start * D, (start + n) * D), [n, D]))))
    results.push(...selectTopKColumns(scores, requests.slice(start, start + n), rowScale))
  }
  return results
}

/** One query's scores over rows 0..N → its top k over rows 1..N (selectTopKColumns with one column). */
export function selectTopK(scores: Float32Array, request: ScoringRequest, rowScale?: Float32Array): ScoredItem[] {
  return selectTopKColumns(scores, [request], rowScale)[0]
}

/**
 * Scores [N+1, n] row-major (column b = request b) → each request's top k over rows 1..N, best
 * first, in one pass over the rows. Excluded rows are marked in place (the buffer is the
 * caller's scratch), so the scan tests no set per row. Ties keep the lower index first, as a
 * scan in row order does.
 */
export function selectTopKColumns(scores: Float32Array, requests: readonly ScoringRequest[], rowScale?: Float32Array): ScoredItem[][] {
  const n = requests.length
  const rows = scores.length / n
  const ks = requests.map((r) => r.k)
  const offset = new Int32Array(n + 1) // request b keeps its best in [offset[b], offset[b] + k_b)
  ks.forEach((k, b) => (offset[b + 1] = offset[b] + k))
  const bestIndex = new Int32Array(offset[n])
  const bestScore = new Float64Array(offset[n])
  const filled = new Int32Array(n)
  requests.forEach(({ exclude }, b) => {
    for (let i = 0; i < exclude.length; i++) {
      const r = exclude[i]
      if (r > 0 && r < rows) scores[r * n + b] = -Infinity
    }
  })
  // cosine divides by the row's norm first; a plain dot product reads the scores as they are
  if (rowScale) {
    for (let r = 1; r < rows; r++) {
      const scale = rowScale[r] || 1
      for (let i = r * n; i < (r + 1) * n; i++) scores[i] /= scale
    }
  }
  // column by column with the threshold in a local: one load and one comparison per score. The
  // threshold stays −∞ until the request has k items (+∞ for k = 0), so that one comparison skips
  // both the excluded rows (−∞) and the scores that cannot enter.
  for (let b = 0; b < n; b++) {
    const k = ks[b]
    const base = offset[b]
    let thr = k > 0 ? -Infinity : Infinity
    let count = 0
    for (let at = n + b; at < scores.length; at += n) {
      const score = scores[at]
      if (score <= thr) continue
      // insertion into the sorted prefix (descending); the last one falls off when full
      let i = base + (count < k ? count++ : k - 1)
      while (i > base && bestScore[i - 1] < score) {
        bestScore[i] = bestScore[i - 1]
        bestIndex[i] = bestIndex[i - 1]
        i--
      }
      bestScore[i] = score
      bestIndex[i] = (at - b) / n
      if (count === k) thr = bestScore[base + k - 1]
    }
    filled[b] = count
  }
  return requests.map((_, b) => Array.from({ length: filled[b] }, (_, i) => ({ index: bestIndex[offset[b] + i], score: bestScore[offset[b] + i] })))
}

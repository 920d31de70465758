// In-batch softmax with popularity correction (docs/METHOD.md §5).
//
// A batch holds B windows of T+1 item ids; all C = B·(T+1) slots are the candidate set.
// Row (b, t) scores every candidate with the user state after t items and must pick slot
// b·(T+1) + t + 1, the true next item.
import * as tf from '@tensorflow/tfjs-core'

export const MASKED_LOGIT = -1e4

export interface InBatchTargets {
  /** [B·T, C] 1 where the candidate is hidden from row (b, t): padding, or an item of b's own window. */
  masked: Uint8Array
  /** [B·T] index of the target slot in the candidate set. */
  targetSlot: Int32Array
  /** [B·T] 1 for rows that predict a real item (input position holds a real item). */
  valid: Float32Array
  rows: number
  candidates: number
}

/** windows: B windows of T+1 ids each (left padding 0). */
export function inBatchTargets(windows: Int32Array[]): InBatchTargets {
  const B = windows.length
  const W = windows[0].length // T + 1
  const T = W - 1
  const C = B * W
  const slots = new Int32Array(C)
  windows.forEach((w, b) => slots.set(w, b * W))
  const masked = new Uint8Array(B * T * C)
  const targetSlot = new Int32Array(B * T)
  const valid = new Float32Array(B * T)
  for (let b = 0; b < B; b++) {
    const own = new Set(windows[b])
    // Hidden for all of b's rows: padding slots, and any slot holding an item of b's window.
    const rowMask = new Uint8Array(C)
    for (let c = 0; c < C; c++) if (slots[c] === 0 || own.has(slots[c])) rowMask[c] = 1
    for (let t = 0; t < T; t++) {
      const row = b * T + t
      const target = b * W + t + 1
      masked.set(rowMask, row * C)
      masked[row * C + target] = 0 // …except the true next item's own slot
      targetSlot[row] = target
      valid[row] = windows[b][t] !== 0 ? 1 : 0
    }
  }
  return { masked, targetSlot, valid, rows: B * T, candidates: C }
}

/**
 * Only the rows that predict a real item: a Scientific batch has ≈ 300 of its 640 rows valid,
 * and the [rows, C] logits, their softmax and the mask are the largest elementwise work of a step.
 * `rows` maps each kept row to its index in the full B·T layout.
 */
export function validRowsOnly(t: InBatchTargets): InBatchTargets & { rowIndex: Int32Array } {
  const keep: number[] = []
  for (let r = 0; r < t.rows; r++) if (t.valid[r]) keep.push(r)
  const C = t.candidates
  const masked = new Uint8Array(keep.length * C)
  keep.forEach((r, i) => masked.set(t.masked.subarray(r * C, (r + 1) * C), i * C))
  return {
    masked,
    targetSlot: Int32Array.from(keep, (r) => t.targetSlot[r]),
    valid: new Float32Array(keep.length).fill(1),
    rows: keep.length,
    candidates: C,
    rowIndex: Int32Array.from(keep),
  }
}

/** log p(j) for every candidate slot: frequency in the training sequences / total; padding p = 1. */
export function logPopularity(slots: ArrayLike<number>, logProb: Float32Array): Float32Array {
  const out = new Float32Array(slots.length)
  for (let c = 0; c < slots.length; c++) out[c] = slots[c] === 0 ? 0 : logProb[slots[c]]
  return out
}

/** Per-item log p(j) from training counts; unseen items count once so log p stays finite. */
export function logProbabilities(trainCounts: Float64Array): Float32Array {
  let total = 0
  for (let j = 1; j < trainCounts.length; j++) total += Math.max(1, trainCounts[j])
  const out = new Float32Array(trainCounts.length)
  for (let j = 1; j < trainCounts.length; j++) out[j] = Math.log(Math.max(1, trainCounts[j]) / total)
  return out
}

/**
 * userStates [B·T, D], candidateEmb [C, D] → mean cross-entropy over valid rows.
 * logit(b,t,j) = u_{b,t}·e_j − log p(j), hidden candidates set to −1e4.
 */
export function inBatchSoftmaxLoss(
  userStates: tf.Tensor2D,
  candidateEmb: tf.Tensor2D,
  candidateLogPop: tf.Tensor1D,
  targets: { masked: tf.Tensor2D /* bool */; targetOneHot: tf.Tensor2D; valid: tf.Tensor1D },
): tf.Scalar {
  // Explicit transpose: a transposed matMul is the slow path on wasm.
  const logits = tf.sub(tf.matMul(userStates, tf.transpose(candidateEmb)), candidateLogPop) // [B·T, C]
  const hidden = tf.where(targets.masked, tf.fill(logits.shape, MASKED_LOGIT), logits)
  const nll = tf.neg(tf.sum(tf.mul(tf.logSoftmax(hidden), targets.targetOneHot), 1)) // [B·T]
  return tf.div(tf.sum(tf.mul(nll, targets.valid)), tf.maximum(tf.sum(targets.valid), 1)) as tf.Scalar
}

/** Host arrays → the tensors `inBatchSoftmaxLoss` takes. Call inside a tidy. */
export function targetTensors(t: InBatchTargets) {
  return {
    masked: tf.tensor2d(t.masked, [t.rows, t.candidates], 'bool'),
    targetOneHot: tf.cast(tf.oneHot(tf.tensor1d(t.targetSlot, 'int32'), t.candidates), 'float32') as tf.Tensor2D,
    valid: tf.tensor1d(t.valid),
  }
}

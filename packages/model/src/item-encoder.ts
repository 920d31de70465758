// The item side of a sequential recommender: maps item indices (1..N, 0 = padding) to D-dim
// embeddings. ID-SASRec looks them up in a table; IISAN computes them from cached hidden states
// with the side network; the fine-tuning baselines run the backbones.
import * as tf from '@tensorflow/tfjs-core'
import type { NewItemStates } from './cached-states.ts'

export interface ItemEncoder {
  readonly embeddingDim: number
  readonly numItems: number
  /** ids [n] → [n, D]; differentiable w.r.t. the encoder's parameters. */
  embed(ids: Int32Array, training: boolean): tf.Tensor2D
  /**
   * Work a training step can do before its forward pass, outside the gradient tape (uncached
   * IISAN runs its frozen backbones here, so the tape records none of their ops).
   */
  prepare?(ids: Int32Array): void
  /**
   * A training step in two passes, for encoders whose one tape over a whole batch would not fit
   * in memory (the fine-tuning baselines run BERT and ViT inside the step). Pass 1 (this call):
   * the step's items embedded in training mode, off the gradient tape. The step then takes the
   * loss and dL/d(unique) with the tape over the user side only, and `backward` (pass 2)
   * recomputes the item side a chunk at a time, each under a tape of its own with pass 1's
   * dropout masks, for the encoder's gradients. The same loss and gradients as one tape over
   * `embed(ids, true)`; the memory of one chunk's tape. Encoders that have it are trained this
   * way (SequentialRecommender.lossAndGrads); undefined: this step takes the one tape.
   * Cached IISAN takes this route to run its SAN on ONNX Runtime (prepareTraining).
   */
  forwardForStep?(ids: Int32Array): TwoPassStep | undefined
  /**
   * Before the first training step (SequentialRecommender.prepareTraining): the encoder may move
   * its training pass to another runtime (cached IISAN: the SAN on ONNX Runtime).
   */
  prepareTraining?(): Promise<void>
  /** Where the training pass runs once prepared (default tfjs). */
  readonly trainingRuntime?: 'onnx' | 'tfjs'
  /** [N+1, D] for every item (row 0 = padding), computed in inference mode. */
  embedAll(): tf.Tensor2D
  /**
   * embedAll on a faster inference runtime, where the encoder has one (IISAN: its SAN on ONNX
   * Runtime); null when that runtime is not available here. The same rows within float tolerance.
   */
  embedAllOnRuntime?(): Promise<tf.Tensor2D | null>
  /**
   * Cold start: [n, D] rows for items outside training, from their cached backbone states,
   * without retraining. Only encoders that read content have it.
   */
  embedFromStates?(items: NewItemStates[]): Float32Array
  /** Frees what the encoder holds besides its parameters (e.g. frozen backbone weights). */
  dispose?(): void
}

/** Pass 1 of a two-pass step (ItemEncoder.forwardForStep) and the way to pass 2. */
export interface TwoPassStep {
  /** [m, D]: the step's distinct real items, embedded in training mode without a tape */
  unique: tf.Tensor2D
  /** for each id given, its row in [a zero row; unique] (0 = padding): embed(ids, true) = spreadRows(unique, slot) */
  slot: Int32Array
  /**
   * Pass 2: dL/d(unique) [m, D] → the gradients of the encoder's variables (by variable name),
   * summed over the chunks. Leaves the dropout stream where pass 1 and the user side left it.
   */
  backward(dUnique: tf.Tensor2D): tf.NamedTensorMap
}

/**
 * ids [n] → the distinct non-zero ids in first-seen order, and for each slot its row in
 * [a default row; one row per unique id] (0 = the default, i.e. padding).
 */
export function uniqueItems(ids: ArrayLike<number>): { unique: Int32Array; slot: Int32Array } {
  const rowOf = new Map<number, number>()
  const slot = new Int32Array(ids.length)
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i]
    if (id === 0) continue
    if (!rowOf.has(id)) rowOf.set(id, rowOf.size + 1)
    slot[i] = rowOf.get(id)!
  }
  return { unique: Int32Array.from(rowOf.keys()), slot }
}

/**
 * rows [m, D] spread over n slots (uniqueItems' `slot`), `fallback` [1, D] where a slot is 0
 * (default: zeros, padding) → [n, D]; differentiable in both.
 */
export function spreadRows(rows: tf.Tensor2D, slot: Int32Array, fallback?: tf.Tensor2D): tf.Tensor2D {
  return tf.gather(tf.concat([fallback ?? tf.zeros([1, rows.shape[1]]), rows], 0), tf.tensor1d(slot, 'int32')) as tf.Tensor2D
}

/**
 * [N+1, D] with row 0 zero: `embedUnique` on items 1..N, `chunk` items at a time, each chunk's
 * intermediates freed before the next so memory stays flat.
 */
export function embedCatalogue(numItems: number, embeddingDim: number, chunk: number, embedUnique: (ids: Int32Array) => tf.Tensor2D): tf.Tensor2D {
  const parts: tf.Tensor2D[] = [tf.zeros([1, embeddingDim])]
  for (let first = 1; first <= numItems; first += chunk) {
    const ids = Int32Array.from({ length: Math.min(chunk, numItems - first + 1) }, (_, i) => first + i)
    parts.push(tf.tidy(() => embedUnique(ids)))
  }
  const all = tf.concat(parts, 0) as tf.Tensor2D
  for (const p of parts) p.dispose()
  return all
}

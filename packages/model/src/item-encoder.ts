// The item side of a sequential recommender: maps item indices (1..N, 0 = padding) to D-dim
// embeddings. ID-SASRec looks them up in a table; IISAN computes them from cached hidden states
// with the side network.
import type * as tf from '@tensorflow/tfjs-core'
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
  /** [N+1, D] for every item (row 0 = padding), computed in inference mode. */
  embedAll(): tf.Tensor2D
  /**
   * Cold start: [n, D] rows for items outside training, from their cached backbone states,
   * without retraining. Only encoders that read content have it.
   */
  embedFromStates?(items: NewItemStates[]): Float32Array
  /** Frees what the encoder holds besides its parameters (e.g. frozen backbone weights). */
  dispose?(): void
}

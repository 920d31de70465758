// The item side of a sequential recommender: maps item indices (1..N, 0 = padding) to D-dim
// embeddings. ID-SASRec looks them up in a table; IISAN computes them from cached hidden states
// with the side network.
import type * as tf from '@tensorflow/tfjs-core'

export interface ItemEncoder {
  readonly embeddingDim: number
  readonly numItems: number
  /** ids [n] → [n, D]; differentiable w.r.t. the encoder's parameters. */
  embed(ids: Int32Array, training: boolean): tf.Tensor2D
  /** [N+1, D] for every item (row 0 = padding), computed in inference mode. */
  embedAll(): tf.Tensor2D
}

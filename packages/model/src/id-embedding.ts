// ID-SASRec's item side: one learned D-vector per item id (docs/METHOD.md §7, the ID baseline).
import * as tf from '@tensorflow/tfjs-core'
import type { ItemEncoder } from './item-encoder.ts'
import type { Params } from './params.ts'

export class IdEmbedding implements ItemEncoder {
  /** [N+1, D], row 0 = padding */
  private readonly table: tf.Variable<tf.Rank.R2>

  constructor(
    readonly numItems: number,
    readonly embeddingDim: number,
    params: Params,
  ) {
    // Updated at the item-side learning rate, the role the side network has in IISAN.
    this.table = params.matrix('item.id_emb', [numItems + 1, embeddingDim], 'xavier', 'itemIds')
  }

  embed(ids: Int32Array): tf.Tensor2D {
    // gather's gradient is UnsortedSegmentSum, registered for wasm in backend.ts.
    return tf.gather(this.table, tf.tensor1d(ids, 'int32'))
  }

  embedAll(): tf.Tensor2D {
    return this.table.clone()
  }
}

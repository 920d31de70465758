// ID-SASRec's item side: one learned D-vector per item id (docs/METHOD.md §7, the ID baseline).
import * as tf from '@tensorflow/tfjs-core'
import type { ItemEncoder } from './item-encoder.ts'
import type { Params } from './params.ts'

export class IdEmbedding implements ItemEncoder {
  constructor(
    readonly numItems: number,
    readonly embeddingDim: number,
    private readonly params: Params,
  ) {
    // Updated at the item-side learning rate, the role the side network has in IISAN.
    params.add('item.id_emb', [numItems + 1, embeddingDim], 'xavier', 'itemIds')
  }

  embed(ids: Int32Array): tf.Tensor2D {
    // gather's gradient is UnsortedSegmentSum, registered for wasm in backend.ts.
    return tf.gather(this.params.get('item.id_emb'), tf.tensor1d(ids, 'int32')) as tf.Tensor2D
  }

  embedAll(): tf.Tensor2D {
    return this.params.get('item.id_emb').clone() as tf.Tensor2D
  }
}

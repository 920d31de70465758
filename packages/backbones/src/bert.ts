// BertModel (transformers) forward pass: embeddings (word + absolute position + token type 0,
// LayerNorm), then post-LN encoder layers. Dropout is off (inference); the pooler is not used —
// IISAN reads the [CLS] hidden state of every layer, not the pooled output.
import * as tf from '@tensorflow/tfjs-core'
import type { BertConfig } from './config.ts'
import type { Checkpoint, TensorSpec } from './checkpoint.ts'
import {
  additiveMask,
  denseSpecs,
  disposeEncoderLayer,
  disposeLayerNorm,
  firstToken,
  layerNorm,
  layerNormSpecs,
  loadAttention,
  loadDense,
  loadLayerNorm,
  runEncoder,
  type EncoderLayer,
  type LayerNormParams,
} from './layers.ts'

const layerPrefix = (i: number): string => `encoder.layer.${i}`

/** Every tensor BertModel needs, with the shape config.json implies (pooler excluded). */
export function bertTensorSpecs(c: BertConfig): TensorSpec[] {
  const d = c.hiddenSize
  const specs: TensorSpec[] = [
    { name: 'embeddings.word_embeddings.weight', shape: [c.vocabSize, d] },
    { name: 'embeddings.position_embeddings.weight', shape: [c.maxPositions, d] },
    { name: 'embeddings.token_type_embeddings.weight', shape: [c.typeVocabSize, d] },
    ...layerNormSpecs('embeddings.LayerNorm', d),
  ]
  for (let i = 0; i < c.numLayers; i++) {
    const p = layerPrefix(i)
    specs.push(
      ...denseSpecs(`${p}.attention.self.query`, d, d),
      ...denseSpecs(`${p}.attention.self.key`, d, d),
      ...denseSpecs(`${p}.attention.self.value`, d, d),
      ...denseSpecs(`${p}.attention.output.dense`, d, d),
      ...layerNormSpecs(`${p}.attention.output.LayerNorm`, d),
      ...denseSpecs(`${p}.intermediate.dense`, d, c.intermediateSize),
      ...denseSpecs(`${p}.output.dense`, c.intermediateSize, d),
      ...layerNormSpecs(`${p}.output.LayerNorm`, d),
    )
  }
  return specs
}

export interface BertOutputs {
  /** L + 1 tensors, each [batch, seq, d] (allPositions) or [batch, d] ([CLS] only). */
  hiddenStates: tf.Tensor[]
}

export class BertModel {
  private constructor(
    readonly config: BertConfig,
    private readonly wordEmbeddings: tf.Tensor2D,
    private readonly positionEmbeddings: tf.Tensor2D,
    /** Row 0 of token_type_embeddings: IISAN feeds single segments only. */
    private readonly tokenType0: tf.Tensor1D,
    private readonly embeddingNorm: LayerNormParams,
    private readonly layers: EncoderLayer[],
  ) {}

  /** Expects `ckpt.validate(bertTensorSpecs(config))` to have passed. */
  static load(config: BertConfig, ckpt: Checkpoint): BertModel {
    const d = config.hiddenSize
    const eps = config.layerNormEps
    const types = ckpt.read({ name: 'embeddings.token_type_embeddings.weight', shape: [config.typeVocabSize, d] })
    const layers: EncoderLayer[] = []
    for (let i = 0; i < config.numLayers; i++) {
      const p = layerPrefix(i)
      layers.push({
        norm: 'post',
        attention: loadAttention(
          ckpt,
          {
            query: `${p}.attention.self.query`,
            key: `${p}.attention.self.key`,
            value: `${p}.attention.self.value`,
            output: `${p}.attention.output.dense`,
          },
          d,
          config.numHeads,
        ),
        ln1: loadLayerNorm(ckpt, `${p}.attention.output.LayerNorm`, d, eps),
        ffn: {
          intermediate: loadDense(ckpt, `${p}.intermediate.dense`, d, config.intermediateSize),
          output: loadDense(ckpt, `${p}.output.dense`, config.intermediateSize, d),
          act: config.hiddenAct,
        },
        ln2: loadLayerNorm(ckpt, `${p}.output.LayerNorm`, d, eps),
      })
    }
    return new BertModel(
      config,
      tf.tensor2d(ckpt.read({ name: 'embeddings.word_embeddings.weight', shape: [config.vocabSize, d] }), [config.vocabSize, d]),
      tf.tensor2d(ckpt.read({ name: 'embeddings.position_embeddings.weight', shape: [config.maxPositions, d] }), [config.maxPositions, d]),
      tf.tensor1d(types.subarray(0, d)),
      loadLayerNorm(ckpt, 'embeddings.LayerNorm', d, eps),
      layers,
    )
  }

  /**
   * inputIds, attentionMask: row-major [batch, seq]. Returns the L + 1 hidden states (caller
   * disposes them): all positions as [batch, seq, d], or only position 0 as [batch, d].
   */
  forward(inputIds: Int32Array, attentionMask: Int32Array, batch: number, seq: number, allPositions: boolean): BertOutputs {
    const c = this.config
    if (seq > c.maxPositions) throw new RangeError(`sequence length ${seq} exceeds max_position_embeddings ${c.maxPositions}`)
    for (const id of inputIds) {
      if (id < 0 || id >= c.vocabSize) throw new RangeError(`token id ${id} is outside the embedding table (vocab_size ${c.vocabSize})`)
    }
    const d = c.hiddenSize
    const embeddings = tf.tidy(() => {
      const ids = tf.tensor1d(inputIds, 'int32')
      const words = tf.reshape(tf.gather(this.wordEmbeddings, ids), [batch, seq, d])
      const positions = tf.slice(this.positionEmbeddings, [0, 0], [seq, d])
      const summed = tf.add(tf.add(words, positions), this.tokenType0)
      return tf.reshape(layerNorm(summed, this.embeddingNorm), [batch * seq, d]) as tf.Tensor2D
    })
    const mask = additiveMask(attentionMask, batch, seq)
    const keep = allPositions
      ? (h: tf.Tensor2D) => tf.reshape(h, [batch, seq, d])
      : (h: tf.Tensor2D) => firstToken(h, batch, seq)
    const { kept, last } = runEncoder(embeddings, batch, seq, this.layers, mask, keep)
    mask.dispose()
    embeddings.dispose()
    last.dispose()
    return { hiddenStates: kept }
  }

  dispose(): void {
    this.wordEmbeddings.dispose()
    this.positionEmbeddings.dispose()
    this.tokenType0.dispose()
    disposeLayerNorm(this.embeddingNorm)
    for (const layer of this.layers) disposeEncoderLayer(layer)
  }
}

// BertModel (transformers) forward pass: embeddings (word + absolute position + token type 0,
// LayerNorm), then post-LN encoder layers. Dropout is off (inference); the pooler is not used —
// IISAN reads the [CLS] hidden state of every layer, not the pooled output. The weights and the
// embedding step are shared with the trainable BERT (trainable.ts).
import * as tf from '@tensorflow/tfjs-core'
import type { BertConfig } from './config.ts'
import type { Checkpoint, TensorSpec } from './checkpoint.ts'
import {
  additiveMask,
  denseSpecs,
  disposeEncoderLayer,
  disposeLayerNorm,
  firstToken,
  layerNormSpecs,
  loadAttention,
  loadDense,
  loadLayerNorm,
  normalize,
  runEncoder,
  weightTensor,
  type AttentionNames,
  type EncoderLayer,
  type LayerNormParams,
  type WeightSource,
} from './layers.ts'

export const bertLayerPrefix = (i: number): string => `encoder.layer.${i}`

export function bertAttentionNames(i: number): AttentionNames {
  const p = bertLayerPrefix(i)
  return { query: `${p}.attention.self.query`, key: `${p}.attention.self.key`, value: `${p}.attention.self.value`, output: `${p}.attention.output.dense` }
}

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
    const p = bertLayerPrefix(i)
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

export interface BertWeights {
  /** [vocab, d] */
  wordEmbeddings: tf.Tensor2D
  /** [maxPositions, d] */
  positionEmbeddings: tf.Tensor2D
  /** [typeVocab, d]; IISAN feeds single segments, so only row 0 is read */
  tokenTypeEmbeddings: tf.Tensor2D
  embeddingNorm: LayerNormParams
  layers: EncoderLayer[]
}

/** Expects the source to hold `bertTensorSpecs(config)` (Checkpoint.validate). */
export function loadBertWeights(config: BertConfig, src: WeightSource): BertWeights {
  const d = config.hiddenSize
  const eps = config.layerNormEps
  const table = (name: string, rows: number): tf.Tensor2D => weightTensor(src, name, src.read({ name, shape: [rows, d] }), [rows, d])
  const layers: EncoderLayer[] = []
  for (let i = 0; i < config.numLayers; i++) {
    const p = bertLayerPrefix(i)
    layers.push({
      norm: 'post',
      attention: loadAttention(src, bertAttentionNames(i), d, config.numHeads),
      ln1: loadLayerNorm(src, `${p}.attention.output.LayerNorm`, d, eps),
      ffn: {
        intermediate: loadDense(src, `${p}.intermediate.dense`, d, config.intermediateSize),
        output: loadDense(src, `${p}.output.dense`, config.intermediateSize, d),
        act: config.hiddenAct,
      },
      ln2: loadLayerNorm(src, `${p}.output.LayerNorm`, d, eps),
    })
  }
  return {
    wordEmbeddings: table('embeddings.word_embeddings.weight', config.vocabSize),
    positionEmbeddings: table('embeddings.position_embeddings.weight', config.maxPositions),
    tokenTypeEmbeddings: table('embeddings.token_type_embeddings.weight', config.typeVocabSize),
    embeddingNorm: loadLayerNorm(src, 'embeddings.LayerNorm', d, eps),
    layers,
  }
}

export function disposeBertWeights(w: BertWeights): void {
  w.wordEmbeddings.dispose()
  w.positionEmbeddings.dispose()
  w.tokenTypeEmbeddings.dispose()
  disposeLayerNorm(w.embeddingNorm)
  for (const layer of w.layers) disposeEncoderLayer(layer)
}

/** Ids and length the embedding tables can take (any runtime: a Gather would fail obscurely). */
export function checkBertInput(c: BertConfig, inputIds: Int32Array, seq: number): void {
  if (seq > c.maxPositions) throw new RangeError(`sequence length ${seq} exceeds max_position_embeddings ${c.maxPositions}`)
  for (const id of inputIds) {
    if (id < 0 || id >= c.vocabSize) throw new RangeError(`token id ${id} is outside the embedding table (vocab_size ${c.vocabSize})`)
  }
}

/**
 * The embedding output for row-major [batch, seq] token ids → [batch·seq, d] (before any
 * dropout). Not tidied: callers wrap it.
 */
export function bertEmbeddings(c: BertConfig, w: BertWeights, inputIds: Int32Array, batch: number, seq: number): tf.Tensor2D {
  checkBertInput(c, inputIds, seq)
  const d = c.hiddenSize
  const ids = tf.tensor1d(inputIds, 'int32')
  const words = tf.reshape(tf.gather(w.wordEmbeddings, ids), [batch, seq, d])
  const positions = tf.slice(w.positionEmbeddings, [0, 0], [seq, d])
  const tokenType0 = tf.slice(w.tokenTypeEmbeddings, [0, 0], [1, d])
  const summed = tf.add(tf.add(words, positions), tokenType0)
  return tf.reshape(normalize(summed, w.embeddingNorm), [batch * seq, d])
}

export interface BertOutputs {
  /** L + 1 tensors, each [batch, seq, d] (allPositions) or [batch, d] ([CLS] only). */
  hiddenStates: tf.Tensor[]
}

export class BertModel {
  private constructor(
    readonly config: BertConfig,
    private readonly weights: BertWeights,
  ) {}

  /** Expects `ckpt.validate(bertTensorSpecs(config))` to have passed. */
  static load(config: BertConfig, ckpt: Checkpoint): BertModel {
    return new BertModel(config, loadBertWeights(config, ckpt))
  }

  /**
   * inputIds, attentionMask: row-major [batch, seq]. Returns the L + 1 hidden states (caller
   * disposes them): all positions as [batch, seq, d], or only position 0 as [batch, d].
   */
  forward(inputIds: Int32Array, attentionMask: Int32Array, batch: number, seq: number, allPositions: boolean): BertOutputs {
    const d = this.config.hiddenSize
    const embeddings = tf.tidy(() => bertEmbeddings(this.config, this.weights, inputIds, batch, seq))
    const mask = additiveMask(attentionMask, batch, seq)
    const keep = allPositions
      ? (h: tf.Tensor2D) => tf.reshape(h, [batch, seq, d])
      : (h: tf.Tensor2D) => firstToken(h, batch, seq)
    const { kept, last } = runEncoder(embeddings, batch, seq, this.weights.layers, mask, keep)
    mask.dispose()
    embeddings.dispose()
    last.dispose()
    return { hiddenStates: kept }
  }

  dispose(): void {
    disposeBertWeights(this.weights)
  }
}

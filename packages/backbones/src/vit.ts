// ViTModel (transformers) forward pass: patch embedding, [CLS] + learned position embeddings,
// pre-LN encoder layers, final LayerNorm (applied to last_hidden_state only — the hidden states
// HF returns, and IISAN caches, are taken before it).
//
// The patch embedding is a stride-P, kernel-P Conv2d, i.e. a matMul of non-overlapping patches
// against the kernel flattened as weight.reshape(d, C·P·P) (channel, row, col order). Patches are
// cut in JS from the CHW pixel array, so no conv kernel (or its missing wasm variants) is needed.
// The weights and the embedding step are shared with the trainable ViT (trainable.ts).
import * as tf from '@tensorflow/tfjs-core'
import type { VitConfig } from './config.ts'
import type { Checkpoint, TensorSpec } from './checkpoint.ts'
import {
  dense,
  denseSpecs,
  disposeDense,
  disposeEncoderLayer,
  disposeLayerNorm,
  firstToken,
  layerNormSpecs,
  loadAttention,
  loadDense,
  loadLayerNorm,
  normalize,
  runEncoder,
  transposeMatrix,
  weightTensor,
  type AttentionNames,
  type Dense,
  type EncoderLayer,
  type LayerNormParams,
  type WeightSource,
} from './layers.ts'

export const vitLayerPrefix = (i: number): string => `encoder.layer.${i}`

export function vitAttentionNames(i: number): AttentionNames {
  const p = vitLayerPrefix(i)
  return {
    query: `${p}.attention.attention.query`,
    key: `${p}.attention.attention.key`,
    value: `${p}.attention.attention.value`,
    output: `${p}.attention.output.dense`,
  }
}

export function vitTensorSpecs(c: VitConfig): TensorSpec[] {
  const d = c.hiddenSize
  const specs: TensorSpec[] = [
    { name: 'embeddings.cls_token', shape: [1, 1, d] },
    { name: 'embeddings.position_embeddings', shape: [1, c.numPatches + 1, d] },
    { name: 'embeddings.patch_embeddings.projection.weight', shape: [d, c.numChannels, c.patchSize, c.patchSize] },
    { name: 'embeddings.patch_embeddings.projection.bias', shape: [d] },
    ...layerNormSpecs('layernorm', d),
  ]
  for (let i = 0; i < c.numLayers; i++) {
    const p = vitLayerPrefix(i)
    specs.push(
      ...layerNormSpecs(`${p}.layernorm_before`, d),
      ...denseSpecs(`${p}.attention.attention.query`, d, d, c.qkvBias),
      ...denseSpecs(`${p}.attention.attention.key`, d, d, c.qkvBias),
      ...denseSpecs(`${p}.attention.attention.value`, d, d, c.qkvBias),
      ...denseSpecs(`${p}.attention.output.dense`, d, d),
      ...layerNormSpecs(`${p}.layernorm_after`, d),
      ...denseSpecs(`${p}.intermediate.dense`, d, c.intermediateSize),
      ...denseSpecs(`${p}.output.dense`, c.intermediateSize, d),
    )
  }
  return specs
}

/**
 * [batch, C, H, W] pixels → [batch·numPatches, C·P·P] rows, patches in row-major grid order and
 * each row in (channel, row, col) order, matching the flattened Conv2d kernel.
 */
export function patchify(pixels: Float32Array, batch: number, c: VitConfig): Float32Array {
  const { imageSize: S, patchSize: P, numChannels: C } = c
  const grid = S / P
  const rowLen = C * P * P
  const out = new Float32Array(batch * grid * grid * rowLen)
  let o = 0
  for (let b = 0; b < batch; b++) {
    const img = b * C * S * S
    for (let gy = 0; gy < grid; gy++) {
      for (let gx = 0; gx < grid; gx++) {
        for (let ch = 0; ch < C; ch++) {
          for (let r = 0; r < P; r++) {
            const src = img + ch * S * S + (gy * P + r) * S + gx * P
            out.set(pixels.subarray(src, src + P), o)
            o += P
          }
        }
      }
    }
  }
  return out
}

export interface VitWeights {
  /** the patch Conv2d as a Linear: [C·P·P, d] */
  patchProjection: Dense
  /** [1, 1, d] */
  clsToken: tf.Tensor3D
  /** [1, numPatches + 1, d] */
  positionEmbeddings: tf.Tensor3D
  layers: EncoderLayer[]
  /** `layernorm`: applied to last_hidden_state only */
  finalNorm: LayerNormParams
}

/** Expects the source to hold `vitTensorSpecs(config)` (Checkpoint.validate). */
export function loadVitWeights(config: VitConfig, src: WeightSource): VitWeights {
  const d = config.hiddenSize
  const eps = config.layerNormEps
  const rowLen = config.numChannels * config.patchSize * config.patchSize
  const kernelName = 'embeddings.patch_embeddings.projection.weight'
  const kernel = src.read({ name: kernelName, shape: [d, config.numChannels, config.patchSize, config.patchSize] })
  const biasName = 'embeddings.patch_embeddings.projection.bias'
  const patchProjection: Dense = {
    w: weightTensor(src, kernelName, transposeMatrix(kernel, d, rowLen), [rowLen, d]),
    b: weightTensor<tf.Tensor1D>(src, biasName, src.read({ name: biasName, shape: [d] }), [d]),
  }
  const layers: EncoderLayer[] = []
  for (let i = 0; i < config.numLayers; i++) {
    const p = vitLayerPrefix(i)
    layers.push({
      norm: 'pre',
      ln1: loadLayerNorm(src, `${p}.layernorm_before`, d, eps),
      attention: loadAttention(src, vitAttentionNames(i), d, config.numHeads, config.qkvBias),
      ln2: loadLayerNorm(src, `${p}.layernorm_after`, d, eps),
      ffn: {
        intermediate: loadDense(src, `${p}.intermediate.dense`, d, config.intermediateSize),
        output: loadDense(src, `${p}.output.dense`, config.intermediateSize, d),
        act: config.hiddenAct,
      },
    })
  }
  const seq = config.numPatches + 1
  const token = (name: string, shape: number[]): tf.Tensor3D => weightTensor(src, name, src.read({ name, shape }), shape)
  return {
    patchProjection,
    clsToken: token('embeddings.cls_token', [1, 1, d]),
    positionEmbeddings: token('embeddings.position_embeddings', [1, seq, d]),
    layers,
    finalNorm: loadLayerNorm(src, 'layernorm', d, eps),
  }
}

export function disposeVitWeights(w: VitWeights): void {
  disposeDense(w.patchProjection)
  w.clsToken.dispose()
  w.positionEmbeddings.dispose()
  for (const layer of w.layers) disposeEncoderLayer(layer)
  disposeLayerNorm(w.finalNorm)
}

/** [batch, C, H, W] for this config, whichever runtime reads it. */
export function checkPixels(c: VitConfig, pixels: Float32Array, batch: number): void {
  const expected = batch * c.numChannels * c.imageSize * c.imageSize
  if (pixels.length !== expected) throw new RangeError(`pixel array has ${pixels.length} values, expected ${expected} for ${batch} images`)
}

/**
 * [CLS] + projected patches + position embeddings for [batch, C, H, W] pixels → [batch·seq, d]
 * (before any dropout). Not tidied: callers wrap it.
 */
export function vitEmbeddings(c: VitConfig, w: VitWeights, pixels: Float32Array, batch: number): tf.Tensor2D {
  checkPixels(c, pixels, batch)
  const d = c.hiddenSize
  const seq = c.numPatches + 1
  const rowLen = c.numChannels * c.patchSize * c.patchSize
  const patches = tf.tensor2d(patchify(pixels, batch, c), [batch * c.numPatches, rowLen])
  const projected = tf.reshape(dense(patches, w.patchProjection), [batch, c.numPatches, d])
  const cls = tf.tile(w.clsToken, [batch, 1, 1])
  const tokens = tf.add(tf.concat([cls, projected], 1), w.positionEmbeddings)
  return tf.reshape(tokens, [batch * seq, d])
}

export interface VitOutputs {
  /** L + 1 tensors, each [batch, seq, d] (allPositions) or [batch, d] ([CLS] only). */
  hiddenStates: tf.Tensor[]
  /** After the final LayerNorm, [batch, seq, d]; only when allPositions. */
  lastHiddenState: tf.Tensor3D | null
}

export class VitModel {
  private constructor(
    readonly config: VitConfig,
    private readonly weights: VitWeights,
  ) {}

  static load(config: VitConfig, ckpt: Checkpoint): VitModel {
    return new VitModel(config, loadVitWeights(config, ckpt))
  }

  /** Sequence length: patches + [CLS]. */
  get seqLen(): number {
    return this.config.numPatches + 1
  }

  /** pixels: [batch, C, H, W] float32 (already normalised). Caller disposes the outputs. */
  forward(pixels: Float32Array, batch: number, allPositions: boolean): VitOutputs {
    const d = this.config.hiddenSize
    const seq = this.seqLen
    const embeddings = tf.tidy(() => vitEmbeddings(this.config, this.weights, pixels, batch))
    const keep = allPositions
      ? (h: tf.Tensor2D) => tf.reshape(h, [batch, seq, d])
      : (h: tf.Tensor2D) => firstToken(h, batch, seq)
    const { kept, last } = runEncoder(embeddings, batch, seq, this.weights.layers, null, keep)
    const lastHiddenState = allPositions ? tf.tidy(() => tf.reshape(normalize(last, this.weights.finalNorm), [batch, seq, d]) as tf.Tensor3D) : null
    embeddings.dispose()
    last.dispose()
    return { hiddenStates: kept, lastHiddenState }
  }

  dispose(): void {
    disposeVitWeights(this.weights)
  }
}

// Transformer pieces shared by BERT (post-LN) and ViT (pre-LN), for the frozen inference models
// (bert.ts, vit.ts) and the trainable ones (trainable.ts) alike. Training adds only optional parts
// — a LoRA term on a Dense, hooks after the attention probabilities and the two output
// projections, tensor factories that make trainable weights tf.Variables — so without them the
// inference path runs exactly the operations it always did.
//
// Activations are kept 2-D as [batch·seq, d] between layers so every Linear is one plain matMul.
// Weights are transposed once at load time (HF Linear stores [out, in]): on the wasm backend a
// matMul with transposeA/transposeB leaves the XNNPACK path and runs ~10× slower.
import * as tf from '@tensorflow/tfjs-core'
import { gelu, layerNorm } from '@iisan/tensor-ops'
import type { TensorSpec } from './checkpoint.ts'

export interface Dense {
  /** [in, out] — already transposed from HF's [out, in]. */
  w: tf.Tensor2D
  b: tf.Tensor1D | null
  /** A low-rank update (loralib): y = x·W + b + scale·(x·A)·B. */
  lora?: LoraParams
}

export interface LoraParams {
  /** [in, r] (loralib's lora_A is [r, in]) */
  a: tf.Tensor2D
  /** [r, out] (loralib's lora_B is [out, r]) */
  b: tf.Tensor2D
  /** α / r */
  scale: number
}

export interface LayerNormParams {
  gamma: tf.Tensor1D
  beta: tf.Tensor1D
  eps: number
}

export interface AttentionParams {
  query: Dense
  key: Dense
  value: Dense
  output: Dense
  numHeads: number
}

export interface FeedForwardParams {
  intermediate: Dense
  output: Dense
  act: 'gelu' | 'relu'
}

/** [rows, cols] row-major → [cols, rows]. Done in JS once per weight, not per forward. */
export function transposeMatrix(data: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(data.length)
  for (let r = 0; r < rows; r++) {
    const base = r * cols
    for (let c = 0; c < cols; c++) out[c * rows + r] = data[base + c]
  }
  return out
}

/**
 * Where a model's weights come from. A Checkpoint is one, and its weights become constant tensors;
 * a trainable backbone adds `make`, which decides per weight whether it becomes a tf.Variable.
 */
export interface WeightSource {
  /** The weight as float32, checked against the shape the config implies. */
  read(spec: TensorSpec): Float32Array
  /** The tensor holding HF weight `name`; `values` are already in our layout (dense weights [in, out]). */
  make?(name: string, values: Float32Array, shape: number[]): tf.Tensor
}

export function weightTensor<T extends tf.Tensor>(src: WeightSource, name: string, values: Float32Array, shape: number[]): T {
  return (src.make ? src.make(name, values, shape) : tf.tensor(values, shape)) as T
}

/** Loads an HF nn.Linear (`<prefix>.weight` [out, in], `<prefix>.bias` [out]). */
export function loadDense(src: WeightSource, prefix: string, inDim: number, outDim: number, bias = true): Dense {
  const w = src.read({ name: `${prefix}.weight`, shape: [outDim, inDim] })
  return {
    w: weightTensor(src, `${prefix}.weight`, transposeMatrix(w, outDim, inDim), [inDim, outDim]),
    b: bias ? weightTensor<tf.Tensor1D>(src, `${prefix}.bias`, src.read({ name: `${prefix}.bias`, shape: [outDim] }), [outDim]) : null,
  }
}

export function loadLayerNorm(src: WeightSource, prefix: string, dim: number, eps: number): LayerNormParams {
  return {
    gamma: weightTensor(src, `${prefix}.weight`, src.read({ name: `${prefix}.weight`, shape: [dim] }), [dim]),
    beta: weightTensor(src, `${prefix}.bias`, src.read({ name: `${prefix}.bias`, shape: [dim] }), [dim]),
    eps,
  }
}

export function denseSpecs(prefix: string, inDim: number, outDim: number, bias = true): { name: string; shape: number[] }[] {
  const specs = [{ name: `${prefix}.weight`, shape: [outDim, inDim] }]
  if (bias) specs.push({ name: `${prefix}.bias`, shape: [outDim] })
  return specs
}

export function layerNormSpecs(prefix: string, dim: number): { name: string; shape: number[] }[] {
  return [
    { name: `${prefix}.weight`, shape: [dim] },
    { name: `${prefix}.bias`, shape: [dim] },
  ]
}

export function disposeDense(d: Dense): void {
  d.w.dispose()
  d.b?.dispose()
}

export function disposeLayerNorm(p: LayerNormParams): void {
  p.gamma.dispose()
  p.beta.dispose()
}

export function dense(x: tf.Tensor2D, p: Dense): tf.Tensor2D {
  const y = tf.matMul(x, p.w) as tf.Tensor2D
  const biased = p.b ? tf.add<tf.Tensor2D>(y, p.b) : y
  if (!p.lora) return biased
  // scaled on the [rows, r] side: r ≪ out
  const low = tf.mul(tf.matMul(x, p.lora.a), p.lora.scale)
  return tf.add<tf.Tensor2D>(biased, tf.matMul(low, p.lora.b) as tf.Tensor2D)
}

/** torch.nn.LayerNorm over the last axis with a layer's own parameters. */
export function normalize<T extends tf.Tensor>(x: T, p: LayerNormParams): T {
  return layerNorm(x, p.gamma, p.beta, p.eps)
}

/**
 * What training inserts into a layer; each hook maps a tensor to one of the same shape. Absent
 * hooks cost nothing, which keeps inference exactly as it was.
 */
export interface LayerHooks {
  /** the attention probabilities [B, h, S, S], before they weight the values (attention dropout) */
  attentionProbs?(probs: tf.Tensor4D): tf.Tensor4D
  /** the attention block's output projection [rows, d], before the residual (hidden dropout, adapter) */
  attentionOutput?(h: tf.Tensor2D): tf.Tensor2D
  /** the feed-forward block's output projection [rows, d], before the residual */
  ffnOutput?(h: tf.Tensor2D): tf.Tensor2D
}

/**
 * Additive key mask [batch, 1, 1, seq] from a 1/0 attention mask. −1e9 rather than HF's
 * finfo.min: both give masked keys exactly zero weight after softmax's max-subtraction in
 * float32, and −1e9 cannot overflow to −inf when added to a score.
 */
export function additiveMask(attentionMask: Int32Array, batch: number, seq: number): tf.Tensor4D {
  const add = new Float32Array(batch * seq)
  for (let i = 0; i < add.length; i++) add[i] = attentionMask[i] ? 0 : -1e9
  return tf.tensor4d(add, [batch, 1, 1, seq])
}

/**
 * Multi-head self-attention including the output projection (no residual, no norm).
 * x: [batch·seq, d] → [batch·seq, d]. Heads are the contiguous d/heads slices of the projected
 * width, as in transformers' transpose_for_scores.
 */
export function selfAttention(x: tf.Tensor2D, batch: number, seq: number, p: AttentionParams, mask: tf.Tensor4D | null, hooks?: LayerHooks): tf.Tensor2D {
  const d = x.shape[1]
  const h = p.numHeads
  const dh = d / h
  const split = (t: tf.Tensor2D): tf.Tensor4D => tf.reshape(t, [batch, seq, h, dh])
  // [B, h, S, dh] for queries/values; keys go straight to [B, h, dh, S] so the score matMul needs
  // no transposeB.
  const q = tf.transpose(split(dense(x, p.query)), [0, 2, 1, 3])
  const kT = tf.transpose(split(dense(x, p.key)), [0, 2, 3, 1])
  const v = tf.transpose(split(dense(x, p.value)), [0, 2, 1, 3])
  // Batched (rank-4) matMuls miss wasm's XNNPACK path (~3 GFLOP/s, a third of ViT-base's time),
  // but splitting into per-head 2-D matMuls measured slower still (per-call setup), so keep them.
  let scores = tf.mul(tf.matMul(q, kT), 1 / Math.sqrt(dh))
  if (mask) scores = tf.add(scores, mask)
  const softmax = tf.softmax(scores) as tf.Tensor4D
  const probs = hooks?.attentionProbs ? hooks.attentionProbs(softmax) : softmax
  const context = tf.transpose(tf.matMul(probs, v), [0, 2, 1, 3])
  const out = dense(tf.reshape(context, [batch * seq, d]), p.output)
  return hooks?.attentionOutput ? hooks.attentionOutput(out) : out
}

/** Linear → activation → Linear. [rows, d] → [rows, d]. */
export function feedForward(x: tf.Tensor2D, p: FeedForwardParams, hooks?: LayerHooks): tf.Tensor2D {
  const hidden = dense(x, p.intermediate)
  const out = dense(p.act === 'gelu' ? gelu(hidden) : tf.relu(hidden), p.output)
  return hooks?.ffnOutput ? hooks.ffnOutput(out) : out
}

/** The four projections of one self-attention block (HF names vary between BERT and ViT). */
export interface AttentionNames {
  query: string
  key: string
  value: string
  output: string
}

export function loadAttention(src: WeightSource, names: AttentionNames, d: number, numHeads: number, qkvBias = true): AttentionParams {
  return {
    query: loadDense(src, names.query, d, d, qkvBias),
    key: loadDense(src, names.key, d, d, qkvBias),
    value: loadDense(src, names.value, d, d, qkvBias),
    output: loadDense(src, names.output, d, d),
    numHeads,
  }
}

export function disposeAttention(p: AttentionParams): void {
  for (const dn of [p.query, p.key, p.value, p.output]) disposeDense(dn)
}

/** Row 0 of each sequence: [batch·seq, d] → [batch, d]. */
export function firstToken(x: tf.Tensor2D, batch: number, seq: number): tf.Tensor2D {
  const d = x.shape[1]
  return tf.reshape(tf.slice(tf.reshape(x, [batch, seq, d]), [0, 0, 0], [batch, 1, d]), [batch, d])
}

export interface EncoderLayer {
  /**
   * 'post': BERT — x = LN1(x + attn(x)); x = LN2(x + ffn(x)).
   * 'pre':  ViT  — x = x + attn(LN1(x)); x = x + ffn(LN2(x)).
   */
  norm: 'post' | 'pre'
  attention: AttentionParams
  ln1: LayerNormParams
  ffn: FeedForwardParams
  ln2: LayerNormParams
}

export function encoderLayer(x: tf.Tensor2D, batch: number, seq: number, layer: EncoderLayer, mask: tf.Tensor4D | null, hooks?: LayerHooks): tf.Tensor2D {
  if (layer.norm === 'post') {
    const h = normalize(tf.add<tf.Tensor2D>(x, selfAttention(x, batch, seq, layer.attention, mask, hooks)), layer.ln1)
    return normalize(tf.add<tf.Tensor2D>(h, feedForward(h, layer.ffn, hooks)), layer.ln2)
  }
  const h = tf.add<tf.Tensor2D>(x, selfAttention(normalize(x, layer.ln1), batch, seq, layer.attention, mask, hooks))
  return tf.add<tf.Tensor2D>(h, feedForward(normalize(h, layer.ln2), layer.ffn, hooks))
}

export function disposeEncoderLayer(layer: EncoderLayer): void {
  disposeAttention(layer.attention)
  disposeLayerNorm(layer.ln1)
  disposeLayerNorm(layer.ln2)
  disposeDense(layer.ffn.intermediate)
  disposeDense(layer.ffn.output)
}

/**
 * Runs the embedding output through every layer and hands each hidden state (layer 0 = the
 * input, as HF output_hidden_states) to `keep`, which returns the part worth holding on to —
 * e.g. only the [CLS] rows, or the state itself; with `keep` null nothing but the last state is
 * returned. Each layer runs in its own tidy so a layer's intermediates (the [B, h, S, S] scores,
 * the 4d-wide FFN activations) are freed before the next — under a gradient tape too, since the
 * tape holds its own references to what the backward pass needs. `hooks(i)` is layer i's (0-based).
 * The caller owns `embeddings` and everything returned.
 */
export function runEncoder(
  embeddings: tf.Tensor2D,
  batch: number,
  seq: number,
  layers: EncoderLayer[],
  mask: tf.Tensor4D | null,
  keep: ((hidden: tf.Tensor2D, layer: number) => tf.Tensor) | null,
  hooks?: (layer: number) => LayerHooks | undefined,
): { kept: tf.Tensor[]; last: tf.Tensor2D } {
  const kept: tf.Tensor[] = keep ? [tf.tidy(() => keep(embeddings, 0))] : []
  let x = embeddings
  layers.forEach((layer, i) => {
    const [y, k] = tf.tidy(() => {
      const out = encoderLayer(x, batch, seq, layer, mask, hooks?.(i))
      return keep ? [out, keep(out, i + 1)] : [out]
    })
    if (x !== embeddings && !kept.includes(x)) x.dispose()
    if (k) kept.push(k)
    x = y as tf.Tensor2D
  })
  return { kept, last: x }
}

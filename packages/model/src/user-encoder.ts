// Sequential user encoder (docs/METHOD.md §4): SASRec's causal transformer over the item
// embeddings of a user's last T items. Post-LN blocks, LayerNorm eps 1e-6, ReLU feed-forward.
import * as tf from '@tensorflow/tfjs-core'
import { Params, dropout, layerNorm, linear } from './params.ts'

export interface UserEncoderConfig {
  /** D */
  embeddingDim: number
  numBlocks: number
  numHeads: number
  /** T */
  maxSeqLen: number
  dropout: number
}

export const PAPER_USER_ENCODER: UserEncoderConfig = { embeddingDim: 64, numBlocks: 2, numHeads: 2, maxSeqLen: 10, dropout: 0.1 }

const LN_EPS = 1e-6
const MASKED = -1e9

export class UserEncoder {
  constructor(
    readonly config: UserEncoderConfig,
    private readonly params: Params,
  ) {
    const D = config.embeddingDim
    if (D % config.numHeads !== 0) throw new Error(`embeddingDim ${D} is not divisible by numHeads ${config.numHeads}`)
    params.add('user.pos_emb', [config.maxSeqLen, D], 'xavier', 'recsys')
    params.add('user.ln_in.gamma', [D], 'ones', 'recsys')
    params.add('user.ln_in.beta', [D], 'zeros', 'recsys')
    for (let i = 0; i < config.numBlocks; i++) {
      const p = `user.block${i}`
      for (const w of ['wq', 'wk', 'wv', 'wo']) params.add(`${p}.attn.${w}`, [D, D], 'xavier', 'recsys')
      params.add(`${p}.ln_attn.gamma`, [D], 'ones', 'recsys')
      params.add(`${p}.ln_attn.beta`, [D], 'zeros', 'recsys')
      params.add(`${p}.ffn.w1`, [D, 4 * D], 'xavier', 'recsys')
      params.add(`${p}.ffn.b1`, [4 * D], 'zeros', 'recsys')
      params.add(`${p}.ffn.w2`, [4 * D, D], 'xavier', 'recsys')
      params.add(`${p}.ffn.b2`, [D], 'zeros', 'recsys')
      params.add(`${p}.ln_ffn.gamma`, [D], 'ones', 'recsys')
      params.add(`${p}.ln_ffn.beta`, [D], 'zeros', 'recsys')
    }
  }

  /**
   * itemEmb [B, T, D] (row t = the t-th item of the left-padded window), valid [B, T] (1 = real
   * item) → user states [B, T, D]; state t predicts the item at t + 1.
   */
  forward(itemEmb: tf.Tensor3D, valid: tf.Tensor2D, training: boolean): tf.Tensor3D {
    const [B, T, D] = itemEmb.shape
    const p = (name: string) => this.params.get(name)
    const drop = <X extends tf.Tensor>(t: X) => dropout(t, this.config.dropout, training, training ? this.params.nextDropoutSeed() : undefined)
    const mask = attentionMask(valid) // [B, 1, T, T]
    let x = tf.add(itemEmb, p('user.pos_emb')) as tf.Tensor3D
    x = drop(layerNorm(x, p('user.ln_in.gamma') as tf.Tensor1D, p('user.ln_in.beta') as tf.Tensor1D, LN_EPS))
    let h = tf.reshape(x, [B * T, D]) as tf.Tensor2D
    for (let i = 0; i < this.config.numBlocks; i++) {
      const b = `user.block${i}`
      const attended = this.selfAttention(h, mask, B, T, b, drop)
      h = layerNorm(tf.add(h, drop(attended)), p(`${b}.ln_attn.gamma`) as tf.Tensor1D, p(`${b}.ln_attn.beta`) as tf.Tensor1D, LN_EPS)
      const ffn = linear(tf.relu(linear(h, p(`${b}.ffn.w1`) as tf.Tensor2D, p(`${b}.ffn.b1`) as tf.Tensor1D)), p(`${b}.ffn.w2`) as tf.Tensor2D, p(`${b}.ffn.b2`) as tf.Tensor1D)
      h = layerNorm(tf.add(h, drop(ffn)), p(`${b}.ln_ffn.gamma`) as tf.Tensor1D, p(`${b}.ln_ffn.beta`) as tf.Tensor1D, LN_EPS)
    }
    return tf.reshape(h, [B, T, D])
  }

  /**
   * h [B·T, D] → multi-head self-attention output [B·T, D] (Q/K/V/O without bias). Dropout on the
   * attention probabilities, as the authors' SelfAttention does, besides the one on its output.
   */
  private selfAttention(h: tf.Tensor2D, mask: tf.Tensor4D, B: number, T: number, block: string, drop: <X extends tf.Tensor>(t: X) => X): tf.Tensor2D {
    const { embeddingDim: D, numHeads: H } = this.config
    const dh = D / H
    const heads = (w: string) =>
      tf.transpose(tf.reshape(tf.matMul(h, this.params.get(`${block}.attn.${w}`) as tf.Tensor2D), [B, T, H, dh]), [0, 2, 1, 3]) as tf.Tensor4D // [B, H, T, dh]
    const q = heads('wq')
    const k = heads('wk')
    const v = heads('wv')
    const scores = tf.add(tf.div(tf.matMul(q, k, false, true), Math.sqrt(dh)), mask) // [B, H, T, T]
    const context = tf.matMul(drop(tf.softmax(scores)), v) // [B, H, T, dh]
    const merged = tf.reshape(tf.transpose(context, [0, 2, 1, 3]), [B * T, D]) as tf.Tensor2D
    return tf.matMul(merged, this.params.get(`${block}.attn.wo`) as tf.Tensor2D)
  }
}

/** Additive mask [B, 1, T, T]: query i may attend key j iff j ≤ i (causal) and j is a real item. */
export function attentionMask(valid: tf.Tensor2D): tf.Tensor4D {
  const [B, T] = valid.shape
  const causal = tf.linalg.bandPart(tf.ones([T, T]), -1, 0) // lower triangle incl. diagonal
  const allowed = tf.mul(causal, tf.reshape(valid, [B, 1, 1, T])) // [B, 1, T, T]
  return tf.mul(tf.sub(1, allowed), MASKED) as tf.Tensor4D
}

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

/** γ, β of a LayerNorm over D. */
interface LayerNormWeights {
  gamma: tf.Variable<tf.Rank.R1>
  beta: tf.Variable<tf.Rank.R1>
}

/** One post-LN transformer block: attention (no biases, as the authors'), then a ReLU FFN (D → 4D → D). */
interface UserBlock {
  /** [D, D] each */
  wq: tf.Variable<tf.Rank.R2>
  wk: tf.Variable<tf.Rank.R2>
  wv: tf.Variable<tf.Rank.R2>
  wo: tf.Variable<tf.Rank.R2>
  lnAttn: LayerNormWeights
  /** [D, 4D], [4D] */
  w1: tf.Variable<tf.Rank.R2>
  b1: tf.Variable<tf.Rank.R1>
  /** [4D, D], [D] */
  w2: tf.Variable<tf.Rank.R2>
  b2: tf.Variable<tf.Rank.R1>
  lnFfn: LayerNormWeights
}

export class UserEncoder {
  /** [T, D] learned positions */
  private readonly posEmb: tf.Variable<tf.Rank.R2>
  private readonly lnIn: LayerNormWeights
  private readonly blocks: UserBlock[] = []

  constructor(
    readonly config: UserEncoderConfig,
    private readonly params: Params,
  ) {
    const D = config.embeddingDim
    if (D % config.numHeads !== 0) throw new Error(`embeddingDim ${D} is not divisible by numHeads ${config.numHeads}`)
    // Creation order fixes each parameter's initialisation seed: keep it.
    const layerNormAt = (name: string): LayerNormWeights => ({ gamma: params.vector(`${name}.gamma`, D, 'ones', 'recsys'), beta: params.vector(`${name}.beta`, D, 'zeros', 'recsys') })
    this.posEmb = params.matrix('user.pos_emb', [config.maxSeqLen, D], 'xavier', 'recsys')
    this.lnIn = layerNormAt('user.ln_in')
    for (let i = 0; i < config.numBlocks; i++) {
      const p = `user.block${i}`
      const [wq, wk, wv, wo] = (['wq', 'wk', 'wv', 'wo'] as const).map((w) => params.matrix(`${p}.attn.${w}`, [D, D], 'xavier', 'recsys'))
      const lnAttn = layerNormAt(`${p}.ln_attn`)
      const w1 = params.matrix(`${p}.ffn.w1`, [D, 4 * D], 'xavier', 'recsys')
      const b1 = params.vector(`${p}.ffn.b1`, 4 * D, 'zeros', 'recsys')
      const w2 = params.matrix(`${p}.ffn.w2`, [4 * D, D], 'xavier', 'recsys')
      const b2 = params.vector(`${p}.ffn.b2`, D, 'zeros', 'recsys')
      this.blocks.push({ wq, wk, wv, wo, lnAttn, w1, b1, w2, b2, lnFfn: layerNormAt(`${p}.ln_ffn`) })
    }
  }

  /**
   * itemEmb [B, T, D] (row t = the t-th item of the left-padded window), valid [B, T] (1 = real
   * item) → user states [B, T, D]; state t predicts the item at t + 1.
   */
  forward(itemEmb: tf.Tensor3D, valid: tf.Tensor2D, training: boolean): tf.Tensor3D {
    const [B, T, D] = itemEmb.shape
    const drop = <X extends tf.Tensor>(t: X) => dropout(t, this.config.dropout, training, training ? this.params.nextDropoutSeed() : undefined)
    const norm = <X extends tf.Tensor>(t: X, ln: LayerNormWeights) => layerNorm(t, ln.gamma, ln.beta, LN_EPS)
    const mask = attentionMask(valid) // [B, 1, T, T]
    const x = drop(norm(tf.add(itemEmb, this.posEmb) as tf.Tensor3D, this.lnIn))
    let h = tf.reshape(x, [B * T, D]) as tf.Tensor2D
    for (const block of this.blocks) {
      const attended = this.selfAttention(h, mask, B, T, block, drop)
      h = norm(tf.add(h, drop(attended)), block.lnAttn)
      const ffn = linear(tf.relu(linear(h, block.w1, block.b1)), block.w2, block.b2)
      h = norm(tf.add(h, drop(ffn)), block.lnFfn)
    }
    return tf.reshape(h, [B, T, D])
  }

  /**
   * h [B·T, D] → multi-head self-attention output [B·T, D] (Q/K/V/O without bias). Dropout on the
   * attention probabilities, as the authors' SelfAttention does, besides the one on its output.
   */
  private selfAttention(h: tf.Tensor2D, mask: tf.Tensor4D, B: number, T: number, block: UserBlock, drop: <X extends tf.Tensor>(t: X) => X): tf.Tensor2D {
    const { embeddingDim: D, numHeads: H } = this.config
    const dh = D / H
    const heads = (w: tf.Tensor2D) => tf.transpose(tf.reshape(tf.matMul(h, w), [B, T, H, dh]), [0, 2, 1, 3]) as tf.Tensor4D // [B, H, T, dh]
    const q = heads(block.wq)
    const k = heads(block.wk)
    const v = heads(block.wv)
    const scores = tf.add(tf.div(tf.matMul(q, k, false, true), Math.sqrt(dh)), mask) // [B, H, T, T]
    const context = tf.matMul(drop(tf.softmax(scores)), v) // [B, H, T, dh]
    const merged = tf.reshape(tf.transpose(context, [0, 2, 1, 3]), [B * T, D]) as tf.Tensor2D
    return tf.matMul(merged, block.wo)
  }
}

/** Additive mask [B, 1, T, T]: query i may attend key j iff j ≤ i (causal) and j is a real item. */
export function attentionMask(valid: tf.Tensor2D): tf.Tensor4D {
  const [B, T] = valid.shape
  const causal = tf.linalg.bandPart(tf.ones([T, T]), -1, 0) // lower triangle incl. diagonal
  const allowed = tf.mul(causal, tf.reshape(valid, [B, 1, 1, T])) // [B, 1, T, T]
  return tf.mul(tf.sub(1, allowed), MASKED) as tf.Tensor4D
}

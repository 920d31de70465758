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
export interface LayerNormWeights {
  gamma: tf.Variable<tf.Rank.R1>
  beta: tf.Variable<tf.Rank.R1>
}

/** One post-LN transformer block: attention (no biases, as the authors'), then a ReLU FFN (D → 4D → D). */
export interface UserBlock {
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

  /** The weights, read-only, for another runtime's copy of this forward (serving-onnx.ts). */
  get weights(): { posEmb: tf.Variable<tf.Rank.R2>; lnIn: LayerNormWeights; blocks: readonly UserBlock[]; lnEps: number; masked: number } {
    return { posEmb: this.posEmb, lnIn: this.lnIn, blocks: this.blocks, lnEps: LN_EPS, masked: MASKED }
  }

  /**
   * itemEmb [B, T, D] (row t = the t-th item of the left-padded window), valid [B, T] (1 = real
   * item) → user states [B, T, D]; state t predicts the item at t + 1.
   */
  forward(itemEmb: tf.Tensor3D, valid: tf.Tensor2D, training: boolean): tf.Tensor3D {
    const [B, T, D] = itemEmb.shape
    const drop = <X extends tf.Tensor>(t: X) => dropout(t, this.config.dropout, training, training ? this.params.nextDropoutSeed() : undefined)
    const mask = attentionMask(valid) // [B, 1, T, T]
    let h = this.embed(itemEmb, drop)
    for (const block of this.blocks) h = this.block(h, h, mask, B, T, block, drop)
    return tf.reshape(h, [B, T, D])
  }

  /**
   * Inference (no dropout): the state after the last position only, [B, D]. The last block needs
   * keys and values at every position but queries, attention output and FFN at the last one alone:
   * the same numbers as forward(...)[:, T−1] for a fraction of the last block's work.
   */
  lastStates(itemEmb: tf.Tensor3D, valid: tf.Tensor2D): tf.Tensor2D {
    const [B, T, D] = itemEmb.shape
    const keep = <X extends tf.Tensor>(t: X) => t
    const mask = attentionMask(valid) // [B, 1, T, T]
    let h = this.embed(itemEmb, keep)
    const last = this.blocks.length - 1
    this.blocks.slice(0, last).forEach((block) => (h = this.block(h, h, mask, B, T, block, keep)))
    const lastRows = tf.reshape(tf.slice(tf.reshape(h, [B, T, D]), [0, T - 1, 0], [B, 1, D]), [B, D]) as tf.Tensor2D
    const lastMask = tf.slice(mask, [0, 0, T - 1, 0], [B, 1, 1, T]) as tf.Tensor4D // [B, 1, 1, T]
    return this.block(lastRows, h, lastMask, B, T, this.blocks[last], keep)
  }

  /** x [B, T, D] → LN(x + positions), dropped out: the first block's input [B·T, D]. */
  private embed(itemEmb: tf.Tensor3D, drop: <X extends tf.Tensor>(t: X) => X): tf.Tensor2D {
    const [B, T, D] = itemEmb.shape
    return tf.reshape(drop(this.norm(tf.add(itemEmb, this.posEmb) as tf.Tensor3D, this.lnIn)), [B * T, D]) as tf.Tensor2D
  }

  /**
   * One post-LN block for the query rows `x` [B·Q, D] (Q = T, or 1 for the last position) over the
   * keys and values of `h` [B·T, D] → [B·Q, D].
   */
  private block(x: tf.Tensor2D, h: tf.Tensor2D, mask: tf.Tensor4D, B: number, T: number, block: UserBlock, drop: <X extends tf.Tensor>(t: X) => X): tf.Tensor2D {
    const attended = this.selfAttention(x, h, mask, B, T, block, drop)
    const y = this.norm(tf.add(x, drop(attended)) as tf.Tensor2D, block.lnAttn)
    const ffn = linear(tf.relu(linear(y, block.w1, block.b1)), block.w2, block.b2)
    return this.norm(tf.add(y, drop(ffn)) as tf.Tensor2D, block.lnFfn)
  }

  private norm<X extends tf.Tensor>(t: X, ln: LayerNormWeights): X {
    return layerNorm(t, ln.gamma, ln.beta, LN_EPS)
  }

  /**
   * Queries from x [B·Q, D], keys and values from h [B·T, D] → multi-head self-attention output
   * [B·Q, D] (Q/K/V/O without bias). Dropout on the attention probabilities, as the authors'
   * SelfAttention does, besides the one on its output.
   */
  private selfAttention(x: tf.Tensor2D, h: tf.Tensor2D, mask: tf.Tensor4D, B: number, T: number, block: UserBlock, drop: <X extends tf.Tensor>(t: X) => X): tf.Tensor2D {
    const { embeddingDim: D, numHeads: H } = this.config
    const dh = D / H
    const Q = x.shape[0] / B
    const heads = (rows: tf.Tensor2D, w: tf.Tensor2D, n: number) => tf.transpose(tf.reshape(tf.matMul(rows, w), [B, n, H, dh]), [0, 2, 1, 3]) as tf.Tensor4D // [B, H, n, dh]
    const q = heads(x, block.wq, Q)
    const k = heads(h, block.wk, T)
    const v = heads(h, block.wv, T)
    const scores = tf.add(tf.div(tf.matMul(q, k, false, true), Math.sqrt(dh)), mask) // [B, H, Q, T]
    const context = tf.matMul(drop(tf.softmax(scores)), v) // [B, H, Q, dh]
    const merged = tf.reshape(tf.transpose(context, [0, 2, 1, 3]), [B * Q, D]) as tf.Tensor2D
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

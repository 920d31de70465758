// Tensor functions both the backbones (BERT, ViT) and the recommender (SAN, user encoder) use,
// defined once so the two packages cannot drift apart numerically. The forms are the ones the
// backbones' fidelity tests were run with against transformers: changing an operation here moves
// every backbone hidden state by float32 rounding, and with it states already in the cache.
import * as tf from '@tensorflow/tfjs-core'

/**
 * LayerNorm over the last axis with the biased variance (torch.nn.LayerNorm): x, gamma, beta
 * broadcast as [..., d], [d], [d]. Written as ops, so autodiff would differentiate it; the
 * trained paths go through `layerNorm`, whose forward is this same expression.
 */
export function layerNormExpression<T extends tf.Tensor>(x: T, gamma: tf.Tensor, beta: tf.Tensor, eps: number): T {
  const { mean, variance } = tf.moments(x, -1, true)
  const normed = tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, eps)))
  return tf.add(tf.mul(normed, gamma), beta) as T
}

/** The exact (erf) GELU as ops — transformers' "gelu" and torch.nn.GELU() — not the tanh approximation. */
export function geluExpression<T extends tf.Tensor>(x: T): T {
  return tf.mul(tf.mul(x, 0.5), tf.add(tf.erf(tf.mul(x, Math.SQRT1_2)), 1)) as T
}

// Hand-written gradients. The forwards are the expressions above, unchanged, so inference (and
// every cached state) is bit-for-bit what it was; only what a gradient tape keeps changes.
// Autodiff kept every intermediate of the expression until the end of the step: for GELU four
// tensors the size of the FFN's [rows, 4d] hidden layer per layer, which at BERT-base and
// ViT-B/16 shapes is the largest activation of a fine-tuning step. These keep two (GELU: x and
// 1 + erf(x/√2), so the backward pass need not evaluate erf again) or x̂ and 1/σ (LayerNorm).

const geluWithGradient = tf.customGrad(((x: tf.Tensor, save: tf.GradSaveFunc) => {
  // geluExpression's ops in its order, with 1 + erf(x/√2) = 2·Φ(x) kept for the backward pass
  const twoCdf = tf.add(tf.erf(tf.mul(x, Math.SQRT1_2)), 1)
  save([x, twoCdf])
  return {
    value: tf.mul(tf.mul(x, 0.5), twoCdf),
    // d/dx x·Φ(x) = Φ(x) + x·φ(x)
    gradFunc: (dy: tf.Tensor, [xs, twoCdfs]: tf.Tensor[]) =>
      tf.tidy(() => {
        const xPdf = tf.mul(xs!, tf.mul(tf.exp(tf.mul(tf.square(xs!), -0.5)), 1 / Math.sqrt(2 * Math.PI)))
        return tf.mul(dy, tf.add(tf.mul(twoCdfs!, 0.5), xPdf))
      }),
  }
}) as never) as unknown as (x: tf.Tensor) => tf.Tensor

/** The exact (erf) GELU, with a gradient that keeps x and 1 + erf(x/√2) on the tape. */
export function gelu<T extends tf.Tensor>(x: T): T {
  return geluWithGradient(x) as T
}

/**
 * LayerNorm (as `layerNormExpression`) with a gradient that keeps x̂ and 1/σ on the tape:
 *   dx = (1/σ)·(g − mean(g) − x̂·mean(g·x̂)),  g = dy·γ;  dγ = Σ dy·x̂;  dβ = Σ dy.
 */
export function layerNorm<T extends tf.Tensor>(x: T, gamma: tf.Tensor, beta: tf.Tensor, eps: number): T {
  // eps is a number, and customGrad takes tensors only: the op closes over it
  const op = tf.customGrad(((xIn: tf.Tensor, gammaIn: tf.Tensor, betaIn: tf.Tensor, save: tf.GradSaveFunc) => {
    const { mean, variance } = tf.moments(xIn, -1, true)
    const invStd = tf.rsqrt(tf.add(variance, eps)) // [..., 1]
    const normed = tf.mul(tf.sub(xIn, mean), invStd) // x̂ [..., d]
    save([normed, invStd, gammaIn])
    return {
      value: tf.add(tf.mul(normed, gammaIn), betaIn),
      gradFunc: (dy: tf.Tensor, [xHat, inv, g]: tf.Tensor[]) =>
        tf.tidy(() => {
          const d = dy.shape[dy.rank - 1]!
          const dxHat = tf.mul(dy, g!)
          const dx = tf.mul(inv!, tf.sub(tf.sub(dxHat, tf.mean(dxHat, -1, true)), tf.mul(xHat!, tf.mean(tf.mul(dxHat, xHat!), -1, true))))
          const rows = (t: tf.Tensor): tf.Tensor2D => tf.reshape(t, [-1, d])
          return [dx, tf.sum(rows(tf.mul(dy, xHat!)), 0), tf.sum(rows(dy), 0)]
        }),
    }
  }) as never) as unknown as (x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor) => tf.Tensor
  return op(x, gamma, beta) as T
}

/**
 * Runs `compute` in a tidy scope and reads its float32 result back. The typed array must not be
 * what the tidy returns: tfjs would walk every element of it looking for tensors to keep, which
 * costs seconds on a score matrix or a catalogue of embeddings.
 */
export function readBack(compute: () => tf.Tensor): Float32Array {
  const result = tf.tidy(compute)
  try {
    return result.dataSync() as Float32Array
  } finally {
    result.dispose()
  }
}

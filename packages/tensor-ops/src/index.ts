// Tensor functions both the backbones (BERT, ViT) and the recommender (SAN, user encoder) use,
// defined once so the two packages cannot drift apart numerically. The forms are the ones the
// backbones' fidelity tests were run with against transformers: changing an operation here moves
// every backbone hidden state by float32 rounding, and with it states already in the cache.
import * as tf from '@tensorflow/tfjs-core'

/**
 * LayerNorm over the last axis with the biased variance (torch.nn.LayerNorm): x, gamma, beta
 * broadcast as [..., d], [d], [d].
 */
export function layerNorm<T extends tf.Tensor>(x: T, gamma: tf.Tensor, beta: tf.Tensor, eps: number): T {
  const { mean, variance } = tf.moments(x, -1, true)
  const normed = tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, eps)))
  return tf.add(tf.mul(normed, gamma), beta) as T
}

/** The exact (erf) GELU — transformers' "gelu" and torch.nn.GELU() — not the tanh approximation. */
export function gelu<T extends tf.Tensor>(x: T): T {
  return tf.mul(tf.mul(x, 0.5), tf.add(tf.erf(tf.mul(x, Math.SQRT1_2)), 1)) as T
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

// Ops with hand-written gradients, for the side network's hot paths: each computes the same
// function and gradients as its layer-by-layer form (test/iisan.test.ts checks both against
// autodiff), but keeps fewer tensors on the tape or does fewer FLOPs than autodiff would.
import * as tf from '@tensorflow/tfjs-core'

/**
 * The ReLU SANB as one differentiable op: the same function and gradients as the layer-by-layer
 * form, but the tape keeps only x and the [n, r] hidden activations per block, and the backward
 * pass frees its temporaries at once. Autodiff kept ≈ 6 [n, d] tensors per block until the end of
 * the step (21 blocks: ~0.4 GB at n ≈ 280, d = 768).
 */
export const sanbRelu = tf.customGrad(((x: tf.Tensor2D, wDown: tf.Tensor2D, bDown: tf.Tensor1D, wUp: tf.Tensor2D, bUp: tf.Tensor1D, save: tf.GradSaveFunc) => {
  // fused matMul + bias + ReLU: one wasm kernel instead of three
  const hidden = tf.fused.matMul({ a: x, b: wDown, bias: bDown, activation: 'relu' }) as tf.Tensor2D // [n, r]
  const value = tf.tidy(() => tf.add(x, tf.add(tf.matMul(hidden, wUp), bUp))) as tf.Tensor2D
  save([x, hidden, wDown, wUp])
  return {
    value,
    gradFunc: (dy: tf.Tensor2D, saved: tf.Tensor[]) =>
      tf.tidy(() => {
        const [xs, h, wD, wU] = saved as [tf.Tensor2D, tf.Tensor2D, tf.Tensor2D, tf.Tensor2D]
        const dHidden = tf.mul(tf.matMul(dy, tf.transpose(wU)), tf.step(h)) // [n, r], through the ReLU
        return [
          tf.add(dy, tf.matMul(dHidden, tf.transpose(wD))), // dx: residual + bottleneck path
          tf.matMul(tf.transpose(xs), dHidden), // dW_down [d, r]
          tf.sum(dHidden, 0), // db_down
          tf.matMul(tf.transpose(h), dy), // dW_up [r, d]
          tf.sum(dy, 0), // db_up
        ]
      }),
  }
}) as never) as unknown as (x: tf.Tensor2D, wDown: tf.Tensor2D, bDown: tf.Tensor1D, wUp: tf.Tensor2D, bUp: tf.Tensor1D) => tf.Tensor2D

/**
 * y = (x·W_F + b_F)·W_P + b_P for x [n, d], W_F [d, d], W_P [d, D], D ≪ d — the same function
 * and the same gradients as two linear layers, but associated so that no n×d×d product is ever
 * formed: forward x·(W_F·W_P); backward through G = xᵀ·dy [d, D]. Per step and tower this is
 * ≈ 0.3 GFLOP instead of ≈ 1 GFLOP at n ≈ 300, d = 768, D = 64.
 */
export const linearPair = tf.customGrad(((x: tf.Tensor2D, wF: tf.Tensor2D, bF: tf.Tensor1D, wP: tf.Tensor2D, bP: tf.Tensor1D, save: tf.GradSaveFunc) => {
  const M = tf.matMul(wF, wP) // [d, D]
  const c = tf.add(tf.matMul(tf.reshape(bF, [1, -1]), wP), bP) // [1, D]
  save([x, wF, bF, wP, M])
  return {
    value: tf.add(tf.matMul(x, M), c) as tf.Tensor2D,
    gradFunc: (dy: tf.Tensor2D, saved: tf.Tensor[]) => tf.tidy(() => {
      const [xs, wFs, bFs, wPs, Ms] = saved as [tf.Tensor2D, tf.Tensor2D, tf.Tensor1D, tf.Tensor2D, tf.Tensor2D]
      const wPT = tf.transpose(wPs) // [D, d]
      const G = tf.matMul(tf.transpose(xs), dy) // xᵀ·dy [d, D]
      const s = tf.sum(dy, 0, true) // [1, D]
      const dWF = tf.matMul(G, wPT) // [d, d]
      const dWP = tf.add(tf.matMul(tf.transpose(wFs), G), tf.matMul(tf.reshape(bFs, [-1, 1]), s)) // [d, D]
      const dbF = tf.reshape(tf.matMul(s, wPT), [-1]) // [d]
      const dx = tf.matMul(dy, tf.transpose(Ms)) // [n, d]
      return [dx, dWF, dbF, dWP, tf.reshape(s, [-1])]
    }),
  }
}) as never) as unknown as (x: tf.Tensor2D, wF: tf.Tensor2D, bF: tf.Tensor1D, wP: tf.Tensor2D, bP: tf.Tensor1D) => tf.Tensor2D

// Side adapted network (docs/METHOD.md §3). The SAN never touches a backbone: it reads the cached
// per-layer [CLS] states H_m[l] and learns small adapters beside them.
//
//   SANB(x)   = x + W_up · act(W_down · x + b_down) + b_up           (d → r → d)
//   g_k       = sigmoid(θ_k / 0.1), θ_k = 0 at init (g = 0.5)
//   intra_m:  prev_k = SANB_m,k( g_m,k · H_m[s_k] + (1 − g_m,k) · prev_{k−1} ),  prev_0 = 0
//   inter:    prev_k = SANB_x,k( prev_{k−1} + g_x,k · H_image[s_k] + (1 − g_x,k) · H_text[s_k] )
//   e_m       = P_m(F_m(prev_K))       F: d → d,  P: d → D
import * as tf from '@tensorflow/tfjs-core'
import { Params, linear, type ParamGroup } from './params.ts'

export type SanActivation = 'relu' | 'gelu'

export const GATE_TEMPERATURE = 0.1
const SANB_INIT_STD = 0.01

/** One SANB block's parameters under `name`. */
export function addSanb(params: Params, name: string, d: number, r: number, group: ParamGroup): void {
  params.add(`${name}.down.w`, [d, r], { normalStd: SANB_INIT_STD }, group)
  params.add(`${name}.down.b`, [r], 'zeros', group)
  params.add(`${name}.up.w`, [r, d], { normalStd: SANB_INIT_STD }, group)
  params.add(`${name}.up.b`, [d], 'zeros', group)
}

/** x [n, d] → x + up(act(down(x))) [n, d]. */
export function sanb(params: Params, name: string, x: tf.Tensor2D, activation: SanActivation): tf.Tensor2D {
  const down = params.get(`${name}.down.w`) as tf.Tensor2D
  const downBias = params.get(`${name}.down.b`) as tf.Tensor1D
  const up = params.get(`${name}.up.w`) as tf.Tensor2D
  const upBias = params.get(`${name}.up.b`) as tf.Tensor1D
  if (activation === 'relu') return sanbRelu(x, down, downBias, up, upBias)
  return tf.add(x, linear(gelu(linear(x, down, downBias)), up, upBias)) as tf.Tensor2D
}

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

/** Exact (erf) GELU, as torch.nn.GELU(). */
export function gelu<T extends tf.Tensor>(x: T): T {
  return tf.mul(tf.mul(x, 0.5), tf.add(1, tf.erf(tf.div(x, Math.SQRT2)))) as T
}

/** θ [K] → g [K] = sigmoid(θ / 0.1). */
export function gates(theta: tf.Tensor1D): tf.Tensor1D {
  return tf.sigmoid(tf.div(theta, GATE_TEMPERATURE)) as tf.Tensor1D
}

/** Scalar k of a [K] tensor, kept in the graph (so the gate gets its gradient). */
function gateAt(g: tf.Tensor1D, k: number): tf.Tensor {
  return tf.slice(g, [k], [1])
}

export interface TowerSpec {
  name: string
  /** width of the states the tower reads (d) */
  width: number
  numSideLayers: number
  reduction: number
  /** the learning-rate group of each part (the authors' name rules put each tower's elsewhere) */
  groups: { gate: ParamGroup; sanbs: ParamGroup; F: ParamGroup }
  /** P as the authors initialise it: xavier for the image tower (ViT's classifier), PyTorch's default otherwise */
  xavierP?: boolean
}

/** P (d → D) is always a "recsys" parameter in the authors' grouping. */
export function addTower(params: Params, spec: TowerSpec, embeddingDim: number): void {
  const { name, width: d, groups } = spec
  params.add(`${name}.gate`, [spec.numSideLayers], 'zeros', groups.gate)
  for (let k = 0; k < spec.numSideLayers; k++) addSanb(params, `${name}.sanb${k}`, d, spec.reduction, groups.sanbs)
  params.add(`${name}.F.w`, [d, d], { torchLinear: d }, groups.F)
  params.add(`${name}.F.b`, [d], { torchLinear: d }, groups.F)
  params.add(`${name}.P.w`, [d, embeddingDim], spec.xavierP ? 'xavier' : { torchLinear: d }, 'recsys')
  params.add(`${name}.P.b`, [embeddingDim], spec.xavierP ? 'zeros' : { torchLinear: d }, 'recsys')
}

/** Intra-modal tower: states[k] = H_m[s_k] [n, d] → e_m [n, D]. */
export function intraTower(params: Params, name: string, states: tf.Tensor2D[], activation: SanActivation): tf.Tensor2D {
  const g = gates(params.get(`${name}.gate`) as tf.Tensor1D)
  let prev: tf.Tensor2D | undefined
  states.forEach((h, k) => {
    // g·H + (1 − g)·prev, written as prev + g·(H − prev): two ops fewer per block
    const mixed = prev ? (tf.add(prev, tf.mul(gateAt(g, k), tf.sub(h, prev))) as tf.Tensor2D) : (tf.mul(gateAt(g, k), h) as tf.Tensor2D)
    prev = sanb(params, `${name}.sanb${k}`, mixed, activation)
  })
  return project(params, name, prev!)
}

/** Inter-modal tower: text[k], image[k] [n, d] (same width) → e_inter [n, D]. */
export function interTower(params: Params, name: string, text: tf.Tensor2D[], image: tf.Tensor2D[], activation: SanActivation): tf.Tensor2D {
  const g = gates(params.get(`${name}.gate`) as tf.Tensor1D)
  let prev: tf.Tensor2D | undefined
  text.forEach((ht, k) => {
    // g·H_image + (1 − g)·H_text = H_text + g·(H_image − H_text)
    const mixed = tf.add(ht, tf.mul(gateAt(g, k), tf.sub(image[k], ht))) as tf.Tensor2D
    prev = sanb(params, `${name}.sanb${k}`, prev ? (tf.add(prev, mixed) as tf.Tensor2D) : mixed, activation)
  })
  return project(params, name, prev!)
}

/** P(F(x)): d → d → D. */
function project(params: Params, name: string, x: tf.Tensor2D): tf.Tensor2D {
  return linearPair(
    x,
    params.get(`${name}.F.w`) as tf.Tensor2D,
    params.get(`${name}.F.b`) as tf.Tensor1D,
    params.get(`${name}.P.w`) as tf.Tensor2D,
    params.get(`${name}.P.b`) as tf.Tensor1D,
  )
}

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

/**
 * Side layers at equal relative depth for a backbone of `numLayers` layers, given the layers
 * chosen for a reference depth (docs/METHOD.md §3: different depths pick side layers per backbone).
 */
export function sideLayersFor(reference: number[], referenceLayers: number, numLayers: number): number[] {
  if (referenceLayers === numLayers) return reference
  return reference.map((l) => Math.round((l / referenceLayers) * numLayers))
}

/** Layer 0 plus every other layer: {0, 2, …, 12} for L = 12 (K = 7); the last layer always joins. */
export function defaultSideLayers(numLayers: number): number[] {
  const layers: number[] = []
  for (let l = 0; l <= numLayers; l += 2) layers.push(l)
  if (layers[layers.length - 1] !== numLayers) layers.push(numLayers)
  return layers
}

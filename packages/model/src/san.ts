// Side adapted network (docs/METHOD.md §3). The SAN never touches a backbone: it reads the cached
// per-layer [CLS] states H_m[l] and learns small adapters beside them.
//
//   SANB(x)   = x + W_up · act(W_down · x + b_down) + b_up           (d → r → d)
//   g_k       = sigmoid(θ_k / 0.1), θ_k = 0 at init (g = 0.5)
//   intra_m:  prev_k = SANB_m,k( g_m,k · H_m[s_k] + (1 − g_m,k) · prev_{k−1} ),  prev_0 = 0
//   inter:    prev_k = SANB_x,k( prev_{k−1} + g_x,k · H_image[s_k] + (1 − g_x,k) · H_text[s_k] )
//   e_m       = P_m(F_m(prev_K))       F: d → d,  P: d → D
import * as tf from '@tensorflow/tfjs-core'
import { gelu } from '@iisan/tensor-ops'
import { linearPair, sanbRelu } from './custom-ops.ts'
import { Params, linear, type Initialiser, type ParamGroup } from './params.ts'

// importers of the SAN have always found these here
export { gelu, linearPair, sanbRelu }

export type SanActivation = 'relu' | 'gelu'

export const GATE_TEMPERATURE = 0.1
const SANB_INIT_STD = 0.01

type Matrix = tf.Variable<tf.Rank.R2>
type Vector = tf.Variable<tf.Rank.R1>

/** A dense layer's W [in, out] and b [out] (nn.Linear's weight, stored transposed). */
export interface LinearWeights {
  w: Matrix
  b: Vector
}

/**
 * `${name}.w` [in, out], then `${name}.b` [out]: one initialiser for both (nn.Linear's default),
 * or one each.
 */
export function addLinear(params: Params, name: string, [inDim, outDim]: [number, number], init: Initialiser | { w: Initialiser; b: Initialiser }, group: ParamGroup): LinearWeights {
  const { w, b } = typeof init === 'object' && 'w' in init ? init : { w: init, b: init }
  return { w: params.matrix(`${name}.w`, [inDim, outDim], w, group), b: params.vector(`${name}.b`, outDim, b, group) }
}

/** One SANB (d → r → d). */
export interface Sanb {
  /** W_down [d, r] */
  down: Matrix
  /** b_down [r] */
  downBias: Vector
  /** W_up [r, d] */
  up: Matrix
  /** b_up [d] */
  upBias: Vector
}

/** One SANB block's parameters under `name`. */
export function addSanb(params: Params, name: string, d: number, r: number, group: ParamGroup): Sanb {
  // creation order fixes each parameter's initialisation seed: keep it
  const down = params.matrix(`${name}.down.w`, [d, r], { normalStd: SANB_INIT_STD }, group)
  const downBias = params.vector(`${name}.down.b`, r, 'zeros', group)
  const up = params.matrix(`${name}.up.w`, [r, d], { normalStd: SANB_INIT_STD }, group)
  const upBias = params.vector(`${name}.up.b`, d, 'zeros', group)
  return { down, downBias, up, upBias }
}

/** x [n, d] → x + up(act(down(x))) [n, d]. */
export function sanb({ down, downBias, up, upBias }: Sanb, x: tf.Tensor2D, activation: SanActivation): tf.Tensor2D {
  if (activation === 'relu') return sanbRelu(x, down, downBias, up, upBias)
  return tf.add(x, linear(gelu(linear(x, down, downBias)), up, upBias)) as tf.Tensor2D
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

/** One tower of the SAN: K gates, K SANBs, then F and P. */
export interface SanTower {
  /** θ [K]; g = sigmoid(θ / 0.1) */
  gate: Vector
  /** SANB_1..SANB_K, each d → r → d */
  sanbs: Sanb[]
  /** F: d → d */
  F: LinearWeights
  /** P: d → D */
  P: LinearWeights
}

/** P (d → D) is always a "recsys" parameter in the authors' grouping. */
export function addTower(params: Params, spec: TowerSpec, embeddingDim: number): SanTower {
  const { name, width: d, groups } = spec
  // creation order fixes each parameter's initialisation seed: keep it
  const gate = params.vector(`${name}.gate`, spec.numSideLayers, 'zeros', groups.gate)
  const sanbs = Array.from({ length: spec.numSideLayers }, (_, k) => addSanb(params, `${name}.sanb${k}`, d, spec.reduction, groups.sanbs))
  const F = addLinear(params, `${name}.F`, [d, d], { torchLinear: d }, groups.F)
  const P = addLinear(params, `${name}.P`, [d, embeddingDim], spec.xavierP ? { w: 'xavier', b: 'zeros' } : { torchLinear: d }, 'recsys')
  return { gate, sanbs, F, P }
}

/** Intra-modal tower: states[k] = H_m[s_k] [n, d] → e_m [n, D]. */
export function intraTower(tower: SanTower, states: tf.Tensor2D[], activation: SanActivation): tf.Tensor2D {
  const g = gates(tower.gate)
  let prev: tf.Tensor2D | undefined
  states.forEach((h, k) => {
    // g·H + (1 − g)·prev, written as prev + g·(H − prev): two ops fewer per block
    const mixed = prev ? (tf.add(prev, tf.mul(gateAt(g, k), tf.sub(h, prev))) as tf.Tensor2D) : (tf.mul(gateAt(g, k), h) as tf.Tensor2D)
    prev = sanb(tower.sanbs[k], mixed, activation)
  })
  return project(tower, prev!)
}

/** Inter-modal tower: text[k], image[k] [n, d] (same width) → e_inter [n, D]. */
export function interTower(tower: SanTower, text: tf.Tensor2D[], image: tf.Tensor2D[], activation: SanActivation): tf.Tensor2D {
  const g = gates(tower.gate)
  let prev: tf.Tensor2D | undefined
  text.forEach((ht, k) => {
    // g·H_image + (1 − g)·H_text = H_text + g·(H_image − H_text)
    const mixed = tf.add(ht, tf.mul(gateAt(g, k), tf.sub(image[k], ht))) as tf.Tensor2D
    prev = sanb(tower.sanbs[k], prev ? (tf.add(prev, mixed) as tf.Tensor2D) : mixed, activation)
  })
  return project(tower, prev!)
}

/** P(F(x)): d → d → D. */
function project({ F, P }: SanTower, x: tf.Tensor2D): tf.Tensor2D {
  return linearPair(x, F.w, F.b, P.w, P.b)
}

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

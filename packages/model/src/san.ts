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
import { Params, linear, type ParamGroup } from './params.ts'

// importers of the SAN have always found these here
export { gelu, linearPair, sanbRelu }

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

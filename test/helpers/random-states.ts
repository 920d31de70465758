// Small random IISAN inputs shared by the SAN tests: cached states for items 1..items and a
// protocol of random sequences over them.
import { buildProtocol, mulberry32, tf, type ModalityStates, type SequentialRecommender } from '@iisan/model'

/** Random [L+1, d] rows in [-1, 1) for items 1..items; `absent` items lack the modality. */
export function randomModalityStates(items: number, L: number, d: number, seed: number, absent: (item: number) => boolean): ModalityStates {
  const r = mulberry32(seed)
  const rowOf = new Int32Array(items + 1).fill(-1)
  let rows = 0
  for (let item = 1; item <= items; item++) if (!absent(item)) rowOf[item] = rows++
  return { numLayers: L, width: d, rowOf, data: Float32Array.from({ length: rows * (L + 1) * d }, () => r() * 2 - 1) }
}

/** 40 users with 7 random interactions each over items 1..items; windows of T = 5. */
export function randomProtocol(items: number, seed: number) {
  const random = mulberry32(seed)
  const users = Array.from({ length: 40 }, (_, u) => ({ key: `u${u}`, items: Array.from({ length: 7 }, () => String(1 + Math.floor(random() * items))) }))
  return buildProtocol(users, Array.from({ length: items }, (_, i) => String(i + 1)), { maxSeqLen: 5, minInteractions: 5 })
}

/** Every parameter of `model` away from its initialisation (gates θ = 0, zero biases, tiny SANBs): uniform in ±0.3. */
export function perturbParams(model: SequentialRecommender, seed: number): void {
  const r = mulberry32(seed)
  for (const [, v] of model.params.entries()) v.assign(tf.tensor(Float32Array.from({ length: v.size }, () => (r() * 2 - 1) * 0.3), v.shape))
}

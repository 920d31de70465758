// Random base-shaped cached states (L = 12, d = 768) for benchmarks: the cost of a step does not
// depend on the values. Stored as the training loaders keep them: float16, and only the SAN's side
// layers (the worker's cache loader drops the other layers as it streams).
import { defaultSideLayers, mulberry32, type ModalityStates } from '@iisan/model'
import { float32ToFloat16 } from '@iisan/safetensors'

export function randomBaseStates(numItems: number, seed: number, numLayers = 12, width = 768, layers = defaultSideLayers(numLayers)): ModalityStates {
  const random = mulberry32(seed)
  const perItem = layers.length * width
  const data = new Uint16Array(numItems * perItem)
  const chunk = new Float32Array(perItem * 64)
  for (let start = 0; start < data.length; start += chunk.length) {
    const n = Math.min(chunk.length, data.length - start)
    for (let i = 0; i < n; i++) chunk[i] = random() * 2 - 1
    data.set(float32ToFloat16(chunk.subarray(0, n)), start)
  }
  return { numLayers, width, data, layers, rowOf: Int32Array.from({ length: numItems + 1 }, (_, i) => i - 1) }
}

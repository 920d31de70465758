// Random base-shaped cached states (L = 12, d = 768) for benchmarks: the cost of a step does not
// depend on the values. Stored as the training loaders keep them: float16, only the SAN's side
// layers (the worker's cache loader drops the other layers as it streams), and by default in a
// rows file as the worker's loader writes them (`memory`: one array, as before issue 12's change).
import { defaultSideLayers, mulberry32, type ModalityStates } from '@iisan/model'
import { float32ToFloat16 } from '@iisan/safetensors'
import { Float16RowsFile } from '@iisan/safetensors/float16-rows-file'

export const STATES_PLACES = ['file', 'memory'] as const
export type StatesPlace = (typeof STATES_PLACES)[number]

const ROWS_AT_ONCE = 64

export interface RandomStatesShape {
  /** L (default 12: BERT-base and ViT-B) */
  numLayers?: number
  /** d (default 768) */
  width?: number
  /** the layers kept (default: the SAN's side layers) */
  layers?: number[]
  place?: StatesPlace
}

export function randomBaseStates(numItems: number, seed: number, shape: RandomStatesShape = {}): ModalityStates {
  const { numLayers = 12, width = 768, place = 'file' } = shape
  const layers = shape.layers ?? defaultSideLayers(numLayers)
  const random = mulberry32(seed)
  const perItem = layers.length * width
  const data = place === 'file' ? Float16RowsFile.create(numItems, perItem) : new Uint16Array(numItems * perItem)
  const chunk = new Float32Array(perItem * ROWS_AT_ONCE)
  for (let row = 0; row < numItems; row += ROWS_AT_ONCE) {
    const n = Math.min(ROWS_AT_ONCE, numItems - row) * perItem
    for (let i = 0; i < n; i++) chunk[i] = random() * 2 - 1
    const half = float32ToFloat16(chunk.subarray(0, n))
    if (data instanceof Float16RowsFile) data.write(row, new Uint8Array(half.buffer, half.byteOffset, half.byteLength))
    else data.set(half, row * perItem)
  }
  return { numLayers, width, data, layers, rowOf: Int32Array.from({ length: numItems + 1 }, (_, i) => i - 1) }
}

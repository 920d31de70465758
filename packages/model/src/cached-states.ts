// The per-item cached backbone states IISAN trains on (docs/METHOD.md §2): for each modality,
// H_m[l] for l = 0..L, [L+1, d] per item. One copy — float16 (as cached; half the memory of
// float32) or float32 in memory, or float16 in a rows file read per batch (what training jobs
// use: the states then cost page cache, not process memory; float16-rows-file.ts) — holding only
// the items that have the modality (a text-only catalogue costs nothing on the image side);
// batches decode just the side layers of the items they need into float32.

import { float16Table } from '@iisan/safetensors'
import { Float16RowsFile, type Float16RowsFileHandle } from '@iisan/safetensors/float16-rows-file'

export type Modality = 'text' | 'image'

export interface ModalityStates {
  /** L: backbone layers (each item has L+1 states, 0 = embedding output) */
  numLayers: number
  /** d */
  width: number
  /** [numItems+1] item index → row of `data`, −1 where the item lacks this modality */
  rowOf: Int32Array
  /** [rows, layers, d] row-major: float32 values, or float16 bit patterns (in memory or a file) */
  data: StatesData
  /**
   * The backbone layers each row holds, in order (default: all of 0..L). A trainer needs only the
   * SAN's side layers (7 of 13 for base models), so loaders may keep just those.
   */
  layers?: number[]
}

export type StatesData = Float32Array | Uint16Array | Float16RowsFile

/** The arrays of a store held in memory; `what` names the operation a rows file cannot serve. */
function inMemory(data: StatesData, what: string): Float32Array | Uint16Array {
  if (data instanceof Float16RowsFile) throw new Error(`${what} needs states held in memory, not in a rows file`)
  return data
}

function copyRow(src: Float32Array | Uint16Array, start: number, length: number, dst: Float32Array, at: number): void {
  if (src instanceof Float32Array) {
    dst.set(src.subarray(start, start + length), at)
    return
  }
  const table = float16Table()
  for (let j = 0; j < length; j++) dst[at + j] = table[src[start + j]]
}

export type CachedStates = Record<Modality, ModalityStates>

/** A new item's cached states: [L+1, d] per modality, null where it lacks the modality. */
export type NewItemStates = Record<Modality, Float32Array | null>

export function statesPerItem(states: Pick<ModalityStates, 'numLayers' | 'width' | 'layers'>): number {
  return (states.layers?.length ?? states.numLayers + 1) * states.width
}

/** Where backbone layer `layer` sits within a row. */
export function layerPosition(states: Pick<ModalityStates, 'numLayers' | 'layers'>, layer: number): number {
  const position = states.layers ? states.layers.indexOf(layer) : layer <= states.numLayers ? layer : -1
  if (position < 0) throw new Error(`the cached states do not hold backbone layer ${layer} (they hold ${states.layers?.join(', ') ?? `0..${states.numLayers}`})`)
  return position
}

/** A copy keeping only `layers` of every row: what a trainer with these side layers needs. */
export function keepLayers(states: ModalityStates, layers: number[]): ModalityStates {
  const positions = layers.map((l) => layerPosition(states, l))
  const d = states.width
  const perItem = statesPerItem(states)
  const source = inMemory(states.data, 'keepLayers')
  const rows = source.length / perItem
  const data = source instanceof Uint16Array ? new Uint16Array(rows * layers.length * d) : new Float32Array(rows * layers.length * d)
  for (let r = 0; r < rows; r++) {
    positions.forEach((p, k) => data.set(source.subarray(r * perItem + p * d, r * perItem + (p + 1) * d), (r * layers.length + k) * d))
  }
  return { ...states, data, layers: [...layers] }
}

/** A store where no item has the modality (yet). */
export function emptyModality(numItems: number, numLayers: number, width: number): ModalityStates {
  return { numLayers, width, rowOf: new Int32Array(numItems + 1).fill(-1), data: new Float32Array(0) }
}

/**
 * Builds a store from per-item states (null = the item lacks the modality), item index 1..N
 * at position index − 1 of `items`.
 */
export function modalityFromItems(numLayers: number, width: number, items: (Float32Array | null)[]): ModalityStates {
  return appendItems(emptyModality(0, numLayers, width), items)
}

/**
 * Side-layer slices for `ids`: slices[k] is a [n, d] Float32Array holding H[ids[i], layers[k]];
 * `present[i]` is 1 where the item has the modality (absent rows stay 0 — the SAN substitutes
 * its learned "missing" state for them).
 */
export function gatherSideLayers(states: ModalityStates, ids: ArrayLike<number>, layers: number[]): { slices: Float32Array[]; present: Float32Array } {
  const d = states.width
  const perItem = statesPerItem(states)
  const positions = layers.map((l) => layerPosition(states, l))
  const n = ids.length
  const present = new Float32Array(n)
  const slices = layers.map(() => new Float32Array(n * d))
  const file = states.data instanceof Float16RowsFile ? states.data : null
  // a file is read a whole row at a time (one pread), then decoded like a row in memory
  const scratch = file ? new Uint16Array(perItem) : null
  for (let i = 0; i < n; i++) {
    const row = states.rowOf[ids[i]] ?? -1
    if (row < 0) continue
    present[i] = 1
    if (file) file.readRow(row, scratch!)
    const [source, base] = file ? [scratch!, 0] : [states.data as Float32Array | Uint16Array, row * perItem]
    for (let k = 0; k < layers.length; k++) {
      copyRow(source, base + positions[k] * d, d, slices[k], i * d)
    }
  }
  return { slices, present }
}

/**
 * The whole stored rows of `ids`, as stored: [n, rowLayers, d] float32 values or float16 bit
 * patterns (zeros where an item lacks the modality), and `present` [n]. For an inference runtime
 * that takes float16 and picks the side layers itself (san-onnx.ts): no decoding on this thread.
 */
export function readRows(states: ModalityStates, ids: ArrayLike<number>): { rows: Float32Array | Uint16Array; present: Float32Array } {
  const perItem = statesPerItem(states)
  const n = ids.length
  const present = new Float32Array(n)
  const rows = states.data instanceof Float32Array ? new Float32Array(n * perItem) : new Uint16Array(n * perItem)
  for (let i = 0; i < n; i++) {
    const row = states.rowOf[ids[i]] ?? -1
    if (row < 0) continue
    present[i] = 1
    if (states.data instanceof Float16RowsFile) states.data.readRow(row, (rows as Uint16Array).subarray(i * perItem, (i + 1) * perItem))
    else rows.set(states.data.subarray(row * perItem, (row + 1) * perItem), i * perItem)
  }
  return { rows, present }
}

/** The element type `readRows` gives for a store. */
export function rowsDtype(states: ModalityStates): 'float32' | 'float16' {
  return states.data instanceof Float32Array ? 'float32' : 'float16'
}

/**
 * Appends items N+1, N+2, … (cold start); null = the new item lacks the modality. New values
 * must be of the store's kind (float32 values or float16 bit patterns).
 */
export function appendItems<T extends Float32Array | Uint16Array>(states: ModalityStates, added: (T | null)[]): ModalityStates {
  const perItem = statesPerItem(states)
  const old = inMemory(states.data, 'appendItems')
  const oldRows = old.length / perItem
  const newRows = added.filter(Boolean).length
  const kind = old.length > 0 ? old : (added.find(Boolean) ?? old)
  const data = kind instanceof Uint16Array ? new Uint16Array((oldRows + newRows) * perItem) : new Float32Array((oldRows + newRows) * perItem)
  data.set(old)
  const rowOf = new Int32Array(states.rowOf.length + added.length)
  rowOf.set(states.rowOf)
  let row = oldRows
  added.forEach((item, i) => {
    const index = states.rowOf.length + i
    if (!item) {
      rowOf[index] = -1
      return
    }
    if (item.length !== perItem) throw new Error(`item state has ${item.length} values, expected (L+1)·d = ${perItem}`)
    if (item.constructor !== data.constructor) throw new Error('appended states must match the store: float32 or float16')
    data.set(item, row * perItem)
    rowOf[index] = row++
  })
  return { ...states, rowOf, data }
}

/** Gives back the rows file behind a store (its disk space); a store in memory is left to GC. */
export function closeStore(states: ModalityStates): void {
  if (states.data instanceof Float16RowsFile) states.data.close()
}

export function closeStates(states: CachedStates): void {
  closeStore(states.text)
  closeStore(states.image)
}

/** A store as it crosses to a worker thread: a rows file goes as its handle. */
export type ThreadModalityStates = Omit<ModalityStates, 'data'> & { data: Float32Array | Uint16Array | Float16RowsFileHandle }

export function statesForThread(states: ModalityStates): ThreadModalityStates {
  return { ...states, data: states.data instanceof Float16RowsFile ? states.data.handle : states.data }
}

/** In the thread: the store again, reading the owner's rows file through the shared descriptor. */
export function attachStates(states: ThreadModalityStates): ModalityStates {
  return { ...states, data: Float16RowsFile.isHandle(states.data) ? Float16RowsFile.attach(states.data) : states.data }
}

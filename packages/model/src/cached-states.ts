// The per-item cached backbone states IISAN trains on (IISAN_SPEC.md §2): for each modality,
// H_m[l] for l = 0..L, [L+1, d] per item. One float32 copy lives in memory, holding only the
// items that have the modality (a text-only catalogue costs nothing on the image side);
// batches copy out just the side layers of the items they need.

export type Modality = 'text' | 'image'

export interface ModalityStates {
  /** L: backbone layers (each item has L+1 states, 0 = embedding output) */
  numLayers: number
  /** d */
  width: number
  /** [numItems+1] item index → row of `data`, −1 where the item lacks this modality */
  rowOf: Int32Array
  /** [rows, L+1, d] row-major float32 */
  data: Float32Array
}

export type CachedStates = Record<Modality, ModalityStates>

export function statesPerItem(states: Pick<ModalityStates, 'numLayers' | 'width'>): number {
  return (states.numLayers + 1) * states.width
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
  const n = ids.length
  const present = new Float32Array(n)
  const slices = layers.map(() => new Float32Array(n * d))
  for (let i = 0; i < n; i++) {
    const row = states.rowOf[ids[i]] ?? -1
    if (row < 0) continue
    present[i] = 1
    for (let k = 0; k < layers.length; k++) {
      const start = row * perItem + layers[k] * d
      slices[k].set(states.data.subarray(start, start + d), i * d)
    }
  }
  return { slices, present }
}

/** Appends items N+1, N+2, … (cold start); null = the new item lacks the modality. */
export function appendItems(states: ModalityStates, added: (Float32Array | null)[]): ModalityStates {
  const perItem = statesPerItem(states)
  const oldRows = states.data.length / perItem
  const newRows = added.filter(Boolean).length
  const data = new Float32Array((oldRows + newRows) * perItem)
  data.set(states.data)
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
    data.set(item, row * perItem)
    rowOf[index] = row++
  })
  return { ...states, rowOf, data }
}

// Cached hidden states on disk: one safetensors file per modality in a folder
// (`text.safetensors`, `image.safetensors`), so IISAN can be trained and benchmarked without the
// services. Each file holds one tensor `states` [rows, L+1, d] (F16 as cached, or F32) and, in
// its metadata, `item_ids` (JSON: the item key of each row), `num_layers`, `width`, `fingerprint`.
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { parseSafetensors, serializeSafetensors } from '@iisan/safetensors'
import { emptyModality, type CachedStates, type Modality, type ModalityStates } from '@iisan/model/cached-states'
import type { ProtocolData } from '@iisan/model/data'

export interface StatesFile {
  modality: Modality
  fingerprint: string
  numLayers: number
  width: number
  itemKeys: string[]
  /** [rows, L+1, d] */
  data: Uint16Array | Float32Array
}

export class StatesFolderError extends Error {}

export function statesFilePath(dir: string, modality: Modality): string {
  return path.join(dir, `${modality}.safetensors`)
}

export function writeStatesFile(file: string, states: StatesFile): void {
  const rows = states.itemKeys.length
  const bytes = serializeSafetensors(
    { states: { dtype: states.data instanceof Uint16Array ? 'F16' : 'F32', shape: [rows, states.numLayers + 1, states.width], data: states.data } },
    { modality: states.modality, fingerprint: states.fingerprint, num_layers: String(states.numLayers), width: String(states.width), item_ids: JSON.stringify(states.itemKeys) },
  )
  writeFileSync(file, bytes)
}

/** Reads a states file without copying the values (the arrays view the file's buffer). */
export function readStatesFile(file: string): StatesFile {
  let parsed
  try {
    parsed = parseSafetensors(readFileSync(file))
  } catch (e) {
    throw new StatesFolderError(`${file}: ${(e as Error).message}`)
  }
  const entry = parsed.tensors.get('states')
  const meta = parsed.metadata
  if (!entry || entry.shape.length !== 3) throw new StatesFolderError(`${file}: expected a tensor "states" of shape [rows, L+1, d]`)
  if (entry.dtype !== 'F16' && entry.dtype !== 'F32') throw new StatesFolderError(`${file}: states must be F16 or F32, not ${entry.dtype}`)
  const itemKeys = JSON.parse(meta.item_ids ?? 'null') as string[] | null
  if (!Array.isArray(itemKeys) || itemKeys.length !== entry.shape[0]) throw new StatesFolderError(`${file}: metadata item_ids must list one key per row (${entry.shape[0]})`)
  const [, layers, width] = entry.shape
  const aligned = entry.bytes.byteOffset % 4 === 0 ? entry.bytes : new Uint8Array(entry.bytes)
  const count = entry.shape[0] * layers * width
  const data = entry.dtype === 'F16' ? new Uint16Array(aligned.buffer, aligned.byteOffset, count) : new Float32Array(aligned.buffer, aligned.byteOffset, count)
  return { modality: (meta.modality as Modality) ?? 'text', fingerprint: meta.fingerprint ?? '', numLayers: layers - 1, width, itemKeys, data }
}

/**
 * The folder's states for the protocol's items (item index ↔ key), rows reused in place. A
 * modality without a file is absent for every item, shaped like the other one.
 */
export function loadStatesFolder(dir: string, data: Pick<ProtocolData, 'itemKeys' | 'numItems'>): { states: CachedStates; files: Partial<Record<Modality, StatesFile>> } {
  const files: Partial<Record<Modality, StatesFile>> = {}
  for (const modality of ['text', 'image'] as const) {
    const file = statesFilePath(dir, modality)
    if (existsSync(file)) files[modality] = readStatesFile(file)
  }
  const any = files.text ?? files.image
  if (!any) throw new StatesFolderError(`${dir} holds neither text.safetensors nor image.safetensors`)
  const toStore = (file: StatesFile | undefined): ModalityStates => {
    if (!file) return emptyModality(data.numItems, any.numLayers, any.width)
    return statesForItems(file.numLayers, file.width, file.data, file.itemKeys, data.itemKeys)
  }
  return { states: { text: toStore(files.text), image: toStore(files.image) }, files }
}

/** Maps item index (itemKeys[index]) to the row holding that key; unknown keys are absent. */
export function statesForItems(numLayers: number, width: number, rows: Uint16Array | Float32Array, rowKeys: ArrayLike<string | number>, itemKeys: string[]): ModalityStates {
  const rowOfKey = new Map<string, number>()
  for (let r = 0; r < rowKeys.length; r++) rowOfKey.set(String(rowKeys[r]), r)
  const rowOf = Int32Array.from(itemKeys, (key, index) => (index === 0 ? -1 : (rowOfKey.get(key) ?? -1)))
  return { numLayers, width, rowOf, data: rows }
}

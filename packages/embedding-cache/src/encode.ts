// Compute and store the hidden states of a set of items under one backbone. Shared by the chunk
// processor (queue) and the cold-start path (encodeItemsNow).
//
// Cache key = (backbone, content hash of the backbone's input): Item.textHash for text,
// Item.imageHash for images. Keys already stored are skipped; items sharing a key are encoded
// once. Work goes in small groups, each written by ONE multi-row INSERT … ON CONFLICT DO
// NOTHING: a crash loses at most the group in flight, never a written one, and a concurrent
// replica storing the same key first is harmless.
import { missingHiddenStates, saveHiddenStates, type Db, type HiddenStateInput, type Modality } from '@iisan/storage'
import { lengthOrder, mapLimit, rowLengths } from '@iisan/backbones'
import { encodeFloat16LE } from './float16.ts'
import { ImageSourceError, readItemImage, type ImageSourceOptions } from './images.ts'
import type { LoadedBackbone } from './registry.ts'

/** The Item columns encoding needs. */
export interface EncodableItem {
  id: number
  title: string
  textHash: string
  imageHash: string | null
  imageRef: string | null
  imageBlob: Uint8Array | null
}

export interface EncodeOptions {
  /** Items per forward batch and per INSERT (default 16). */
  groupSize?: number
  /**
   * Transient image failures (network, 5xx) are stored as error rows only on the final attempt;
   * before that they are left out so a retry can try again (default true).
   */
  finalAttempt?: boolean
  /** Pause after each written group — a throttle for demos and crash tests (default 0). */
  throttleMs?: number
  image?: ImageSourceOptions
  /** Called after each group is written. */
  onGroup?: (progress: { keysDone: number; keysTotal: number }) => void
}

export interface EncodeOutcome {
  modality: Modality
  backboneId: number
  /** Distinct inputs (content hashes) among the items. */
  keys: number
  /** Inputs whose states were computed now. */
  encoded: number
  /** Inputs that failed now (corrupt/unreadable image): error rows written. */
  failed: number
  /** Inputs already stored before this call (states or errors): nothing computed. */
  skipped: number
  /** Items without an input for this modality (no image): nothing to do, not a failure. */
  absent: number
  /** Rows this call inserted (< encoded + failed when another replica stored a key first). */
  inserted: number
  /** Transient failures left for a retry: content hash → message. */
  transient: Map<string, string>
  seconds: number
}

export const DEFAULT_GROUP_SIZE = 16
const MAX_ERROR_LENGTH = 500

/** The cache key of an item under a modality (null: the item has no such input). */
export function inputKey(modality: Modality, item: Pick<EncodableItem, 'textHash' | 'imageHash'>): string | null {
  return modality === 'text' ? item.textHash : item.imageHash
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

export async function encodeAndStore(db: Db, backbone: LoadedBackbone, items: EncodableItem[], options: EncodeOptions = {}): Promise<EncodeOutcome> {
  const t0 = performance.now()
  const groupSize = Math.max(1, options.groupSize ?? DEFAULT_GROUP_SIZE)
  const finalAttempt = options.finalAttempt ?? true
  const rowsPerItem = backbone.numLayers + 1
  const perItem = rowsPerItem * backbone.width
  const out: EncodeOutcome = {
    modality: backbone.modality,
    backboneId: backbone.id,
    keys: 0,
    encoded: 0,
    failed: 0,
    skipped: 0,
    absent: 0,
    inserted: 0,
    transient: new Map(),
    seconds: 0,
  }
  const byKey = new Map<string, EncodableItem>()
  for (const item of items) {
    const key = inputKey(backbone.modality, item)
    if (!key) out.absent++
    else if (!byKey.has(key)) byKey.set(key, item)
  }
  out.keys = byKey.size
  let missing = await missingHiddenStates(db, backbone.id, [...byKey.keys()])
  out.skipped = byKey.size - missing.length
  if (backbone.modality === 'text' && missing.length > groupSize) {
    // Groups of titles of similar token length: each forward batch is padded only to its longest.
    const order = lengthOrder(rowLengths(backbone.model.tokenize(missing.map((k) => byKey.get(k)!.title))))
    missing = Array.from(order, (i) => missing[i])
  }

  const stateRow = (key: string, values: Float32Array): HiddenStateInput => ({
    contentHash: key,
    dtype: 'f16',
    layers: rowsPerItem,
    dim: backbone.width,
    data: encodeFloat16LE(values),
  })
  const errorRow = (key: string, message: string): HiddenStateInput => ({
    contentHash: key,
    dtype: 'f16',
    layers: rowsPerItem,
    dim: backbone.width,
    data: new Uint8Array(0),
    error: message.length > MAX_ERROR_LENGTH ? `${message.slice(0, MAX_ERROR_LENGTH - 1)}…` : message,
  })

  for (let start = 0; start < missing.length; start += groupSize) {
    const keys = missing.slice(start, start + groupSize)
    const rows: HiddenStateInput[] = []
    if (backbone.modality === 'text') {
      const enc = await backbone.model.encodeTexts(
        keys.map((k) => byKey.get(k)!.title),
        { batchSize: groupSize },
      )
      keys.forEach((k, j) => rows.push(stateRow(k, enc.clsPerLayer.subarray(j * perItem, (j + 1) * perItem))))
    } else {
      const sources = await mapLimit(keys, 4, async (k): Promise<Uint8Array | Error> => {
        try {
          return (await readItemImage(byKey.get(k)!, options.image)) ?? new ImageSourceError('the item has an image hash but no image data', false)
        } catch (err) {
          return err instanceof Error ? err : new Error(String(err))
        }
      })
      const good: { key: string; bytes: Uint8Array }[] = []
      sources.forEach((src, j) => {
        const key = keys[j]
        if (!(src instanceof Error)) good.push({ key, bytes: src })
        else if (src instanceof ImageSourceError && src.transient && !finalAttempt) out.transient.set(key, src.message)
        else rows.push(errorRow(key, src.message))
      })
      if (good.length) {
        const results = await backbone.model.encodeImages(
          good.map((g) => g.bytes),
          { batchSize: groupSize },
        )
        results.forEach((r, j) => {
          const key = good[j].key
          rows.push(r.ok ? stateRow(key, r.cls) : errorRow(key, `${describeImage(byKey.get(key)!)}: ${r.error.replace(/ ?<\d+-byte buffer>/, '').replace(/\s+/g, ' ').trim()}`))
        })
      }
    }
    out.inserted += await saveHiddenStates(db, backbone.id, rows)
    for (const r of rows) {
      if (r.error) out.failed++
      else out.encoded++
    }
    options.onGroup?.({ keysDone: Math.min(start + groupSize, missing.length), keysTotal: missing.length })
    if (options.throttleMs) await sleep(options.throttleMs)
  }
  out.seconds = (performance.now() - t0) / 1000
  return out
}

function describeImage(item: EncodableItem): string {
  return item.imageBlob && item.imageBlob.byteLength ? `uploaded image (${item.imageBlob.byteLength} bytes)` : `image ${item.imageRef}`
}

// Cold start: a new item becomes recommendable without retraining once its states are cached
// (docs/GOALS.md, the hot path). encodeItemsNow computes the missing states of a few items right
// away — no queue — and returns them.
import { loadHiddenStates, type Modality, type PrismaClient } from '@iisan/storage'
import { encodeAndStore, inputKey, type EncodeOptions } from './encode.ts'
import { CacheError } from './errors.ts'
import { getDefaultRegistry, type BackboneRegistry } from './registry.ts'
import { decodeStoredState } from './stored-states.ts'
import type { ItemModalityStatus } from './coverage.ts'

export interface ItemModalityState {
  /**
   * done: states stored; failed: the input is unusable (error row, or — with `retryable` — a
   * transient fetch failure that was not stored); absent: the item has no such input (no image);
   * disabled: no backbone for this modality.
   */
  status: Exclude<ItemModalityStatus, 'pending'>
  fingerprint?: string
  error?: string
  /** The failure was transient (network): nothing was stored, a later call tries again. */
  retryable?: boolean
  /** [L+1, d] float32 (decoded from the stored float16), when status is done and states were requested. */
  state?: Float32Array
}

export interface EncodedItem {
  itemId: number
  datasetId: string
  text: ItemModalityState
  image: ItemModalityState
}

export interface EncodeItemsResult {
  /** In ascending Item.id. */
  items: EncodedItem[]
  /** Inputs computed by this call, per modality (0 when everything was cached). */
  encoded: Record<Modality, number>
  /** Inputs that failed in this call. */
  failed: Record<Modality, number>
  seconds: number
}

export interface EncodeItemsOptions extends Pick<EncodeOptions, 'groupSize' | 'image'> {
  /** Backbones to use (default: the process-wide registry from the environment). */
  registry?: BackboneRegistry
  /** Return the states themselves (default true). */
  includeStates?: boolean
}

/**
 * Compute and store the missing states of `itemIds` (every configured backbone) synchronously
 * and return them. Throws CacheError NOT_FOUND listing ids that do not exist.
 */
export async function encodeItemsNow(prisma: PrismaClient, itemIds: number[], options: EncodeItemsOptions = {}): Promise<EncodeItemsResult> {
  const t0 = performance.now()
  const registry = options.registry ?? (await getDefaultRegistry(prisma))
  const ids = [...new Set(itemIds)]
  const items = await prisma.item.findMany({
    where: { id: { in: ids } },
    select: { id: true, datasetId: true, title: true, textHash: true, imageHash: true, imageRef: true, imageBlob: true },
    orderBy: { id: 'asc' },
  })
  if (items.length !== ids.length) {
    const found = new Set(items.map((i) => i.id))
    const missingItemIds = ids.filter((id) => !found.has(id))
    throw new CacheError('NOT_FOUND', `unknown item id(s): ${missingItemIds.slice(0, 10).join(', ')}`, { missingItemIds: missingItemIds.slice(0, 100) })
  }
  const result: EncodeItemsResult = { items: [], encoded: { text: 0, image: 0 }, failed: { text: 0, image: 0 }, seconds: 0 }
  const perModality = new Map<Modality, (item: (typeof items)[number]) => ItemModalityState>()
  for (const modality of ['text', 'image'] as const) {
    const backbone = registry.get(modality)
    if (!backbone) {
      perModality.set(modality, () => ({ status: 'disabled' }))
      continue
    }
    // A cold-start call is not a queue attempt: transient failures are reported, not stored.
    const outcome = await encodeAndStore(prisma, backbone, items, { groupSize: options.groupSize, image: options.image, finalAttempt: false })
    result.encoded[modality] = outcome.encoded
    result.failed[modality] = outcome.failed + outcome.transient.size
    const keys = [...new Set(items.map((i) => inputKey(modality, i)).filter((k): k is string => !!k))]
    const stored = await loadHiddenStates(prisma, backbone.id, keys)
    const fingerprint = backbone.fingerprint
    perModality.set(modality, (item) => {
      const key = inputKey(modality, item)
      if (!key) return { status: 'absent', fingerprint }
      const transient = outcome.transient.get(key)
      if (transient !== undefined) return { status: 'failed', fingerprint, error: transient, retryable: true }
      const row = stored.get(key)
      if (!row) return { status: 'failed', fingerprint, error: 'no state was stored', retryable: true }
      if (row.error) return { status: 'failed', fingerprint, error: row.error }
      return options.includeStates === false ? { status: 'done', fingerprint } : { status: 'done', fingerprint, state: decodeStoredState(row) }
    })
  }
  result.items = items.map((item) => ({
    itemId: item.id,
    datasetId: item.datasetId,
    text: perModality.get('text')!(item),
    image: perModality.get('image')!(item),
  }))
  result.seconds = (performance.now() - t0) / 1000
  return result
}

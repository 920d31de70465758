// Reading cached states from storage item by item: the HiddenState rows of a few items under
// given backbones, decoded to float32. What cold start, a loaded model version's catch-up and the
// trainer's catalogue beyond its protocol read; a whole dataset goes through the bulk state
// stream instead (./states.ts, ./format.ts).
import { getBackboneByFingerprint, loadHiddenStates, type HiddenState, type Item, type Modality, type PrismaClient } from '@iisan/storage'
import { float16BytesToFloat32 } from './float16.ts'

/** One item's cached states: [L+1, d] float32 per modality, null where it has none. */
export type ItemStates = Record<Modality, Float32Array | null>

/** A stored state's values as a new [L+1, d] Float32Array, whichever dtype it was stored in. */
export function decodeStoredState(row: Pick<HiddenState, 'dtype' | 'data'>): Float32Array {
  return row.dtype === 'f16' ? float16BytesToFloat32(row.data) : new Float32Array(Uint8Array.from(row.data).buffer)
}

/**
 * The dataset's items outside `known` that have cached states under these backbones, with the
 * states (items with neither text nor image states are left out) — what a content-based model
 * can still serve: the trainer's catalogue beyond the protocol, a loaded version's catch-up.
 */
export async function unseenItemStates(
  prisma: PrismaClient,
  datasetId: string,
  known: ReadonlySet<number>,
  backbones: Record<Modality, string | null>,
): Promise<{ ids: number[]; states: ItemStates[] }> {
  const unseen = (await prisma.item.findMany({ where: { datasetId }, select: { id: true, textHash: true, imageHash: true }, orderBy: { id: 'asc' } })).filter((i) => !known.has(i.id))
  if (unseen.length === 0) return { ids: [], states: [] }
  const states = await cachedStatesOf(prisma, backbones, unseen)
  const usable = unseen.map((item, i) => ({ id: item.id, states: states[i] })).filter((u) => u.states.text || u.states.image)
  return { ids: usable.map((u) => u.id), states: usable.map((u) => u.states) }
}

/** The cached [L+1, d] states of each item under the model's backbones (null: none usable). */
export async function cachedStatesOf(
  prisma: PrismaClient,
  backbones: Record<Modality, string | null>,
  items: Pick<Item, 'textHash' | 'imageHash'>[],
): Promise<ItemStates[]> {
  const out: ItemStates[] = items.map(() => ({ text: null, image: null }))
  for (const modality of ['text', 'image'] as const) {
    const fingerprint = backbones[modality]
    if (!fingerprint) continue
    const backbone = await getBackboneByFingerprint(prisma, fingerprint)
    if (!backbone) continue
    const key = (item: Pick<Item, 'textHash' | 'imageHash'>) => (modality === 'text' ? item.textHash : item.imageHash)
    const rows = await loadHiddenStates(prisma, backbone.id, items.map(key).filter((h): h is string => h !== null))
    items.forEach((item, i) => {
      const hash = key(item)
      const row = hash ? rows.get(hash) : undefined
      if (!row || row.error) return
      out[i][modality] = decodeStoredState(row)
    })
  }
  return out
}

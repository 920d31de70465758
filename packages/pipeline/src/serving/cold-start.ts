// Cold start, which ID-based systems cannot do: a new item gets its backbone states from the
// embedding cache, then every IISAN model version of its dataset runs only its SAN + fusion on
// them and appends the embedding to its item matrix — no retraining, recommendable at once.
import { requestEncodeItems } from '@iisan/embedding-cache/client'
import { addItems, type ImportItemInput, type Item, type PrismaClient } from '@iisan/storage'
import type { ServingRegistry } from './serving-registry.ts'

export interface ColdStartDeps {
  prisma: PrismaClient
  registry: ServingRegistry
  embeddingCacheUrl: string
  /** INTERNAL_TOKEN, sent to the embedding cache */
  internalToken?: string
  /** tell every API replica to reload a model version that grew */
  announceUpdated(datasetId: string, modelVersionId: string): Promise<void>
}

export interface ColdStartResult {
  items: Item[]
  /** per IISAN model version of the dataset: how many of the new items it can now recommend */
  models: { modelVersionId: string; appended: number; isActive: boolean }[]
  /** per item and modality: done | failed | absent | disabled (from the cache) */
  states: { itemId: number; text: string; image: string }[]
  seconds: number
}

export async function addItemsWithColdStart(deps: ColdStartDeps, datasetId: string, inputs: ImportItemInput[]): Promise<ColdStartResult> {
  const started = performance.now()
  const items = await addItems(deps.prisma, datasetId, inputs)
  let encoded
  try {
    encoded = await requestEncodeItems({ url: deps.embeddingCacheUrl, token: deps.internalToken }, items.map((i) => i.id))
  } catch (e) {
    // No states, no embedding: take the items back out rather than leave them half-added.
    await deps.prisma.$transaction([
      deps.prisma.item.deleteMany({ where: { id: { in: items.map((i) => i.id) } } }),
      deps.prisma.dataset.update({ where: { id: datasetId }, data: { numItems: { decrement: items.length } } }),
    ])
    throw e
  }
  const models = await embedIntoModels(deps, datasetId, items)
  return {
    items,
    models,
    states: encoded.items.map((i) => ({ itemId: i.itemId, text: i.text.status, image: i.image.status })),
    seconds: (performance.now() - started) / 1000,
  }
}

/**
 * Brings the dataset's versions that can embed new items and matter now — the active one and any this replica has
 * loaded — up to date: reloading reconciles them (see ServingRegistry), which embeds the new
 * items. Other versions catch up when they are next loaded.
 */
export async function embedIntoModels(deps: ColdStartDeps, datasetId: string, items: Item[]) {
  await deps.registry.refreshActive()
  const relevant = new Set([deps.registry.activeModelIds().get(datasetId), ...deps.registry.loadedModelIds()].filter((id): id is string => !!id))
  const versions = await deps.prisma.modelVersion.findMany({ where: { datasetId, id: { in: [...relevant] } }, select: { id: true, isActive: true } })
  const wanted = new Set(items.map((i) => i.id))
  const results: ColdStartResult['models'] = []
  for (const version of versions) {
    // the model says whether it can embed an item it was not trained on (IISAN from content; an ID table cannot)
    if (!(await deps.registry.get(version.id))?.serving.supportsColdStart) continue
    const model = await deps.registry.reload(version.id)
    if (!model) continue
    const appended = model.itemIds.filter((id) => wanted.has(id)).length
    if (appended === 0) continue
    await deps.announceUpdated(datasetId, version.id)
    results.push({ modelVersionId: version.id, appended, isActive: version.isActive })
  }
  return results
}

// The worker's source of IISAN training states: the embedding-cache service. Asks it to build
// (or resume) the dataset's cache, waits with progress until every item is done or flagged, then
// streams the states in and indexes them by the protocol's item order.
import { fetchCoverage, fetchDatasetStates, requestCacheBuild } from '@iisan/embedding-cache/client'
import { emptyModality, type CachedStates, type Modality, type ModalityStates } from '@iisan/model/cached-states'
import { defaultSideLayers, sideLayersFor } from '@iisan/model/san'
import type { ProtocolData } from '@iisan/model/data'
import { TrainingCancelled } from '@iisan/model/trainer'
import { statesForItems } from './states-folder.ts'
import type { JobProgress } from './training-job.ts'

export interface LoadedStates {
  states: CachedStates
  /** fingerprint of the backbone behind each modality (null: no backbone configured) */
  backbones: Record<Modality, string | null>
}

export interface CacheWaitOptions {
  /**
   * The SAN's side layers of the text backbone (default: layer 0 and every other layer). Only
   * these layers are kept in memory (the image backbone's at the same relative depths).
   */
  sideLayers?: number[]
  pollMs?: number
  /** give up waiting for the cache after this long */
  timeoutMs?: number
  isCancelled?: () => boolean | Promise<boolean>
}

export class CacheNotReady extends Error {}

export async function loadStatesFromCache(
  cacheUrl: string,
  datasetId: string,
  data: Pick<ProtocolData, 'itemKeys' | 'numItems'>,
  report: (progress: JobProgress) => Promise<void>,
  options: CacheWaitOptions = {},
): Promise<LoadedStates> {
  const pollMs = options.pollMs ?? 1000
  const deadline = Date.now() + (options.timeoutMs ?? 6 * 3600_000)
  await requestCacheBuild(cacheUrl, datasetId)
  for (;;) {
    const coverage = await fetchCoverage(cacheUrl, datasetId)
    const total = coverage.backbones.reduce((s, b) => s + b.total, 0)
    const settled = coverage.backbones.reduce((s, b) => s + b.done + b.failed, 0)
    await report({ phase: 'caching', cached: settled, total, fraction: 0 })
    if (coverage.backbones.length === 0) throw new CacheNotReady('the embedding cache has no backbone configured')
    if (settled >= total) break
    if (Date.now() > deadline) throw new CacheNotReady(`the embedding cache did not finish in time (${settled}/${total} states)`)
    // the trainer's own cancellation: the job is cancelled, or handed back on shutdown
    if (await options.isCancelled?.()) throw new TrainingCancelled()
    await new Promise((resolve) => setTimeout(resolve, pollMs))
  }

  const stores: Partial<Record<Modality, ModalityStates>> = {}
  const backbones: Record<Modality, string | null> = { text: null, image: null }
  let reference: { layers: number[]; numLayers: number } | undefined
  for (const modality of ['text', 'image'] as const) {
    // float16 as stored, side layers only: one copy at ~a quarter of the float32 size
    // (Scientific, base models: 0.2 GB per modality instead of 0.8 GB)
    const fetched = await fetchDatasetStates(cacheUrl, datasetId, modality, {
      keep: 'float16',
      selectLayers: (header) => {
        const layers = reference ? sideLayersFor(reference.layers, reference.numLayers, header.numLayers) : (options.sideLayers ?? defaultSideLayers(header.numLayers))
        reference ??= { layers, numLayers: header.numLayers }
        return layers
      },
    })
    if (!fetched) continue
    backbones[modality] = fetched.fingerprint
    stores[modality] = { ...statesForItems(fetched.numLayers, fetched.width, fetched.data, fetched.itemIds, data.itemKeys), layers: fetched.layers }
  }
  const shaped = stores.text ?? stores.image
  if (!shaped) throw new CacheNotReady('the embedding cache returned no states')
  const absent = () => emptyModality(data.numItems, shaped.numLayers, shaped.width)
  return { states: { text: stores.text ?? absent(), image: stores.image ?? absent() }, backbones }
}

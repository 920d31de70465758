// What a training job reads besides the interactions, as the job sees it: the loaders the worker
// wires in (cache-states.ts for cached states, item-content.ts for titles and images) and what
// they return. The job (training-job.ts) calls them through these types only.
import type { CachedStates, Modality } from '@iisan/model/cached-states'
import type { ProtocolData } from '@iisan/model/data'
import type { ItemContent } from '@iisan/model/item-content'
import type { BackboneSources } from '@iisan/model/methods/method'
import type { JobProgress } from './progress.ts'

export interface LoadedStates {
  states: CachedStates
  /** fingerprint of the backbone behind each modality (null: no backbone configured) */
  backbones: Record<Modality, string | null>
}

export interface LoadedContent {
  content: ItemContent
  backbones: BackboneSources
  /** the backbones' fingerprints: the cached states a trained SAN can read (cold start) */
  fingerprints: LoadedStates['backbones']
}

/**
 * IISAN's cached backbone states for the protocol's items (item index i ↔ Item.id
 * data.itemKeys[i]); the worker wires this to the embedding cache, which may build it first.
 */
export type StatesLoader = (
  datasetId: string,
  data: ProtocolData,
  report: (progress: JobProgress) => Promise<void>,
  shouldCancel: () => Promise<boolean>,
  sideLayers?: number[],
) => Promise<LoadedStates>

/**
 * The items' content (tokenised titles, images) and the backbones, for the methods that run
 * the backbones in every step; the worker wires this to the backbones it is configured with.
 */
export type ContentLoader = (datasetId: string, data: ProtocolData, report: (progress: JobProgress) => Promise<void>) => Promise<LoadedContent>

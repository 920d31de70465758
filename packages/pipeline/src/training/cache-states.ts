// The worker's source of IISAN training states: the embedding-cache service. Asks it to build
// (or resume) the dataset's cache, waits with progress until every item is done or flagged, then
// streams the states in and indexes them by the protocol's item order. A cache that goes away
// for a while (restart, crash, redeploy) is waited for; only an outage longer than the budget
// fails the load, with the EmbeddingCacheUnavailable, so that the job can be retried later.
import { EmbeddingCacheUnavailable, fetchCoverage, fetchDatasetStates, indexStates, requestCacheBuild, type CacheEndpoint } from '@iisan/embedding-cache/client'
import { closeStore, emptyModality, type Modality, type ModalityStates } from '@iisan/model/cached-states'
import { defaultSideLayers, sideLayersFor } from '@iisan/model/san'
import type { ProtocolData } from '@iisan/model/data'
import { TrainingCancelled } from '@iisan/model/trainer'
import type { LoadedStates } from './inputs.ts'
import type { JobProgress } from './progress.ts'

export interface CacheWaitOptions {
  /**
   * The SAN's side layers of the text backbone (default: layer 0 and every other layer). Only
   * these layers are kept in memory (the image backbone's at the same relative depths).
   */
  sideLayers?: number[]
  pollMs?: number
  /** give up waiting for the cache after this long */
  timeoutMs?: number
  /**
   * How long the cache may stay unreachable (network errors, 5xx) before the load fails with
   * EmbeddingCacheUnavailable (default 120 s). Counted from the first failed call of an outage;
   * any answer ends the outage.
   */
  outageBudgetMs?: number
  /** Pause after the first failed call of an outage, doubled after each further one (default 1 s). */
  retryInitialMs?: number
  /** Longest pause between attempts during an outage (default 15 s). */
  retryMaxMs?: number
  isCancelled?: () => boolean | Promise<boolean>
}

export class CacheNotReady extends Error {}

/** What the job's progress shows while caching; `message` says why it is not moving. */
type CachingProgress = JobProgress & { phase: 'caching'; message?: string }

export async function loadStatesFromCache(
  cache: CacheEndpoint,
  datasetId: string,
  data: Pick<ProtocolData, 'itemKeys' | 'numItems'>,
  report: (progress: JobProgress) => Promise<void>,
  options: CacheWaitOptions = {},
): Promise<LoadedStates> {
  const pollMs = options.pollMs ?? 1000
  const deadline = Date.now() + (options.timeoutMs ?? 6 * 3600_000)
  const budgetMs = options.outageBudgetMs ?? 120_000
  const initialMs = options.retryInitialMs ?? 1000
  const maxMs = options.retryMaxMs ?? 15_000
  let progress: CachingProgress = { phase: 'caching', cached: 0, total: 0, fraction: 0 }
  // the trainer's own cancellation: the job is cancelled, or handed back on shutdown
  const checkCancelled = async () => {
    if (await options.isCancelled?.()) throw new TrainingCancelled()
  }

  /** `call`, repeated with backoff while the cache is unavailable; true in `recovered` after an outage. */
  const withOutages = async <T>(what: string, call: () => Promise<T>): Promise<{ value: T; recovered: boolean }> => {
    let outageSince: number | undefined
    let delay = initialMs
    for (;;) {
      try {
        return { value: await call(), recovered: outageSince !== undefined }
      } catch (e) {
        if (!(e instanceof EmbeddingCacheUnavailable)) throw e
        outageSince ??= Date.now()
        const elapsed = Date.now() - outageSince
        if (elapsed >= budgetMs) {
          const seconds = (ms: number) => `${Math.round(ms / 1000)} s`
          throw new EmbeddingCacheUnavailable(e.status, e.code, `${e.message} (${what}; unreachable for ${seconds(elapsed)}, the outage budget is ${seconds(budgetMs)})`, e.details, { cause: e })
        }
        const pause = Math.min(delay, budgetMs - elapsed)
        delay = Math.min(delay * 2, maxMs)
        const waiting: CachingProgress = {
          ...progress,
          message: `embedding cache unreachable (${e.code}) while ${what}, for ${Math.round(elapsed / 1000)} s; retrying in ${Math.ceil(pause / 1000)} s (giving up after ${Math.round(budgetMs / 1000)} s)`,
        }
        await report(waiting)
        await checkCancelled()
        await new Promise((resolve) => setTimeout(resolve, pause))
      }
    }
  }
  const requestBuild = () => withOutages('starting the cache build', () => requestCacheBuild(cache, datasetId))

  await requestBuild()
  for (;;) {
    const { value: coverage, recovered } = await withOutages('waiting for the cache build', () => fetchCoverage(cache, datasetId))
    // A chunk in flight when the cache died may have used up its attempts and failed the build;
    // asking again resumes it (or starts a new one for what is left). Idempotent otherwise.
    if (recovered) await requestBuild()
    const total = coverage.backbones.reduce((s, b) => s + b.total, 0)
    const settled = coverage.backbones.reduce((s, b) => s + b.done + b.failed, 0)
    progress = { phase: 'caching', cached: settled, total, fraction: 0 }
    await report(progress)
    if (coverage.backbones.length === 0) throw new CacheNotReady('the embedding cache has no backbone configured')
    if (settled >= total) break
    if (Date.now() > deadline) throw new CacheNotReady(`the embedding cache did not finish in time (${settled}/${total} states)`)
    await checkCancelled()
    await new Promise((resolve) => setTimeout(resolve, pollMs))
  }

  const stores: Partial<Record<Modality, ModalityStates>> = {}
  const backbones: Record<Modality, string | null> = { text: null, image: null }
  let reference: { layers: number[]; numLayers: number } | undefined
  try {
    for (const modality of ['text', 'image'] as const) {
      // float16 as stored, side layers only (a quarter of the float32 size), written to a rows file
      // as they stream in: training reads each batch's rows from it, so the states cost page cache,
      // not process memory (Scientific, base models: 0.2 GB per modality). A stream cut off midway
      // is fetched again whole, into a new file (the cut one's is given back).
      const { value: fetched } = await withOutages(`streaming the ${modality} states`, () =>
        fetchDatasetStates(cache, datasetId, modality, {
          keep: 'float16-file',
          selectLayers: (header) => {
            const layers = reference ? sideLayersFor(reference.layers, reference.numLayers, header.numLayers) : (options.sideLayers ?? defaultSideLayers(header.numLayers))
            reference ??= { layers, numLayers: header.numLayers }
            return layers
          },
        }),
      )
      if (!fetched) continue
      backbones[modality] = fetched.fingerprint
      // the protocol's item keys are Item.id strings (index 0: padding)
      stores[modality] = { ...indexStates(fetched, data.itemKeys.slice(1).map(Number)), layers: fetched.layers }
    }
  } catch (err) {
    // the text rows file goes back if the image states cannot be had (cancelled, cache gone)
    for (const store of Object.values(stores)) closeStore(store)
    throw err
  }
  const shaped = stores.text ?? stores.image
  if (!shaped) throw new CacheNotReady('the embedding cache returned no states')
  const absent = () => emptyModality(data.numItems, shaped.numLayers, shaped.width)
  return { states: { text: stores.text ?? absent(), image: stores.image ?? absent() }, backbones }
}

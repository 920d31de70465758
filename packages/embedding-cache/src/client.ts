// HTTP client of the embedding-cache service, for the training worker and the API.
import type { Modality } from '@iisan/storage'
import type { CacheBuildView, DatasetCoverage, ItemCoverage } from './coverage.ts'
import { StateStreamDecoder, type DecodedStates, type StateStreamHeader } from './format.ts'

/** Body of POST /v1/cache-builds (202). */
export interface CacheBuildsResponse {
  builds: (CacheBuildView & { chunks: number; chunksEnqueued: number; resumed: boolean })[]
}

/** Body of POST /v1/items/encode (200). */
export interface EncodeItemsResponse {
  items: ItemCoverage[]
  encoded: Record<Modality, number>
  failed: Record<Modality, number>
  seconds: number
}

export class EmbeddingCacheClientError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message)
    this.name = 'EmbeddingCacheClientError'
  }
}

export interface DatasetStates extends DecodedStates {
  /** With `expectedItemIds`: the expected items that have no row (not cached yet, failed, or no image). */
  missingItemIds?: Int32Array
}

export interface FetchStatesOptions {
  /**
   * The item ids the caller will index by (e.g. the dataset's items as loaded for training). A
   * record for any other item fails the fetch; expected items without a record are listed in
   * `missingItemIds`.
   */
  expectedItemIds?: ArrayLike<number>
  /** 'float16' keeps the stream's float16 bit patterns (Uint16Array, half the memory) */
  keep?: 'float32' | 'float16'
  /** keep only these backbone layers of each item, chosen from the stream header (L, d) */
  selectLayers?: (header: StateStreamHeader) => number[] | undefined
  signal?: AbortSignal
  /** Alternative fetch implementation (tests, instrumentation). */
  fetch?: typeof fetch
}

function base(url: string): string {
  return url.replace(/\/+$/, '')
}

async function failure(res: Response): Promise<EmbeddingCacheClientError> {
  const text = await res.text().catch(() => '')
  try {
    const body = JSON.parse(text) as { error?: { code?: string; message?: string; details?: unknown } }
    if (body.error?.code) return new EmbeddingCacheClientError(res.status, body.error.code, body.error.message ?? res.statusText, body.error.details)
  } catch {
    // not JSON
  }
  return new EmbeddingCacheClientError(res.status, `HTTP_${res.status}`, text.slice(0, 200) || res.statusText)
}

/**
 * All stored states of a dataset for one modality, streamed from the cache service and decoded
 * incrementally (float16 → float32) into ONE preallocated Float32Array [rows, L+1, d]; row r
 * belongs to Item.id `itemIds[r]` (ascending). Items without a state (no image, failed input,
 * not cached yet) have no row. Returns null when the service has no backbone for the modality.
 * Throws EmbeddingCacheClientError (HTTP errors, e.g. 404 NOT_FOUND for an unknown dataset) or
 * StateStreamError (malformed or truncated stream).
 */
export async function fetchDatasetStates(
  baseUrl: string,
  datasetId: string,
  modality: Modality,
  options: FetchStatesOptions = {},
): Promise<DatasetStates | null> {
  const doFetch = options.fetch ?? fetch
  const url = `${base(baseUrl)}/v1/datasets/${encodeURIComponent(datasetId)}/states?modality=${encodeURIComponent(modality)}`
  const res = await doFetch(url, { signal: options.signal, headers: { accept: 'application/octet-stream' } })
  if (!res.ok) {
    const err = await failure(res)
    if (err.code === 'BACKBONE_NOT_CONFIGURED') return null
    throw err
  }
  if (!res.body) throw new EmbeddingCacheClientError(res.status, 'EMPTY_RESPONSE', 'state stream response has no body')
  const expected = options.expectedItemIds ? Array.from(options.expectedItemIds) : undefined
  const decoder = new StateStreamDecoder({ expectedItemIds: expected, keep: options.keep, selectLayers: options.selectLayers })
  const reader = res.body.getReader()
  try {
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      decoder.push(value)
    }
  } catch (err) {
    await reader.cancel().catch(() => undefined)
    throw err
  }
  const states: DatasetStates = decoder.end()
  if (expected) {
    const have = new Set(states.itemIds)
    states.missingItemIds = Int32Array.from(expected.filter((id) => !have.has(id)))
  }
  return states
}

/** The layout @iisan/model trains on (ModalityStates): model index → row, −1 = no state. */
export interface IndexedStates {
  numLayers: number
  width: number
  /** [N + 1]: rowOf[k] = row of `data` for the item at model index k (1-based; 0 = padding). */
  rowOf: Int32Array
  /** The fetched data, not copied. */
  data: Float32Array | Uint16Array
}

/**
 * Index fetched states by model index: `itemIdsByIndex[k − 1]` is the Item.id at model index k
 * (items ordered by id, as the data protocol does).
 */
export function indexStates(states: Pick<DatasetStates, 'numLayers' | 'width' | 'itemIds' | 'data'>, itemIdsByIndex: ArrayLike<number>): IndexedStates {
  const rowById = new Map<number, number>()
  states.itemIds.forEach((id, row) => rowById.set(id, row))
  const rowOf = new Int32Array(itemIdsByIndex.length + 1).fill(-1)
  for (let k = 0; k < itemIdsByIndex.length; k++) rowOf[k + 1] = rowById.get(itemIdsByIndex[k]) ?? -1
  return { numLayers: states.numLayers, width: states.width, rowOf, data: states.data }
}

async function postJson<T>(url: string, body: unknown, fetchImpl: typeof fetch = fetch): Promise<T> {
  const res = await fetchImpl(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
  if (!res.ok) throw await failure(res)
  return (await res.json()) as T
}

async function getJson<T>(url: string, fetchImpl: typeof fetch = fetch): Promise<T> {
  const res = await fetchImpl(url)
  if (!res.ok) throw await failure(res)
  return (await res.json()) as T
}

/** POST /v1/cache-builds: start (or resume) the cache build of a dataset. */
export function requestCacheBuild(baseUrl: string, datasetId: string): Promise<CacheBuildsResponse> {
  return postJson(`${base(baseUrl)}/v1/cache-builds`, { datasetId })
}

/** POST /v1/items/encode: compute missing states of a few items now (cold start); per-item coverage. */
export function requestEncodeItems(baseUrl: string, itemIds: number[]): Promise<EncodeItemsResponse> {
  return postJson(`${base(baseUrl)}/v1/items/encode`, { itemIds })
}

/** GET /v1/datasets/:id/coverage */
export function fetchCoverage(baseUrl: string, datasetId: string): Promise<DatasetCoverage> {
  return getJson(`${base(baseUrl)}/v1/datasets/${encodeURIComponent(datasetId)}/coverage`)
}

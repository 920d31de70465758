// HTTP client of the embedding-cache service, for the training worker and the API.
import type { Modality } from '@iisan/storage'
import type { CacheBuildView, DatasetCoverage, ItemCoverage } from './coverage.ts'
import { StateStreamDecoder, type DecodedStates, type StateStreamHeader, type StatesKeep } from './format.ts'

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

/**
 * Where the embedding-cache service is and how to authenticate to it: `token` is the shared
 * INTERNAL_TOKEN, sent as `Authorization: Bearer <token>`. Every function below also takes a bare
 * URL, an endpoint without a token (a cache on loopback with no INTERNAL_TOKEN).
 */
export interface CacheEndpoint {
  url: string
  token?: string
}

/** The endpoint of the configured cache (`config.embeddingCacheUrl`, `config.internalToken`). */
export function cacheEndpoint(url: string, token?: string): CacheEndpoint {
  return token === undefined ? { url } : { url, token }
}

/**
 * A failed call to the embedding cache. `status` is the HTTP status, null when no answer came
 * (network error, timeout); `code` the cache's machine-readable error code (or the network
 * error's, e.g. ECONNREFUSED). Always thrown as one of the two subclasses below.
 */
export class EmbeddingCacheClientError extends Error {
  constructor(
    readonly status: number | null,
    readonly code: string,
    message: string,
    readonly details?: unknown,
    options?: ErrorOptions,
  ) {
    super(message, options)
    this.name = 'EmbeddingCacheClientError'
  }
}

/**
 * The cache could not be reached (connection refused or reset, DNS failure, timeout, a stream
 * cut off midway) or answered 5xx: it is down or restarting, so the same call may succeed later.
 */
export class EmbeddingCacheUnavailable extends EmbeddingCacheClientError {
  readonly retryable = true
  constructor(status: number | null, code: string, message: string, details?: unknown, options?: ErrorOptions) {
    super(status, code, message, details, options)
    this.name = 'EmbeddingCacheUnavailable'
  }
}

/** The cache refused the request (4xx: unknown dataset, invalid input, bad token): final. */
export class EmbeddingCacheRejected extends EmbeddingCacheClientError {
  readonly retryable = false
  constructor(status: number, code: string, message: string, details?: unknown) {
    super(status, code, message, details)
    this.name = 'EmbeddingCacheRejected'
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
  /**
   * 'float16' keeps the stream's float16 bit patterns (Uint16Array, half the memory);
   * 'float16-file' writes them to a rows file instead (no process memory; close it when done)
   */
  keep?: StatesKeep
  /** keep only these backbone layers of each item, chosen from the stream header (L, d) */
  selectLayers?: (header: StateStreamHeader) => number[] | undefined
  signal?: AbortSignal
  /** Alternative fetch implementation (tests, instrumentation). */
  fetch?: typeof fetch
}

function resolve(target: CacheEndpoint | string): CacheEndpoint {
  const endpoint = typeof target === 'string' ? { url: target } : target
  return { ...endpoint, url: endpoint.url.replace(/\/+$/, '') }
}

function authHeaders(endpoint: CacheEndpoint): Record<string, string> {
  return endpoint.token ? { authorization: `Bearer ${endpoint.token}` } : {}
}

/** Planning a build and reading coverage are a few queries; longer means the cache is stuck. */
const JSON_TIMEOUT_MS = 60_000
/** Cold-start encoding reads images (15 s each at most) and runs the backbones on up to 256 items. */
const ENCODE_TIMEOUT_MS = 300_000

/** The code of the network error under a failed fetch (`TypeError: fetch failed` → cause). */
function networkCode(e: unknown, depth = 0): string | undefined {
  if (depth > 4 || e === null || typeof e !== 'object') return undefined
  const { code, name, cause, errors } = e as { code?: unknown; name?: unknown; cause?: unknown; errors?: unknown }
  if (name === 'TimeoutError') return 'TIMEOUT'
  if (typeof code === 'string') return code
  for (const inner of [cause, ...(Array.isArray(errors) ? errors : [])]) {
    const found = networkCode(inner, depth + 1)
    if (found) return found
  }
  return undefined
}

/** The most specific message under a network error: undici's cause, or the first of an AggregateError. */
function networkDetail(e: unknown): string {
  const cause = (e as { cause?: unknown } | null)?.cause as { message?: unknown; errors?: { message?: unknown }[] } | undefined
  for (const candidate of [cause?.message, cause?.errors?.[0]?.message, e instanceof Error ? e.message : String(e)]) {
    if (typeof candidate === 'string' && candidate) return candidate
  }
  return 'network error'
}

function unreachable(endpoint: CacheEndpoint, e: unknown, during?: string): EmbeddingCacheUnavailable {
  const code = networkCode(e) ?? 'NETWORK_ERROR'
  const detail = networkDetail(e)
  const what = `${during ? `${during}: ` : ''}${detail.includes(code) ? detail : `${code} ${detail}`}`
  return new EmbeddingCacheUnavailable(null, code, `embedding cache unreachable at ${endpoint.url}: ${what}`, undefined, { cause: e })
}

/** What fetch rejects with when no answer came: TypeError (network) or the timeout's DOMException. */
function isTransportError(e: unknown): boolean {
  return e instanceof TypeError || (e as { name?: unknown } | null)?.name === 'TimeoutError'
}

interface SendOptions {
  method?: string
  body?: unknown
  accept?: string
  /** the caller's cancellation: its abort is rethrown as is, not as an outage */
  signal?: AbortSignal
  timeoutMs?: number
  fetch?: typeof fetch
}

/** One request; network failures and 5xx become EmbeddingCacheUnavailable, 4xx EmbeddingCacheRejected. */
async function send(endpoint: CacheEndpoint, path: string, options: SendOptions = {}): Promise<Response> {
  const doFetch = options.fetch ?? fetch
  const signals = [options.signal, options.timeoutMs ? AbortSignal.timeout(options.timeoutMs) : undefined].filter((s): s is AbortSignal => s !== undefined)
  let res: Response
  try {
    res = await doFetch(`${endpoint.url}${path}`, {
      method: options.method ?? 'GET',
      headers: {
        ...authHeaders(endpoint),
        ...(options.accept ? { accept: options.accept } : {}),
        ...(options.body !== undefined ? { 'content-type': 'application/json' } : {}),
      },
      body: options.body !== undefined ? JSON.stringify(options.body) : undefined,
      signal: signals.length > 1 ? AbortSignal.any(signals) : signals[0],
    })
  } catch (e) {
    if (options.signal?.aborted || !isTransportError(e)) throw e
    throw unreachable(endpoint, e)
  }
  if (!res.ok) throw await failure(endpoint, res)
  return res
}

async function failure(endpoint: CacheEndpoint, res: Response): Promise<EmbeddingCacheClientError> {
  const text = await res.text().catch(() => '')
  let code = `HTTP_${res.status}`
  let message = text.slice(0, 200) || res.statusText
  let details: unknown
  try {
    const body = JSON.parse(text) as { error?: { code?: string; message?: string; details?: unknown } }
    if (body.error?.code) {
      code = body.error.code
      message = body.error.message ?? res.statusText
      details = body.error.details
    }
  } catch {
    // not JSON
  }
  // 5xx: a cache that is starting, overloaded or lost its database may answer the same call later
  if (res.status >= 500) return new EmbeddingCacheUnavailable(res.status, code, message, details)
  return new EmbeddingCacheRejected(res.status, code, message, details)
}

/**
 * All stored states of a dataset for one modality, streamed from the cache service and decoded
 * incrementally (float16 → float32) into ONE preallocated Float32Array [rows, L+1, d]; row r
 * belongs to Item.id `itemIds[r]` (ascending). Items without a state (no image, failed input,
 * not cached yet) have no row. Returns null when the service has no backbone for the modality.
 * Throws EmbeddingCacheRejected (4xx, e.g. 404 NOT_FOUND for an unknown dataset),
 * EmbeddingCacheUnavailable (unreachable, 5xx, or the connection lost midway through the stream)
 * or StateStreamError (malformed stream, or a record the caller did not expect).
 */
export async function fetchDatasetStates(
  cache: CacheEndpoint | string,
  datasetId: string,
  modality: Modality,
  options: FetchStatesOptions = {},
): Promise<DatasetStates | null> {
  const endpoint = resolve(cache)
  let res: Response
  try {
    res = await send(endpoint, `/v1/datasets/${encodeURIComponent(datasetId)}/states?modality=${encodeURIComponent(modality)}`, {
      accept: 'application/octet-stream',
      signal: options.signal,
      fetch: options.fetch,
    })
  } catch (e) {
    if (e instanceof EmbeddingCacheRejected && e.code === 'BACKBONE_NOT_CONFIGURED') return null
    throw e
  }
  if (!res.body) throw new EmbeddingCacheUnavailable(res.status, 'EMPTY_RESPONSE', 'state stream response has no body')
  const expected = options.expectedItemIds ? Array.from(options.expectedItemIds) : undefined
  const decoder = new StateStreamDecoder({ expectedItemIds: expected, keep: options.keep, selectLayers: options.selectLayers })
  const reader = res.body.getReader()
  try {
    for (;;) {
      let chunk: ReadableStreamReadResult<Uint8Array>
      try {
        chunk = await reader.read()
      } catch (e) {
        if (options.signal?.aborted) throw e
        // the service went away mid-stream (killed, restarted): the stream can be fetched again
        throw unreachable(endpoint, e, 'state stream cut off')
      }
      if (chunk.done) break
      decoder.push(chunk.value)
    }
  } catch (err) {
    decoder.abort()
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
  data: DecodedStates['data']
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

async function json<T>(endpoint: CacheEndpoint, path: string, options: SendOptions): Promise<T> {
  const res = await send(endpoint, path, options)
  try {
    return (await res.json()) as T
  } catch (e) {
    // a complete answer that is not JSON is something else at this URL: waiting will not fix it
    if (e instanceof SyntaxError) throw new EmbeddingCacheRejected(res.status, 'INVALID_RESPONSE', `the answer from ${endpoint.url}${path} is not JSON`)
    // the body was cut off (the cache restarted while answering)
    throw unreachable(endpoint, e, 'reading the response')
  }
}

/** POST /v1/cache-builds: start (or resume) the cache build of a dataset. */
export function requestCacheBuild(cache: CacheEndpoint | string, datasetId: string): Promise<CacheBuildsResponse> {
  return json(resolve(cache), '/v1/cache-builds', { method: 'POST', body: { datasetId }, timeoutMs: JSON_TIMEOUT_MS })
}

/** POST /v1/items/encode: compute missing states of a few items now (cold start); per-item coverage. */
export function requestEncodeItems(cache: CacheEndpoint | string, itemIds: number[]): Promise<EncodeItemsResponse> {
  return json(resolve(cache), '/v1/items/encode', { method: 'POST', body: { itemIds }, timeoutMs: ENCODE_TIMEOUT_MS })
}

/** GET /v1/datasets/:id/coverage */
export function fetchCoverage(cache: CacheEndpoint | string, datasetId: string): Promise<DatasetCoverage> {
  return json(resolve(cache), `/v1/datasets/${encodeURIComponent(datasetId)}/coverage`, { timeoutMs: JSON_TIMEOUT_MS })
}

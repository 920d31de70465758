/**
 * @iisan/embedding-cache — the hidden-state cache: per-item, per-layer [CLS] states of the
 * configured text and image backbones, computed in idempotent queue chunks, stored in Postgres
 * as float16 keyed by (backbone fingerprint, input content hash), served in bulk as a binary
 * stream. services/embedding-cache is the thin HTTP + worker shell around it.
 */
export {
  BackboneRegistry,
  resolveBackboneDirs,
  getDefaultRegistry,
  type LoadedBackbone,
  type BackboneRef,
  type BackboneDirs,
} from './registry.ts'
export {
  planCacheBuild,
  processChunk,
  refreshBuildProgress,
  markBuildFailed,
  chunkJobId,
  keyColumn,
  TransientChunkError,
  DEFAULT_CHUNK_SIZE,
  type PlanOptions,
  type PlannedBuild,
  type ChunkContext,
  type ChunkResult,
} from './build.ts'
export { encodeAndStore, inputKey, DEFAULT_GROUP_SIZE, type EncodableItem, type EncodeOptions, type EncodeOutcome } from './encode.ts'
export { encodeItemsNow, type EncodeItemsOptions, type EncodeItemsResult, type EncodedItem, type ItemModalityState } from './cold-start.ts'
export {
  getDatasetCoverage,
  getCacheBuildView,
  type DatasetCoverage,
  type BackboneCoverage,
  type CacheBuildView,
  type ItemCoverage,
  type ItemModalityCoverage,
  type ItemModalityStatus,
} from './coverage.ts'
export { openDatasetStateStream, type StateStream, type StateStreamOptions } from './states.ts'
export { unseenItemStates, cachedStatesOf, decodeStoredState, type ItemStates } from './stored-states.ts'
export {
  STATE_STREAM_MAGIC,
  STATE_STREAM_CONTENT_TYPE,
  StateStreamDecoder,
  StateStreamError,
  encodeStateStreamHeader,
  stateRecordBytes,
  stateStreamBytes,
  type StateStreamHeader,
  type DecodedStates,
} from './format.ts'
export {
  fetchDatasetStates,
  indexStates,
  requestCacheBuild,
  requestEncodeItems,
  fetchCoverage,
  cacheEndpoint,
  EmbeddingCacheClientError,
  EmbeddingCacheUnavailable,
  EmbeddingCacheRejected,
  type CacheEndpoint,
  type DatasetStates,
  type FetchStatesOptions,
  type IndexedStates,
  type CacheBuildsResponse,
  type EncodeItemsResponse,
} from './client.ts'
export { encodeFloat16LE, decodeFloat16LE, float16BytesToFloat32 } from './float16.ts'
export { readItemImage, ImageSourceError, type ImageSourceOptions } from './images.ts'
export { CacheError, isCacheError, type CacheErrorCode } from './errors.ts'

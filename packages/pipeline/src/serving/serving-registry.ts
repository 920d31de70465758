// Holds the models the API serves: one ServingModel per model version, loaded from Postgres with
// the dataset's item ids and titles, and the active version per dataset.
// - Swapping a version replaces a map entry; in-flight requests keep the object they hold, which
//   is disposed only after a grace period, so nothing fails during a switch.
// - Loading an IISAN version reconciles it: dataset items with cached states that the version
//   lacks (added while it trained, or while it was not loaded) are embedded by its SAN and
//   appended, in Postgres and in memory. Cold start is therefore just "cache, then reload".
// - A reload takes over the approximate index of the copy it replaces when that copy's rows are its
//   first rows (only the appended rows are indexed); otherwise it builds one beside serving.
// - At most `maxLoaded` inactive versions stay in memory (least recently used go first).
import { unseenItemStates } from '@iisan/embedding-cache/stored-states'
import type { Modality } from '@iisan/model/cached-states'
import { ServingModel, type RecommendRequest, type ScoredItem, type SimilarRequest } from '@iisan/model/serving'
import { ANN_MIN_ITEMS, type ApproximateIndexOptions } from '@iisan/model/item-index'
import type { IndexSource, IndexStore } from '@iisan/model/item-index-store'
import { MicroBatcher } from './micro-batcher.ts'
import { appendModelVersionItems, decodeItemEmbeddings, describeItems, describeItemsOutside, getModelVersion, isStorageError, listActiveModelVersions, type ItemDescription, type PrismaClient } from '@iisan/storage'

const DISPOSE_GRACE_MS = 60_000
/** Items outside a version that a load describes ahead (about 100 bytes each); the rest are read per request. */
export const OUTSIDE_ITEMS_HELD = 100_000

export interface LoadedModel {
  id: string
  datasetId: string
  method: string
  serving: ServingModel
  /** model index (1..N) → Item.id / external id / title */
  itemIds: number[]
  externalIds: string[]
  titles: string[]
  /** external item id → model index */
  indexOfExternal: Map<string, number>
  /** Item.id → model index */
  indexOfItemId: Map<number, number>
  /**
   * The dataset's items this version has no row for (the protocol dropped them, or they came
   * after it and have no states), as of the load and at most OUTSIDE_ITEMS_HELD of them: a stored
   * history that holds them is described without a query. Their titles are as fresh as the
   * version's own (read at the same load); an item added later is read from the catalogue.
   */
  outsideItems: Map<number, ItemDescription>
  /** The external ids of outsideItems: an explicit history naming them needs no catalogue query either. */
  outsideExternalIds: Set<string>
  /** The hot path: answered together with the other requests that reach this version in the same turn. */
  recommend(request: RecommendRequest): Promise<ScoredItem[]>
  similar(request: SimilarRequest): Promise<ScoredItem[]>
}

/** Batches the hot path has run and the requests they answered, since the registry started. */
export interface BatchingStats {
  batches: number
  requests: number
}

/** A loaded version's hot path: its requests batched per kind. */
function batchedQueries(serving: ServingModel, stats: BatchingStats): Pick<LoadedModel, 'recommend' | 'similar'> {
  const maxBatch = () => serving.maxBatch
  const count = (size: number) => {
    stats.batches++
    stats.requests += size
  }
  const recommendations = new MicroBatcher<RecommendRequest, ScoredItem[]>((batch) => serving.recommendMany(batch), maxBatch, count)
  const similarItems = new MicroBatcher<SimilarRequest, ScoredItem[]>((batch) => serving.similarMany(batch), maxBatch, count)
  return { recommend: (request) => recommendations.submit(request), similar: (request) => similarItems.submit(request) }
}

export interface Recommendation {
  itemId: string
  title: string
  score: number
}

export interface ServingRegistryOptions {
  /** inactive versions kept loaded at most (active ones always stay) */
  maxLoaded?: number
  /**
   * Catalogue size from which a loaded version builds an approximate index beside serving (the
   * exact scan answers until it is ready). Default: @iisan/model's ANN_MIN_ITEMS.
   */
  approximateFrom?: number
  /** Where the indexes are shared with the host's other replicas (item-index-store.ts); none: built here alone. */
  indexStore?: IndexStore
  /** How the recommendations' index is built and searched (its beams); the library defaults otherwise. */
  index?: ApproximateIndexOptions
  /**
   * Told when a version's index is ready, or could not be built (it then stays exact). `reused`:
   * items whose rows the index already held, taken over from the copy this load replaced (0: built
   * from scratch).
   */
  onIndex?: (event: { modelVersionId: string; items: number; seconds: number; reused: number; sources: readonly IndexSource[]; searchBeams?: { recommendations: number; similar: number }; error?: unknown }) => void
  /** Told where each loaded version scores (ServingModel.useRuntime); `error`: ORT failed to take it, tfjs serves. */
  onScoring?: (event: { modelVersionId: string; runtime: 'onnx' | 'tfjs'; error?: unknown }) => void
}

export class ServingRegistry {
  private readonly models = new Map<string, Promise<LoadedModel>>()
  private readonly lastUsed = new Map<string, number>()
  private readonly reloads = new Map<string, Promise<LoadedModel | null>>()
  private active = new Map<string, string>() // datasetId → model version id
  private readonly maxLoaded: number
  private readonly approximateFrom: number
  private readonly indexStore: IndexStore | undefined
  private readonly indexOptions: ApproximateIndexOptions | undefined
  private readonly onIndex: ServingRegistryOptions['onIndex']
  private readonly onScoring: ServingRegistryOptions['onScoring']
  private readonly batching: BatchingStats = { batches: 0, requests: 0 }
  /** Loaded copies whose approximate index is ready (a copy leaves when it is disposed). */
  private readonly indexedCopies = new Set<LoadedModel>()

  constructor(
    private readonly prisma: PrismaClient,
    options: ServingRegistryOptions = {},
  ) {
    this.maxLoaded = options.maxLoaded ?? 8
    this.approximateFrom = options.approximateFrom ?? ANN_MIN_ITEMS
    this.indexStore = options.indexStore
    this.indexOptions = options.index
    this.onIndex = options.onIndex
    this.onScoring = options.onScoring
  }

  /** Re-reads which versions are active (at start-up and whenever an activation is announced). */
  async refreshActive(): Promise<void> {
    const rows = await listActiveModelVersions(this.prisma)
    this.active = new Map(rows.map((r) => [r.datasetId, r.id]))
  }

  batchingStats(): BatchingStats {
    return { ...this.batching }
  }

  activeModelIds(): Map<string, string> {
    return new Map(this.active)
  }

  /** Version ids currently in memory. */
  loadedModelIds(): string[] {
    return [...this.models.keys()]
  }

  /** Versions in memory that answer from an approximate index; the others scan exactly (building, or below APPROXIMATE_INDEX_FROM). */
  indexedModelIds(): string[] {
    return [...new Set([...this.indexedCopies].filter((m) => this.models.has(m.id)).map((m) => m.id))]
  }

  /** The loaded model for a version id, or null if no such version exists. */
  async get(modelVersionId: string): Promise<LoadedModel | null> {
    this.lastUsed.set(modelVersionId, performance.now())
    let pending = this.models.get(modelVersionId)
    if (!pending) {
      pending = this.load(modelVersionId)
      this.models.set(modelVersionId, pending)
      pending.catch(() => this.models.delete(modelVersionId))
      pending.then(() => this.evictIdle()).catch(() => undefined)
    }
    try {
      return await pending
    } catch (e) {
      if (e instanceof ModelNotFound) return null
      throw e
    }
  }

  /**
   * Loads a fresh copy (e.g. after cold-start items were cached) and swaps it in once ready.
   * Reloads of one version run one after another, so a slower, older load can never replace a
   * newer one.
   */
  reload(id: string): Promise<LoadedModel | null> {
    const next = (this.reloads.get(id) ?? Promise.resolve(null)).catch(() => null).then(() => this.swapIn(id))
    this.reloads.set(id, next)
    next.finally(() => {
      if (this.reloads.get(id) === next) this.reloads.delete(id)
    }).catch(() => undefined)
    return next
  }

  /**
   * For another replica's announcement that a version grew: reload only a copy this replica
   * holds that has fewer items than Postgres (the announcing replica's own copy is current).
   */
  async reloadIfBehind(id: string): Promise<void> {
    const pending = this.models.get(id)
    if (!pending) return // not in memory: it loads fresh when first asked for
    const [held, stored] = await Promise.all([pending.catch(() => null), this.prisma.modelVersion.findUnique({ where: { id }, select: { numItems: true } })])
    if (!stored) {
      this.forget(id)
      return
    }
    if (!held || held.itemIds.length - 1 < stored.numItems) await this.reload(id)
  }

  private async swapIn(id: string): Promise<LoadedModel | null> {
    const previous = this.models.get(id)
    const next = this.load(id, previous)
    try {
      await next
    } catch (e) {
      if (e instanceof ModelNotFound) {
        this.evict(id)
        return null
      }
      throw e
    }
    this.models.set(id, next)
    this.lastUsed.set(id, performance.now())
    if (previous && previous !== next) this.disposeLater(previous)
    return next
  }

  /** Drops a cached model (e.g. after deletion); running requests finish with their copy. */
  evict(id: string): void {
    const previous = this.models.get(id)
    this.models.delete(id)
    this.lastUsed.delete(id)
    if (previous) this.disposeLater(previous)
  }

  /** A version deleted from Postgres: out of memory, and no longer any dataset's active one. */
  forget(id: string): void {
    this.evict(id)
    for (const [datasetId, activeId] of this.active) if (activeId === id) this.active.delete(datasetId)
  }

  private evictIdle(): void {
    const pinned = new Set(this.active.values())
    const idle = [...this.models.keys()].filter((id) => !pinned.has(id)).sort((a, b) => (this.lastUsed.get(a) ?? 0) - (this.lastUsed.get(b) ?? 0))
    while (idle.length > this.maxLoaded) this.evict(idle.shift()!)
  }

  private disposeLater(model: Promise<LoadedModel>): void {
    // A request may hold a model across an await (e.g. reading a user's history); give it time.
    setTimeout(() => {
      model
        .then((m) => {
          this.indexedCopies.delete(m)
          m.serving.dispose()
        })
        .catch(() => undefined)
    }, DISPOSE_GRACE_MS).unref()
  }

  /** `replacing`: the copy this load will replace (a reload), whose index it may take over. */
  private async load(id: string, replacing?: Promise<LoadedModel>, attempt = 0): Promise<LoadedModel> {
    const version = await getModelVersion(this.prisma, id)
    if (!version) throw new ModelNotFound(id)
    const D = version.embeddingDim
    const matrix = new Float32Array((version.numItems + 1) * D)
    matrix.set(decodeItemEmbeddings(version), D) // row 0 = padding
    const serving = ServingModel.load(version.weights, matrix, { approximateFrom: Infinity, indexStore: this.indexStore, index: this.indexOptions })
    // a batch becomes one ONNX Runtime run where it loads; tfjs serves otherwise, and if it fails.
    // Its product holds the rows packed only where it serves: below the approximate index's size.
    await serving.useRuntime({ packed: version.numItems < this.approximateFrom }).then(
      (onnx) => this.onScoring?.({ modelVersionId: id, runtime: onnx ? 'onnx' : 'tfjs' }),
      (error: unknown) => this.onScoring?.({ modelVersionId: id, runtime: 'tfjs', error }),
    )
    const loaded = await this.withItems(
      { id, datasetId: version.datasetId, method: version.method, serving, itemIds: [0], externalIds: [''], titles: [''], indexOfExternal: new Map(), indexOfItemId: new Map(), outsideItems: new Map(), outsideExternalIds: new Set(), ...batchedQueries(serving, this.batching) },
      version.itemIndex as number[],
    )
    const backbones = (version.config as { backbones?: Record<Modality, string | null> }).backbones
    if (loaded.serving.supportsColdStart && backbones) {
      try {
        await this.reconcile(loaded, backbones)
      } catch (e) {
        loaded.serving.dispose()
        if (e instanceof ReconcileRace && attempt < 3) return this.load(id, replacing, attempt + 1)
        throw e
      }
    }
    // after the reconciliation: the items it appended are the version's own now
    loaded.outsideItems = await describeItemsOutside(this.prisma, loaded.datasetId, loaded.itemIds.slice(1), OUTSIDE_ITEMS_HELD)
    loaded.outsideExternalIds = new Set(Array.from(loaded.outsideItems.values(), (item) => item.externalId))
    if (loaded.serving.numItems >= this.approximateFrom) await this.provideIndex(loaded, replacing)
    return loaded
  }

  /**
   * The version's approximate index: taken over from the copy it replaces when that copy's rows are
   * its first rows (before the swap, so the old copy answers meanwhile), else built beside serving.
   * A failure leaves it on the exact scan.
   */
  private async provideIndex(model: LoadedModel, replacing: Promise<LoadedModel> | undefined): Promise<void> {
    const started = performance.now()
    const held = await replacing?.catch(() => undefined)
    // a takeover that fails (e.g. the old copy disposed under it) costs only the build it would have saved
    const reused = held ? await model.serving.takeIndexFrom(held.serving).catch(() => 0) : 0
    const report = (error?: unknown) =>
      this.onIndex?.({
        modelVersionId: model.id,
        items: model.serving.numItems,
        seconds: (performance.now() - started) / 1000,
        reused,
        sources: model.serving.indexSources,
        ...(error === undefined ? { searchBeams: model.serving.indexSearchBeams } : { error }),
      })
    model.serving.buildIndex().then(() => {
      this.indexedCopies.add(model)
      report()
    }, report)
  }

  /** Appends item ids (already in the serving matrix) with their external ids and titles. */
  private async withItems(model: LoadedModel, itemIds: number[]): Promise<LoadedModel> {
    const byId = await describeItems(this.prisma, itemIds)
    for (const itemId of itemIds) {
      const index = model.itemIds.length
      const item = byId.get(itemId)
      model.itemIds.push(itemId)
      model.indexOfItemId.set(itemId, index)
      model.externalIds.push(item?.externalId ?? '')
      model.titles.push(item?.title ?? '')
      if (item) model.indexOfExternal.set(item.externalId, index)
    }
    return model
  }

  /** Embeds and stores the dataset's cached items this version lacks (see the file comment). */
  private async reconcile(model: LoadedModel, backbones: Record<Modality, string | null>): Promise<void> {
    const unseen = await unseenItemStates(this.prisma, model.datasetId, new Set(model.itemIds), backbones)
    if (unseen.ids.length === 0) return
    const rows = model.serving.embedNewItems(unseen.states)
    try {
      await appendModelVersionItems(this.prisma, model.id, unseen.ids, rows)
    } catch (e) {
      // another replica appended some of them first: its rows are as good as ours, so read back
      if (!isStorageError(e, 'CONFLICT')) throw e
      throw new ReconcileRace()
    }
    model.serving.appendItems(rows)
    await this.withItems(model, unseen.ids)
  }

  async close(): Promise<void> {
    for (const pending of this.models.values()) {
      try {
        ;(await pending).serving.dispose()
      } catch {
        // a failed load has nothing to dispose
      }
    }
    this.models.clear()
  }
}

export class ModelNotFound extends Error {
  constructor(readonly modelVersionId: string) {
    super(`model version ${modelVersionId} not found`)
  }
}

class ReconcileRace extends Error {}

export interface ModelRows {
  /** model indices of the ids the model has rows for, in the order given (repeats kept) */
  indices: number[]
  /** distinct ids it has no row for, in order of first occurrence */
  missing: string[]
}

/**
 * Which of these item ids the served model can use. The answer comes from the model's own rows,
 * never from its method: an ID-based version has rows for the items its training protocol kept,
 * a content-based one for every item it could embed, and either may lag behind the catalogue.
 */
export function rowsFor(model: LoadedModel, externalIds: readonly string[]): ModelRows {
  const indices: number[] = []
  const missing = new Set<string>()
  for (const id of externalIds) {
    const index = model.indexOfExternal.get(id)
    if (index === undefined) missing.add(id)
    else indices.push(index)
  }
  return { indices, missing: [...missing] }
}

export function toRecommendations(model: LoadedModel, scored: ScoredItem[]): Recommendation[] {
  return scored.map((s) => ({ itemId: model.externalIds[s.index], title: model.titles[s.index], score: s.score }))
}

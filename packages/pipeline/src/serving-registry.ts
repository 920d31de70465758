// Holds the models the API serves: one ServingModel per model version, loaded once from
// Postgres, with the dataset's item ids and titles, and the active version per dataset.
// Swapping the active version replaces a map entry; in-flight requests keep the model object
// they already hold, so nothing fails during a switch.
import { ServingModel, type ScoredItem } from '@iisan/model/serving'
import { decodeItemEmbeddings, getModelVersion, listActiveModelVersions, type PrismaClient } from '@iisan/storage'

const DISPOSE_GRACE_MS = 60_000

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
}

export interface Recommendation {
  itemId: string
  title: string
  score: number
}

export class ServingRegistry {
  private readonly models = new Map<string, Promise<LoadedModel>>()
  private active = new Map<string, string>() // datasetId → model version id

  constructor(private readonly prisma: PrismaClient) {}

  /** Re-reads which versions are active (at start-up and whenever an activation is announced). */
  async refreshActive(): Promise<void> {
    const rows = await listActiveModelVersions(this.prisma)
    this.active = new Map(rows.map((r) => [r.datasetId, r.id]))
  }

  activeModelIds(): Map<string, string> {
    return new Map(this.active)
  }

  /** The loaded model for a version id, or null if no such version exists. */
  async get(modelVersionId: string): Promise<LoadedModel | null> {
    let pending = this.models.get(modelVersionId)
    if (!pending) {
      pending = this.load(modelVersionId)
      this.models.set(modelVersionId, pending)
      pending.catch(() => this.models.delete(modelVersionId))
    }
    try {
      return await pending
    } catch (e) {
      if (e instanceof ModelNotFound) return null
      throw e
    }
  }

  private async load(id: string): Promise<LoadedModel> {
    const version = await getModelVersion(this.prisma, id)
    if (!version) throw new ModelNotFound(id)
    const items = await this.prisma.item.findMany({
      where: { id: { in: version.itemIndex as number[] } },
      select: { id: true, externalId: true, title: true },
    })
    const byId = new Map(items.map((i) => [i.id, i]))
    const itemIds = [0, ...(version.itemIndex as number[])]
    const D = version.embeddingDim
    const matrix = new Float32Array((version.numItems + 1) * D)
    matrix.set(decodeItemEmbeddings(version), D) // row 0 = padding
    const serving = ServingModel.load(version.weights, matrix)
    const externalIds = itemIds.map((itemId) => byId.get(itemId)?.externalId ?? '')
    return {
      id,
      datasetId: version.datasetId,
      method: version.method,
      serving,
      itemIds,
      externalIds,
      titles: itemIds.map((itemId) => byId.get(itemId)?.title ?? ''),
      indexOfExternal: new Map(externalIds.map((ext, index) => [ext, index] as const).filter(([ext]) => ext !== '')),
    }
  }

  /**
   * Loads a fresh copy (e.g. after cold-start items were appended) and swaps it in once ready.
   * Requests already holding the old copy finish with it; it is disposed a while later.
   */
  async reload(id: string): Promise<LoadedModel | null> {
    const previous = this.models.get(id)
    const next = this.load(id)
    try {
      await next
    } catch (e) {
      if (e instanceof ModelNotFound) {
        this.models.delete(id)
        return null
      }
      throw e
    }
    this.models.set(id, next)
    if (previous) this.disposeLater(previous)
    return next
  }

  /** Drops a cached model (e.g. after deletion); running requests finish with their copy. */
  evict(id: string): void {
    const previous = this.models.get(id)
    this.models.delete(id)
    if (previous) this.disposeLater(previous)
  }

  private disposeLater(model: Promise<LoadedModel>): void {
    // A request may hold a model across an await (e.g. reading a user's history); give it time.
    setTimeout(() => {
      model.then((m) => m.serving.dispose()).catch(() => undefined)
    }, DISPOSE_GRACE_MS).unref()
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

export function toRecommendations(model: LoadedModel, scored: ScoredItem[]): Recommendation[] {
  return scored.map((s) => ({ itemId: model.externalIds[s.index], title: model.titles[s.index], score: s.score }))
}

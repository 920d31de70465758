// Holds the models the API serves: one ServingModel per model version, loaded once from
// Postgres, with the dataset's item ids and titles, and the active version per dataset.
// Swapping the active version replaces a map entry; in-flight requests keep the model object
// they already hold, so nothing fails during a switch.
import { ServingModel, type ScoredItem } from '@iisan/model/serving'
import { decodeItemEmbeddings, getModelVersion, listActiveModelVersions, type PrismaClient } from '@iisan/storage'

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

  /** Drops a cached model (e.g. after deletion); running requests finish with their copy. */
  evict(id: string): void {
    this.models.delete(id)
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

/**
 * For tests that need the API but no worker and no backbone states: the API and an embedding
 * cache without backbones, in-process and listening, over a fresh platform; and model versions
 * made directly rather than trained.
 */
import { SequentialRecommender, initBackend, saveCheckpoint, sasRecIdConfig } from '@iisan/model'
import { createModelVersion, type CreateModelVersionInput, type PrismaClient } from '@iisan/storage'
import { createTestApi, createTestCache, createTestPlatform, type TestPlatform } from './platform.ts'

export interface QuickApi {
  platform: TestPlatform
  api: Awaited<ReturnType<typeof createTestApi>>
  /** The API's base URL. */
  base: string
  cacheUrl: string
  close(): Promise<void>
}

export async function startQuickApi(name: string): Promise<QuickApi> {
  // untrainedModelVersion builds models: the backend first
  await initBackend({ prefer: 'wasm' })
  const platform = await createTestPlatform(name, { TEXT_BACKBONE_DIR: 'none', IMAGE_BACKBONE_DIR: 'none' })
  const cache = await createTestCache(platform.env, `${name}-cache`, { worker: false })
  const cacheUrl = await cache.app.listen({ port: 0, host: '127.0.0.1' })
  const api = await createTestApi({ ...platform.env, EMBEDDING_CACHE_URL: cacheUrl }, `${name}-api`)
  const base = await api.app.listen({ port: 0, host: '127.0.0.1' })
  return {
    platform,
    api,
    base,
    cacheUrl,
    async close() {
      await api.close()
      await cache.close()
      await platform.close()
    },
  }
}

/** An untrained ID-SASRec version over every item of a dataset: loadable by the serving registry. */
export async function untrainedModelVersion(prisma: PrismaClient, datasetId: string, input: Partial<CreateModelVersionInput> = {}) {
  const D = 8
  const items = await prisma.item.findMany({ where: { datasetId }, orderBy: { id: 'asc' }, select: { id: true } })
  const model = new SequentialRecommender(sasRecIdConfig(items.length, { embeddingDim: D, numHeads: 2, numBlocks: 1 }))
  const weights = saveCheckpoint(model.params, model.config)
  model.params.dispose()
  return createModelVersion(prisma, {
    datasetId,
    method: 'sasrec-id',
    config: {},
    weights,
    itemEmbeddings: new Float32Array(items.length * D).fill(0.5),
    itemIndex: items.map((i) => i.id),
    embeddingDim: D,
    ...input,
  })
}

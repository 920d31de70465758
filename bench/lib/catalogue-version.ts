// A dataset of N synthetic items with a model version over them, stored the way a trained one is:
// for bench:serve's HTTP runs at catalogue scale (--http-sizes), where the API loads the version
// from PostgreSQL, builds its index and answers over the network. The matrix is
// synthetic-catalogue.ts's (shaped like trained embeddings); the user encoder has random weights
// and an item table of one row, since serving reads the matrix it is given.
import { mulberry32, saveCheckpoint } from '@iisan/model'
import { initBackend } from '@iisan/model/backend'
import { SequentialRecommender, sasRecIdConfig } from '@iisan/model/recommender'
import { createModelVersion, importDataset, type PrismaClient } from '@iisan/storage'
import { clusteredCatalogue } from './synthetic-catalogue.ts'

export interface CatalogueVersion {
  datasetId: string
  modelVersionId: string
  /** the items' external ids, in model order */
  itemExternalIds: string[]
  userIds: string[]
  seconds: { import: number; version: number }
}

/** Users of `historyLength` random catalogue items each, so that userId requests have something to read. */
const USERS = 2_000

export async function createCatalogueVersion(prisma: PrismaClient, N: number, D: number, historyLength: number): Promise<CatalogueVersion> {
  const random = mulberry32(424242)
  const nextIndex = () => Math.floor(random() * N)
  const itemExternalIds = Array.from({ length: N }, (_, i) => `c${i + 1}`)
  const users = Array.from({ length: USERS }, (_, u) => ({
    externalId: `cu${u + 1}`,
    itemExternalIds: [...new Set(Array.from({ length: historyLength }, () => itemExternalIds[nextIndex()]!))],
  }))
  let t0 = performance.now()
  const dataset = await importDataset(prisma, {
    name: `bench-serve-catalogue-${N}`,
    items: itemExternalIds.map((externalId, i) => ({ externalId, title: `catalogue item ${i + 1}` })),
    users,
  })
  const importSeconds = (performance.now() - t0) / 1000
  t0 = performance.now()
  await initBackend()
  const ids = await prisma.$queryRaw<{ id: number; external_id: string }[]>`SELECT id, external_id FROM items WHERE dataset_id = ${dataset.id}::uuid ORDER BY id`
  const matrix = clusteredCatalogue(N, D, 12345)
  const config = sasRecIdConfig(1, { embeddingDim: D })
  const model = new SequentialRecommender(config)
  const weights = saveCheckpoint(model.params, config)
  model.dispose()
  const version = await createModelVersion(prisma, {
    datasetId: dataset.id,
    method: 'sasrec-id',
    config: { ...config, syntheticCatalogue: true },
    weights,
    // stored row r is model index r + 1: the padding row is not stored
    itemEmbeddings: matrix.subarray(D),
    itemIndex: ids.map((r) => r.id),
    embeddingDim: D,
  })
  return {
    datasetId: dataset.id,
    modelVersionId: version.id,
    itemExternalIds: ids.map((r) => r.external_id),
    userIds: users.map((u) => u.externalId),
    seconds: { import: importSeconds, version: (performance.now() - t0) / 1000 },
  }
}

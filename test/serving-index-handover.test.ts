// A reload of a version whose rows start with the old copy's rows takes over the old copy's
// approximate index (built, or still building) and indexes only the rows after them; rows that
// differ make it build its own. In ServingModel, then through the serving registry with the
// version's rows in Postgres. Exact answers are computed here by the reference scan (topKByDot).
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { SequentialRecommender, ServingModel, initBackend, mulberry32, saveCheckpoint, sasRecIdConfig, tf, topKByDot, wasmHeapMeter } from '@iisan/model'
import { ServingRegistry, toRecommendations, type LoadedModel } from '@iisan/pipeline'
import { addItems, appendModelVersionItems, createModelVersion, importDataset } from '@iisan/storage'
import { ANN_DEFAULTS } from '@iisan/model/item-index'
import { readBack } from '@iisan/tensor-ops'
import { createTestDatabase, type TestDatabase } from './helpers/db.ts'

const K = 10

beforeAll(async () => {
  await initBackend({ prefer: 'wasm' })
})

/** A random-weights ID-SASRec (D = 64) and its item matrix [N+1, D], row 0 = padding. */
function randomVersion(numItems: number): { weights: Uint8Array; matrix: Float32Array; dispose(): void } {
  const model = new SequentialRecommender(sasRecIdConfig(numItems, { seed: 3 }))
  const matrix = readBack(() => model.itemMatrix())
  return { weights: saveCheckpoint(model.params, model.config), matrix, dispose: () => model.dispose() }
}

function histories(count: number, numItems: number, seed: number): number[][] {
  const random = mulberry32(seed)
  return Array.from({ length: count }, () => Array.from({ length: 1 + Math.floor(random() * 14) }, () => 1 + Math.floor(random() * numItems)))
}

/**
 * One new row per history: that user's state direction, longer than any served row. Its user's exact
 * top 1 (a user scores the own row |u|·100, another new row |u|·100·cos, an old row far less).
 */
function rowsFor(serving: ServingModel, users: number[][]): Float32Array {
  const D = serving.config.embeddingDim
  const rows = serving.userStates(users)
  for (let r = 0; r < users.length; r++) {
    const row = rows.subarray(r * D, (r + 1) * D)
    const scale = 100 / Math.hypot(...row)
    for (let d = 0; d < D; d++) row[d] *= scale
  }
  return rows
}

function concat(...parts: Float32Array[]): Float32Array {
  return Float32Array.from(parts.flatMap((p) => Array.from(p)))
}

/** Row `index` of `matrix` · `state`, summed in topKByDot's order. */
function dot(matrix: Float32Array, D: number, index: number, state: Float32Array): number {
  let score = 0
  for (let d = 0; d < D; d++) score += matrix[index * D + d] * state[d]
  return score
}

/**
 * recall@k of `serving`'s answers against the reference scan over `matrix`; every score returned must
 * be the reference's product for that item, to the bit (the index re-ranks exactly).
 */
function recall(serving: ServingModel, matrix: Float32Array, users: number[][]): number {
  const D = serving.config.embeddingDim
  const states = serving.userStates(users)
  let hits = 0
  serving.recommendMany(users.map((history) => ({ history, k: K }))).forEach((answer, i) => {
    const state = states.subarray(i * D, (i + 1) * D)
    const truth = new Set(topKByDot(matrix, D, state, K, new Set(users[i])).map((s) => s.index))
    hits += answer.filter((s) => truth.has(s.index)).length
    for (const s of answer) expect(s.score).toBe(dot(matrix, D, s.index, state))
  })
  return hits / (users.length * K)
}

// a multi-threaded HNSW build links the graph in another order each run, and its recall under a
// loaded machine dipped below 0.98 once (test/serving-fast-path.test.ts): one thread repeats
const ONE_BUILD_THREAD = { threads: 1 }

describe('ServingModel.takeIndexFrom', () => {
  const N = 1500

  it('a reload after appends takes the built index over: appended items found at once, recall kept, the old copy answers within its own rows', async () => {
    const version = randomVersion(N)
    const old = ServingModel.load(version.weights, version.matrix, { approximateFrom: Infinity, index: ONE_BUILD_THREAD })
    await old.buildIndex()
    const users = histories(20, N, 7)
    const grown = concat(version.matrix, rowsFor(old, users))
    const reload = ServingModel.load(version.weights, grown, { approximateFrom: Infinity, index: ONE_BUILD_THREAD })
    expect(reload.approximate).toBe(false)

    expect(await reload.takeIndexFrom(old)).toBe(N)
    // nothing to wait for: the index is there, with the 20 new rows
    expect(reload.approximate).toBe(true)
    reload.recommendMany(users.map((history) => ({ history, k: K }))).forEach((answer, i) => expect(answer[0].index).toBe(N + 1 + i))
    expect(recall(reload, grown, histories(300, N + 20, 11))).toBeGreaterThanOrEqual(0.98)
    // the index reads the matrix tensor in place: after the wasm heap grows (a tensor as large as the
    // heap), it must read the rows where they are now (a stale view is empty: NaN scores)
    const heap = wasmHeapMeter()!.heapBytes()
    const large = tf.zeros([heap / 4])
    expect(wasmHeapMeter()!.heapBytes()).toBeGreaterThan(heap)
    expect(recall(reload, grown, histories(100, N + 20, 12))).toBeGreaterThanOrEqual(0.98)
    large.dispose()

    // the old copy still serves its in-flight requests from the same index, never with items it has no ids for
    expect(old.approximate).toBe(true)
    for (const answer of old.recommendMany(users.map((history) => ({ history, k: K })))) {
      expect(answer).toHaveLength(K)
      for (const s of answer) expect(s.index).toBeLessThanOrEqual(N)
    }
    expect(recall(old, version.matrix, histories(100, N, 13))).toBeGreaterThanOrEqual(0.98)

    // its grace period over, the old copy goes; the index stays with the reload
    old.dispose()
    expect(reload.recommend(users[0], K)[0].index).toBe(N + 1)

    // a second reload chained after the first
    const more = histories(5, N, 17)
    const grownAgain = concat(grown, rowsFor(reload, more))
    const second = ServingModel.load(version.weights, grownAgain, { approximateFrom: Infinity, index: ONE_BUILD_THREAD })
    expect(await second.takeIndexFrom(reload)).toBe(N + 20)
    expect(second.approximate).toBe(true)
    second.recommendMany(more.map((history) => ({ history, k: K }))).forEach((answer, i) => expect(answer[0].index).toBe(N + 21 + i))
    expect(recall(second, grownAgain, histories(300, N + 25, 19))).toBeGreaterThanOrEqual(0.98)

    // the owner disposed first: a copy still holding the index answers from the exact scan, never from a disposed index
    second.dispose()
    expect(reload.approximate).toBe(false)
    const exact = reload.recommend(users[1], K)
    expect(exact).toHaveLength(K)
    expect(exact[0].index).toBe(N + 2)
    reload.dispose()
    version.dispose()
  }, 120_000)

  it('a build in progress at the handover finishes into the reload, with the rows appended meanwhile', async () => {
    // several build slices (2,048 rows each), so the handover lands between two of them
    const M = 10_000
    const version = randomVersion(M)
    const old = ServingModel.load(version.weights, version.matrix, { approximateFrom: Infinity, index: ONE_BUILD_THREAD })
    const building = old.buildIndex()
    const users = histories(2, M, 23)
    const [first, second] = [rowsFor(old, [users[0]]), rowsFor(old, [users[1]])]
    // appended to the old copy while it builds (cold start), then the reload has that row and one more
    old.appendItems(first)
    const reload = ServingModel.load(version.weights, concat(version.matrix, first, second), { approximateFrom: Infinity, index: ONE_BUILD_THREAD })
    expect(await reload.takeIndexFrom(old)).toBe(M + 1)
    expect(reload.approximate).toBe(false)
    // the old copy disposed before the build ends: the build is the reload's now and goes on
    old.dispose()
    await building.catch(() => undefined)
    await reload.buildIndex()
    expect(reload.approximate).toBe(true)
    expect(reload.numItems).toBe(M + 2)
    expect(reload.recommend(users[0], K)[0].index).toBe(M + 1)
    expect(reload.recommend(users[1], K)[0].index).toBe(M + 2)
    reload.dispose()
    version.dispose()
  }, 120_000)

  it('rows that differ (one value in one row) are not taken over: the reload builds its own index', async () => {
    const version = randomVersion(N)
    const old = ServingModel.load(version.weights, version.matrix, { approximateFrom: Infinity, index: ONE_BUILD_THREAD })
    await old.buildIndex()
    const D = old.config.embeddingDim
    const retrained = version.matrix.slice()
    retrained[700 * D + 5] = Math.fround(retrained[700 * D + 5] * 1.5 + 0.25)
    const reload = ServingModel.load(version.weights, retrained, { approximateFrom: Infinity, index: ONE_BUILD_THREAD })
    expect(await reload.takeIndexFrom(old)).toBe(0)
    expect(reload.approximate).toBe(false)
    await reload.buildIndex()
    expect(reload.approximate).toBe(true)
    expect(recall(reload, retrained, histories(300, N, 29))).toBeGreaterThanOrEqual(0.98)
    // two indexes, each its model's: disposing one leaves the other
    reload.dispose()
    expect(old.approximate).toBe(true)
    expect(recall(old, version.matrix, histories(100, N, 31))).toBeGreaterThanOrEqual(0.98)
    old.dispose()
    version.dispose()
  }, 120_000)
})

describe('the serving registry reloading a version after cold-start appends', () => {
  const N = 1500
  const D = 64
  let db: TestDatabase
  beforeAll(async () => {
    db = await createTestDatabase('index-handover')
  })
  afterAll(async () => {
    await db?.drop()
  })

  it('serves a version of more items than PostgreSQL takes bind parameters (65,535; the ORM splits the item query), with every title in place', async () => {
    const { prisma } = db
    const big = 70_000
    const dataset = await importDataset(prisma, { name: 'beyond bind parameters', items: Array.from({ length: big }, (_, i) => ({ externalId: `b${i + 1}`, title: `Big item ${i + 1}` })), users: [] })
    const itemIds = (await prisma.$queryRaw<{ id: number }[]>`SELECT id FROM items WHERE dataset_id = ${dataset.id}::uuid ORDER BY id DESC`).map((r) => r.id)
    // a tiny user encoder; the matrix: row r = one-hot-ish, so that item r answers a history of r
    const model = new SequentialRecommender(sasRecIdConfig(1, { seed: 5 }))
    const weights = saveCheckpoint(model.params, model.config)
    model.dispose()
    const random = mulberry32(9)
    const stored = await createModelVersion(prisma, {
      datasetId: dataset.id,
      method: 'sasrec-id',
      config: {},
      weights,
      itemEmbeddings: Float32Array.from({ length: big * D }, () => random() - 0.5),
      // model order is the reverse of the ids' order: the titles must follow the index, not the ids
      itemIndex: itemIds,
      embeddingDim: D,
    })
    const registry = new ServingRegistry(prisma, { approximateFrom: Infinity })
    try {
      const loaded = (await registry.get(stored.id))!
      expect(loaded.serving.numItems).toBe(big)
      expect(loaded.externalIds.length).toBe(big + 1)
      expect([loaded.externalIds[1], loaded.titles[1]]).toEqual([`b${big}`, `Big item ${big}`])
      expect([loaded.externalIds[big], loaded.titles[big]]).toEqual(['b1', 'Big item 1'])
      expect(loaded.indexOfExternal.get('b12345')).toBe(big - 12345 + 1)
      expect(loaded.titles.slice(1).every((t) => t.startsWith('Big item '))).toBe(true)
    } finally {
      await registry.close()
    }
  }, 120_000)

  it('takes the index over (onIndex reports the items reused), finds appended items at once, and builds afresh when the stored rows changed', async () => {
    const { prisma } = db
    const dataset = await importDataset(prisma, { name: 'handover', items: Array.from({ length: N }, (_, i) => ({ externalId: `i${i + 1}`, title: `Item ${i + 1}` })), users: [] })
    const itemIds = (await prisma.item.findMany({ where: { datasetId: dataset.id }, orderBy: { id: 'asc' }, select: { id: true } })).map((i) => i.id)
    const version = randomVersion(N)
    const stored = await createModelVersion(prisma, {
      datasetId: dataset.id,
      method: 'sasrec-id',
      config: {},
      weights: version.weights,
      itemEmbeddings: version.matrix.subarray(D),
      itemIndex: itemIds,
      embeddingDim: D,
    })

    const events: { reused: number; items: number; error?: unknown }[] = []
    let told: () => void = () => undefined
    const nextEvent = () => new Promise<void>((resolve) => (told = resolve))
    const registry = new ServingRegistry(prisma, { approximateFrom: 1000, onIndex: (event) => (events.push(event), told()) })
    try {
      let ready = nextEvent()
      const first = (await registry.get(stored.id))!
      await ready
      expect(events).toEqual([expect.objectContaining({ items: N, reused: 0, searchBeams: { recommendations: ANN_DEFAULTS.efSearch, similar: ANN_DEFAULTS.similarEfSearch } })])
      expect(first.serving.approximate).toBe(true)
      expect(registry.indexedModelIds()).toEqual([stored.id])

      // another service appended 20 cold-start items to the version; this replica reloads it
      const users = histories(20, N, 37)
      const rows = rowsFor(first.serving, users)
      const added = await addItems(prisma, dataset.id, users.map((_, i) => ({ externalId: `new${i}`, title: `New ${i}` })))
      await appendModelVersionItems(prisma, stored.id, added.map((item) => item.id), rows)
      ready = nextEvent()
      const reloaded: LoadedModel = (await registry.reload(stored.id))!
      // findable at once: the index came along, with the new rows in it
      expect(reloaded.serving.approximate).toBe(true)
      const answers = await Promise.all(users.map((history) => reloaded.recommend({ history, k: K })))
      answers.forEach((answer, i) => expect(toRecommendations(reloaded, answer)[0].itemId).toBe(`new${i}`))
      await ready
      expect(events[1]).toMatchObject({ items: N + 20, reused: N })
      expect(events[1].error).toBeUndefined()
      expect(recall(reloaded.serving, concat(version.matrix, rows), histories(300, N + 20, 41))).toBeGreaterThanOrEqual(0.98)
      // the copy it replaced still answers its in-flight requests, within its own items
      const late = await first.recommend({ history: users[0], k: K })
      expect(late).toHaveLength(K)
      for (const s of late) expect(first.externalIds[s.index]).toMatch(/^i\d+$/)

      // the stored rows rewritten (as a retrained version's would be): the reload builds its own index
      const changed = concat(version.matrix.subarray(D), rows).map((x) => x * 0.5)
      await prisma.$executeRaw`UPDATE model_versions SET item_embeddings = ${Buffer.from(changed.buffer)} WHERE id = ${stored.id}::uuid`
      ready = nextEvent()
      const rebuilt = (await registry.reload(stored.id))!
      await ready
      expect(events[2]).toMatchObject({ items: N + 20, reused: 0 })
      expect(rebuilt.serving.approximate).toBe(true)
      expect(recall(rebuilt.serving, concat(new Float32Array(D), changed), histories(300, N + 20, 43))).toBeGreaterThanOrEqual(0.98)
      expect(registry.indexedModelIds()).toEqual([stored.id])
      registry.evict(stored.id)
      expect(registry.indexedModelIds()).toEqual([])
    } finally {
      await registry.close()
      version.dispose()
    }
  }, 180_000)

  it('builds and searches the recommendations\' index with the beams it is given (ITEM_INDEX_EF_*), the similar items\' with their own', async () => {
    const { prisma } = db
    const dataset = await importDataset(prisma, { name: 'beams', items: Array.from({ length: N }, (_, i) => ({ externalId: `i${i + 1}`, title: `Item ${i + 1}` })), users: [] })
    const itemIds = (await prisma.item.findMany({ where: { datasetId: dataset.id }, orderBy: { id: 'asc' }, select: { id: true } })).map((i) => i.id)
    const version = randomVersion(N)
    const stored = await createModelVersion(prisma, { datasetId: dataset.id, method: 'sasrec-id', config: {}, weights: version.weights, itemEmbeddings: version.matrix.subarray(D), itemIndex: itemIds, embeddingDim: D })
    let told: (event: { searchBeams?: unknown; error?: unknown }) => void = () => undefined
    const ready = new Promise<{ searchBeams?: unknown; error?: unknown }>((resolve) => (told = resolve))
    const registry = new ServingRegistry(prisma, { approximateFrom: 1000, index: { efSearch: 48, efConstruction: 64 }, onIndex: (event) => told(event) })
    try {
      const loaded = (await registry.get(stored.id))!
      const event = await ready
      expect(event.error).toBeUndefined()
      expect(event.searchBeams).toEqual({ recommendations: 48, similar: ANN_DEFAULTS.similarEfSearch })
      expect(loaded.serving.indexSearchBeams).toEqual({ recommendations: 48, similar: ANN_DEFAULTS.similarEfSearch })
      expect(loaded.serving.approximate).toBe(true)
    } finally {
      await registry.close()
      version.dispose()
    }
  }, 120_000)
})

import { randomUUID } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  StorageError,
  activateModelVersion,
  addItems,
  appendEpochMetric,
  appendInteraction,
  computeContentHashes,
  createModelVersion,
  claimTrainingJob,
  createTrainingJob,
  decodeItemEmbeddings,
  deleteDataset,
  getActiveModelVersion,
  getModelVersion,
  getTrainingJob,
  getUserHistory,
  getUserHistories,
  userHistoriesQuery,
  Prisma,
  userHistoryLoader,
  itemDescriptionLoader,
  describeItems,
  describeItemsOutside,
  importDataset,
  listEpochMetrics,
  listItems,
  listModelVersions,
  loadDatasetSequences,
  loadHiddenStates,
  missingHiddenStates,
  requestTrainingJobCancel,
  saveHiddenStates,
  updateTrainingJobProgress,
  updateTrainingJobStatus,
  upsertBackbone,
  type ImportDatasetInput,
  PrismaClient,
} from '@iisan/storage'
import { createTestDatabase, type TestDatabase } from './helpers/db.ts'
import pg from 'pg'
import { PrismaPg } from '@prisma/adapter-pg'

let db: TestDatabase
let prisma: PrismaClient

beforeAll(async () => {
  db = await createTestDatabase('storage')
  prisma = db.prisma
})
afterAll(async () => {
  await db?.drop()
})

const small: ImportDatasetInput = {
  name: 'small',
  items: [
    { externalId: 'i1', title: 'Microscope' },
    { externalId: 'i2', title: 'Pipette', imageRef: 'images/i2.jpg' },
    { externalId: 'i3', title: 'Beaker', imageBlob: new Uint8Array([0xff, 0xd8, 0xff, 0x00]), imageMime: 'image/jpeg' },
    { externalId: 'i4', title: 'Never bought' },
  ],
  users: [
    { externalId: 'u1', itemExternalIds: ['i3', 'i1', 'i2', 'i1'] },
    { externalId: 'u2', itemExternalIds: ['i2', 'i3'] },
  ],
}

async function rowCounts() {
  const [datasets, items, users, interactions] = await Promise.all([
    prisma.dataset.count(),
    prisma.item.count(),
    prisma.datasetUser.count(),
    prisma.interaction.count(),
  ])
  return { datasets, items, users, interactions }
}

async function freshCounts<T>(fn: () => Promise<T>): Promise<{ before: Awaited<ReturnType<typeof rowCounts>>; error: unknown }> {
  const before = await rowCounts()
  const error = await fn().then(
    () => undefined,
    (e: unknown) => e,
  )
  return { before, error }
}

describe('importDataset', () => {
  it('imports items, users and ordered interactions with counts and stats', async () => {
    const ds = await importDataset(prisma, small)
    expect(ds).toMatchObject({ name: 'small', numItems: 4, numUsers: 2, numInteractions: 6 })
    expect(ds.stats).toMatchObject({ minSequenceLength: 2, maxSequenceLength: 4, coldItems: 1 })

    const seq = await loadDatasetSequences(prisma, ds.id)
    expect(seq.items.map((i) => i.externalId)).toEqual(['i1', 'i2', 'i3', 'i4'])
    const ids = [...seq.items.map((i) => i.id)]
    expect(ids).toEqual([...ids].sort((a, b) => a - b)) // ordered by id = input order
    const id = Object.fromEntries(seq.items.map((i) => [i.externalId, i.id]))
    expect(seq.sequences).toEqual([
      { userId: expect.any(Number), externalId: 'u1', itemIds: [id.i3, id.i1, id.i2, id.i1] },
      { userId: expect.any(Number), externalId: 'u2', itemIds: [id.i2, id.i3] },
    ])

    const items = await prisma.item.findMany({ where: { datasetId: ds.id }, orderBy: { id: 'asc' } })
    expect(items[2]!.imageBlob).toEqual(new Uint8Array([0xff, 0xd8, 0xff, 0x00]))
    expect(items[2]!.imageMime).toBe('image/jpeg')
    expect(items[1]!.imageRef).toBe('images/i2.jpg')
    for (const [k, it] of items.entries()) {
      expect(it).toMatchObject(computeContentHashes(small.items[k]!))
    }
    expect(items[0]!.imageHash).toBeNull()

    const listed = await listItems(prisma, ds.id, { limit: 2, offset: 1 })
    expect(listed.map((i) => [i.externalId, i.hasImageBlob])).toEqual([
      ['i2', false],
      ['i3', true],
    ])
    expect(listed[0]).not.toHaveProperty('imageBlob')
  })

  it('rejects histories that reference unknown items and leaves no rows behind', async () => {
    const { before, error } = await freshCounts(() =>
      importDataset(prisma, {
        name: 'bad',
        items: small.items,
        users: [...small.users, { externalId: 'u3', itemExternalIds: ['i1', 'nope'] }],
      }),
    )
    expect(error).toBeInstanceOf(StorageError)
    expect(error).toMatchObject({
      code: 'UNKNOWN_ITEM',
      details: { count: 1, references: [{ userExternalId: 'u3', itemExternalId: 'nope' }] },
    })
    expect(await rowCounts()).toEqual(before)
  })

  it('rolls back everything when the database rejects a row halfway through', async () => {
    // Postgres refuses NUL in text: the dataset and its items are inserted, then the users insert fails.
    const { before, error } = await freshCounts(() =>
      importDataset(prisma, { name: 'nul', items: small.items, users: [{ externalId: 'bad\u0000user', itemExternalIds: ['i1'] }] }),
    )
    expect(error).toBeDefined()
    expect(await rowCounts()).toEqual(before)
  })

  it('rejects duplicate item and user ids', async () => {
    await expect(
      importDataset(prisma, { name: 'd', items: [...small.items, { externalId: 'i1', title: 'again' }], users: [] }),
    ).rejects.toMatchObject({ code: 'DUPLICATE_ITEM' })
    await expect(
      importDataset(prisma, { name: 'd', items: small.items, users: [small.users[0]!, small.users[0]!] }),
    ).rejects.toMatchObject({ code: 'DUPLICATE_USER' })
  })
})

describe('interactions', () => {
  let datasetId: string
  let itemIds: Record<string, number>

  beforeAll(async () => {
    const ds = await importDataset(prisma, { ...small, name: 'events' })
    datasetId = ds.id
    const seq = await loadDatasetSequences(prisma, ds.id)
    itemIds = Object.fromEntries(seq.items.map((i) => [i.externalId, i.id]))
  })

  it('appends at the next position and creates unknown users', async () => {
    const a = await appendInteraction(prisma, datasetId, 'u2', itemIds.i4!)
    expect(a).toMatchObject({ position: 2, userCreated: false, itemId: itemIds.i4 })
    const b = await appendInteraction(prisma, datasetId, 'new-user', itemIds.i1!)
    expect(b).toMatchObject({ position: 0, userCreated: true })
    expect(await getUserHistory(prisma, datasetId, 'u2')).toMatchObject({
      externalId: 'u2',
      itemIds: [itemIds.i2, itemIds.i3, itemIds.i4],
    })
    // the newest interactions only, still oldest first
    expect(await getUserHistory(prisma, datasetId, 'u2', 2)).toMatchObject({ itemIds: [itemIds.i3, itemIds.i4] })
    const ds = await prisma.dataset.findUniqueOrThrow({ where: { id: datasetId } })
    expect(ds).toMatchObject({ numUsers: 3, numInteractions: 8 })
    expect(await getUserHistory(prisma, datasetId, 'nobody')).toBeNull()
    // a user without interactions (yet) has an empty history, not none
    await prisma.datasetUser.create({ data: { datasetId, externalId: 'quiet' } })
    expect(await getUserHistory(prisma, datasetId, 'quiet')).toMatchObject({ externalId: 'quiet', itemIds: [] })
    // inside a transaction the read goes through the ORM, with the same answer
    const inside = await prisma.$transaction((tx) => getUserHistory(tx, datasetId, 'u2'))
    expect(inside).toEqual(await getUserHistory(prisma, datasetId, 'u2'))
  })

  it('reads concurrent histories in batched queries, each user its own, across datasets', async () => {
    // the same external ids in another dataset, with other histories: a batch must not mix them
    const other = await importDataset(prisma, {
      name: 'events-other',
      items: small.items,
      users: [
        { externalId: 'u1', itemExternalIds: ['i4'] },
        { externalId: 'u2', itemExternalIds: ['i1', 'i1', 'i2'] },
      ],
    })
    const otherItemIds = Object.fromEntries((await loadDatasetSequences(prisma, other.id)).items.map((i) => [i.externalId, i.id]))
    const many = Array.from({ length: 60 }, (_, n) => `many-${n}`)
    for (const [n, user] of many.entries()) await appendInteraction(prisma, other.id, user, otherItemIds[`i${1 + (n % 4)}`]!)
    const keys = [
      ...['u1', 'u2', 'quiet', 'nobody', 'u1', 'many-3'].map((userExternalId) => ({ datasetId, userExternalId })),
      ...[...many, 'u1', 'u2', 'quiet'].map((userExternalId) => ({ datasetId: other.id, userExternalId })),
    ]
    const batches: number[] = []
    const loader = userHistoryLoader(prisma, { maxBatch: 32, onBatch: (size) => batches.push(size) })
    const batched = await Promise.all(keys.map((key) => loader.load(key)))
    const oneByOne = []
    for (const key of keys) oneByOne.push(await getUserHistory(prisma, key.datasetId, key.userExternalId))
    expect(batched).toEqual(oneByOne)
    const here = (...ids: string[]) => ids.map((id) => itemIds[id])
    const there = (...ids: string[]) => ids.map((id) => otherItemIds[id])
    expect(batched[0]).toMatchObject({ itemIds: here('i3', 'i1', 'i2', 'i1') })
    expect(batched[5]).toBeNull()
    expect(batched[6 + 3]).toMatchObject({ externalId: 'many-3', itemIds: there('i4') })
    expect(batched.at(-3)).toMatchObject({ itemIds: there('i4') })
    expect(batched.at(-2)).toMatchObject({ itemIds: there('i1', 'i1', 'i2') })
    expect(batched.at(-1)).toBeNull()
    // 69 loads in one turn: three queries of at most 32, not 69
    expect(batches).toEqual([32, 32, 5])
    // nothing is cached: an event stored after a read is in the next read
    await appendInteraction(prisma, other.id, 'u1', otherItemIds.i2!)
    const again = await Promise.all([loader.load({ datasetId: other.id, userExternalId: 'u1' }), loader.load({ datasetId, userExternalId: 'nobody' })])
    expect(again[0]).toMatchObject({ itemIds: there('i4', 'i2') })
    expect(again[1]).toBeNull()
  })

  it('describes the items of concurrent requests in batched queries, nothing cached', async () => {
    const ids = Object.values(itemIds)
    const missing = Math.max(...ids) + 1000
    const keys = [...ids, missing, ids[0]!, ...ids]
    const batches: number[] = []
    const loader = itemDescriptionLoader(prisma, { maxBatch: 4, onBatch: (size) => batches.push(size) })
    const batched = await Promise.all(keys.map((id) => loader.load(id)))
    const byId = Object.fromEntries(small.items.map((i) => [itemIds[i.externalId]!, { externalId: i.externalId, title: i.title }]))
    expect(batched).toEqual(keys.map((id) => byId[id] ?? null))
    expect(batched[ids.length]).toBeNull()
    // the loads of one turn: batches of at most 4, not one query per load
    expect(batches).toEqual([4, 4, 2])
    expect(await describeItems(prisma, [ids[0]!, ids[0]!, missing])).toEqual(new Map([[ids[0]!, byId[ids[0]!]]]))
    // a title changed after a read is in the next read
    await prisma.item.update({ where: { id: ids[0]! }, data: { title: 'renamed' } })
    try {
      expect(await loader.load(ids[0]!)).toMatchObject({ title: 'renamed' })
    } finally {
      await prisma.item.update({ where: { id: ids[0]! }, data: { title: byId[ids[0]!]!.title } })
    }
  })

  it('describes the items of a dataset outside a given set, by id, at most limit of them', async () => {
    const ids = Object.values(itemIds).sort((a, b) => a - b)
    const byId = new Map(small.items.map((i) => [itemIds[i.externalId]!, { externalId: i.externalId, title: i.title }]))
    const outside = (known: number[], limit: number) => describeItemsOutside(prisma, datasetId, known, limit)
    // the known ones are left out, the others described; another dataset's items never appear
    const known = [ids[0]!, ids[2]!]
    expect(await outside(known, 100)).toEqual(new Map(ids.filter((id) => !known.includes(id)).map((id) => [id, byId.get(id)])))
    expect(await outside([], 100)).toEqual(new Map(ids.map((id) => [id, byId.get(id)])))
    expect(await outside(ids, 100)).toEqual(new Map())
    // the first by id when there are more than the limit
    expect([...(await outside([ids[0]!], 2)).keys()]).toEqual([ids[1], ids[2]])
    expect(await outside([], 0)).toEqual(new Map())
  })

  it('plans the batched history read on indexes right after an import (the import refreshes the planner statistics)', async () => {
    // Scientific-like proportions: without fresh statistics the planner hashed the whole
    // interactions table for every batch (≈ 20 ms instead of ≈ 2 ms on Scientific)
    const items = Array.from({ length: 2000 }, (_, n) => ({ externalId: `p${n}`, title: `Product ${n}` }))
    const users = Array.from({ length: 6000 }, (_, n) => ({ externalId: `c${n}`, itemExternalIds: Array.from({ length: 7 }, (_, k) => `p${(n * 7 + k * 131) % 2000}`) }))
    const big = await importDataset(prisma, { name: 'planner', items, users })
    const asked = Array.from({ length: 30 }, (_, n) => `c${n * 199}`)
    const plan = (await prisma.$queryRaw<{ 'QUERY PLAN': string }[]>(Prisma.sql`EXPLAIN ${userHistoriesQuery(big.id, asked)}`)).map((r) => r['QUERY PLAN']).join('\n')
    expect(plan).not.toMatch(/Seq Scan on (interactions|items|dataset_users)/)
    expect(plan).toMatch(/Index Scan( Backward)? using interactions_user_id_position_key/)
    const bigIds = Object.fromEntries((await loadDatasetSequences(prisma, big.id)).items.map((i) => [i.externalId, i.id]))
    expect((await getUserHistories(prisma, big.id, asked)).get('c199')).toMatchObject({ itemIds: users[199]!.itemExternalIds.map((id) => bigIds[id]) })
  })

  it('keeps positions dense under concurrent appends for one user', async () => {
    const order = ['i1', 'i2', 'i3', 'i4', 'i1', 'i2', 'i3', 'i4']
    await Promise.all(order.map((ext) => appendInteraction(prisma, datasetId, 'busy', itemIds[ext]!)))
    const rows = await prisma.interaction.findMany({
      where: { user: { datasetId, externalId: 'busy' } },
      orderBy: { position: 'asc' },
    })
    expect(rows.map((r) => r.position)).toEqual([0, 1, 2, 3, 4, 5, 6, 7])
    const ds = await prisma.dataset.findUniqueOrThrow({ where: { id: datasetId } })
    expect(ds).toMatchObject({ numUsers: 4, numInteractions: 16 })
  })

  it('rejects items of another dataset and unknown datasets', async () => {
    const other = await importDataset(prisma, { name: 'other', items: [{ externalId: 'x', title: 'X' }], users: [] })
    const [x] = await listItems(prisma, other.id)
    await expect(appendInteraction(prisma, datasetId, 'u1', x!.id)).rejects.toMatchObject({ code: 'UNKNOWN_ITEM' })
    await expect(appendInteraction(prisma, randomUUID(), 'u1', x!.id)).rejects.toMatchObject({ code: 'NOT_FOUND' })
  })

  it('adds items to an existing dataset', async () => {
    const added = await addItems(prisma, datasetId, [{ externalId: 'i5', title: 'Centrifuge' }])
    expect(added.map((i) => i.externalId)).toEqual(['i5'])
    expect(added[0]!.id).toBeGreaterThan(itemIds.i4!)
    await expect(addItems(prisma, datasetId, [{ externalId: 'i1', title: 'dup' }])).rejects.toMatchObject({
      code: 'DUPLICATE_ITEM',
    })
    const ds = await prisma.dataset.findUniqueOrThrow({ where: { id: datasetId } })
    expect(ds.numItems).toBe(5)
  })
})

describe('training jobs and model versions', () => {
  let datasetId: string
  let itemIndex: number[]

  beforeAll(async () => {
    const ds = await importDataset(prisma, { ...small, name: 'models' })
    datasetId = ds.id
    itemIndex = (await loadDatasetSequences(prisma, ds.id)).items.map((i) => i.id)
  })

  const embeddings = (n: number, d: number, seed: number) => Float32Array.from({ length: n * d }, (_, i) => seed + i / 8)

  it('tracks a job through its statuses, progress and epochs', async () => {
    const job = await createTrainingJob(prisma, { datasetId, method: 'iisan', config: { epochs: 2, lr: 1e-3 } })
    expect(job).toMatchObject({ status: 'queued', cancelRequested: false, startedAt: null })

    const claim = await claimTrainingJob(prisma, job.id, 'worker-1')
    const running = claim && 'claimed' in claim ? claim.claimed : undefined
    expect(running?.status).toBe('running')
    expect(running?.startedAt).toBeInstanceOf(Date)
    // a second worker picking up the same job finds it held (its holder's heartbeat is fresh)
    expect(await claimTrainingJob(prisma, job.id, 'worker-2')).toHaveProperty('heldElsewhere')

    await updateTrainingJobProgress(prisma, job.id, { phase: 'training', epoch: 1 })
    await appendEpochMetric(prisma, { jobId: job.id, epoch: 1, trainLoss: 5, valHr10: 0.1, valNdcg10: 0.05, seconds: 3 })
    await appendEpochMetric(prisma, { jobId: job.id, epoch: 2, trainLoss: 4, valHr10: 0.2, valNdcg10: 0.1, seconds: 3 })
    await appendEpochMetric(prisma, { jobId: job.id, epoch: 2, trainLoss: 3.5, valHr10: 0.25, valNdcg10: 0.12, seconds: 3 })
    expect((await listEpochMetrics(prisma, job.id)).map((m) => [m.epoch, m.trainLoss])).toEqual([
      [1, 5],
      [2, 3.5],
    ])

    const cancelled = await requestTrainingJobCancel(prisma, job.id)
    expect(cancelled).toMatchObject({ status: 'running', cancelRequested: true })
    const failed = await updateTrainingJobStatus(prisma, job.id, 'failed', { error: 'boom' })
    expect(failed).toMatchObject({ status: 'failed', error: 'boom', progress: { phase: 'training', epoch: 1 } })
    expect(failed?.finishedAt).toBeInstanceOf(Date)

    const queued = await createTrainingJob(prisma, { datasetId, method: 'sasrec-id', config: {} })
    expect(await requestTrainingJobCancel(prisma, queued.id)).toMatchObject({ status: 'cancelled' })
    await expect(createTrainingJob(prisma, { datasetId: randomUUID(), method: 'iisan', config: {} })).rejects.toMatchObject({
      code: 'NOT_FOUND',
    })
  })

  it('stores model versions, links the job, and activates exactly one per dataset', async () => {
    const job = await createTrainingJob(prisma, { datasetId, method: 'iisan', config: {} })
    const n = itemIndex.length
    const a = await createModelVersion(prisma, {
      datasetId,
      jobId: job.id,
      method: 'iisan',
      config: { d: 4 },
      weights: new Uint8Array([1, 2, 3]),
      itemEmbeddings: embeddings(n, 4, 1),
      itemIndex,
      embeddingDim: 4,
      testHr10: 0.3,
    })
    expect(a).toMatchObject({ datasetId, jobId: job.id, numItems: n, isActive: false })
    expect(a).not.toHaveProperty('weights')
    expect((await getTrainingJob(prisma, job.id))?.modelVersionId).toBe(a.id)

    const b = await createModelVersion(prisma, {
      datasetId,
      method: 'sasrec-id',
      config: {},
      weights: new Uint8Array([4]),
      itemEmbeddings: embeddings(n, 4, 2),
      itemIndex,
      embeddingDim: 4,
      activate: true,
    })
    expect(b.isActive).toBe(true)
    await expect(
      createModelVersion(prisma, { datasetId, method: 'x', config: {}, weights: new Uint8Array(), itemEmbeddings: new Float32Array(3), itemIndex, embeddingDim: 4 }),
    ).rejects.toMatchObject({ code: 'INVALID_INPUT' })

    const active = async () =>
      (await prisma.modelVersion.findMany({ where: { datasetId, isActive: true }, select: { id: true } })).map((r) => r.id)
    expect(await active()).toEqual([b.id])
    await activateModelVersion(prisma, a.id)
    expect(await active()).toEqual([a.id])
    await activateModelVersion(prisma, b.id)
    expect(await active()).toEqual([b.id])

    // concurrent activations still leave exactly one active
    await Promise.all([a.id, b.id, a.id, b.id].map((id) => activateModelVersion(prisma, id)))
    expect(await active()).toHaveLength(1)
    // and the database itself refuses a second active version
    await expect(prisma.modelVersion.updateMany({ where: { datasetId }, data: { isActive: true } })).rejects.toThrow()

    await activateModelVersion(prisma, a.id)
    const served = await getActiveModelVersion(prisma, datasetId)
    expect(served?.id).toBe(a.id)
    expect(decodeItemEmbeddings(served!)).toEqual(embeddings(n, 4, 1))
    expect(served!.itemIndex).toEqual(itemIndex)
    expect((await getModelVersion(prisma, b.id))?.weights).toEqual(new Uint8Array([4]))

    const list = await listModelVersions(prisma, { datasetId })
    expect(list.map((m) => m.id).sort()).toEqual([a.id, b.id].sort())
    for (const m of list) {
      expect(m).not.toHaveProperty('weights')
      expect(m).not.toHaveProperty('itemEmbeddings')
      expect(m).not.toHaveProperty('itemIndex')
    }
    await expect(activateModelVersion(prisma, randomUUID())).rejects.toMatchObject({ code: 'NOT_FOUND' })
  })

  it('an activation reads none of the version’s payloads back (a 1M-item matrix held its transaction past its timeout)', async () => {
    const datasetId = (await importDataset(prisma, { name: 'activation reads', items: [{ externalId: 'a', title: 'A' }], users: [] })).id
    const version = await createModelVersion(prisma, { datasetId, method: 'sasrec-id', config: {}, weights: new Uint8Array([1]), itemEmbeddings: new Float32Array(4), itemIndex: [1], embeddingDim: 4 })
    // the same database through a client that tells each statement it sends
    const pool = new pg.Pool({ connectionString: db.url, max: 2 })
    // the client ends the pool with it: an idle connection left open would be cut when the test database is dropped
    const watched = new PrismaClient({ adapter: new PrismaPg(pool, { disposeExternalPool: true }), log: [{ emit: 'event', level: 'query' }] })
    const statements: string[] = []
    watched.$on('query', (e) => statements.push(e.query))
    try {
      expect(await activateModelVersion(watched, version.id)).toMatchObject({ id: version.id, isActive: true })
      expect(statements.some((q) => /UPDATE .*model_versions/.test(q))).toBe(true)
      for (const payload of ['item_embeddings', 'item_index', 'weights_blob_id']) expect(statements.filter((q) => q.includes(`"${payload}"`))).toEqual([])
    } finally {
      await watched.$disconnect()
    }
    expect(pool.ended).toBe(true)
  })
})

describe('hidden-state cache', () => {
  it('stores states once per backbone and content hash', async () => {
    const bb = await upsertBackbone(prisma, {
      fingerprint: 'fp-' + randomUUID(),
      modality: 'text',
      modelType: 'bert',
      numLayers: 2,
      hiddenSize: 3,
      config: { maxLength: 32 },
      location: '/models/bert',
    })
    const again = await upsertBackbone(prisma, { ...bb, name: 'bert', config: {}, modality: 'text' })
    expect(again.id).toBe(bb.id)
    const f16 = new Uint8Array(2 * 3 * 2).fill(7)
    expect(await saveHiddenStates(prisma, bb.id, [{ contentHash: 'h1', dtype: 'f16', layers: 2, dim: 3, data: f16 }])).toBe(1)
    expect(
      await saveHiddenStates(prisma, bb.id, [
        { contentHash: 'h1', dtype: 'f16', layers: 2, dim: 3, data: f16 },
        { contentHash: 'h2', dtype: 'f16', layers: 2, dim: 3, data: new Uint8Array(), error: 'corrupt image' },
      ]),
    ).toBe(1)
    expect(await missingHiddenStates(prisma, bb.id, ['h1', 'h2', 'h3', 'h3'])).toEqual(['h3'])
    const states = await loadHiddenStates(prisma, bb.id, ['h1', 'h2'])
    expect(states.get('h1')?.data).toEqual(f16)
    expect(states.get('h2')?.error).toBe('corrupt image')
    await expect(
      saveHiddenStates(prisma, bb.id, [{ contentHash: 'h4', dtype: 'f32', layers: 2, dim: 3, data: f16 }]),
    ).rejects.toMatchObject({ code: 'INVALID_INPUT' })
  })
})

describe('deleteDataset', () => {
  it('cascades to everything that belongs to the dataset', async () => {
    const ds = await importDataset(prisma, { ...small, name: 'doomed' })
    await createTrainingJob(prisma, { datasetId: ds.id, method: 'iisan', config: {} })
    expect(await deleteDataset(prisma, ds.id)).toBe(true)
    expect(await deleteDataset(prisma, ds.id)).toBe(false)
    expect(await prisma.item.count({ where: { datasetId: ds.id } })).toBe(0)
    expect(await prisma.interaction.count({ where: { datasetId: ds.id } })).toBe(0)
    expect(await prisma.trainingJob.count({ where: { datasetId: ds.id } })).toBe(0)
  })
})

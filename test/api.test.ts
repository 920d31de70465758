// The platform end to end over real PostgreSQL and Redis: the API in-process (supertest), the
// training worker as its own process, exactly as `npm start` runs it.
import type { ChildProcess } from 'node:child_process'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import request from 'supertest'
import { initBackend } from '@iisan/model'
import { ServingRegistry, sampleDataset } from '@iisan/pipeline'
import { addItems, createModelVersion, getModelVersion } from '@iisan/storage'
import { buildApp } from '../services/api/src/app.ts'
import { WORKER_ENTRY, createTestApi, createTestPlatform, startService, stopService, trainAndWait, until, type TestPlatform } from './helpers/platform.ts'

let platform: TestPlatform
let db: TestPlatform['db']
let server: Awaited<ReturnType<typeof createTestApi>>
let worker: ChildProcess
let http: ReturnType<typeof request>
const slice = sampleDataset(300)

beforeAll(async () => {
  await initBackend({ prefer: 'wasm' })
  platform = await createTestPlatform('api')
  db = platform.db
  server = await createTestApi(platform.env, 'api-test')
  await server.app.ready()
  http = request(server.app.server)
  worker = startService(WORKER_ENTRY, platform.env)
})

afterAll(async () => {
  await stopService(worker)
  await server?.close()
  await platform?.close()
})

describe('health', () => {
  it('reports Postgres and Redis', async () => {
    const res = await http.get('/healthz').expect(200)
    expect(res.body).toMatchObject({ status: 'ok', postgres: { ok: true }, redis: { ok: true } })
  })
})

describe('import → train → model version → recommendations', () => {
  let datasetId: string
  let modelId: string

  it('rejects malformed files naming the line, and writes nothing', async () => {
    const badItems = await http.post('/v1/datasets').send({ name: 'bad', itemsTsv: 'A\tok\nB-without-tab\n', usersTsv: 'u\tA A A A A\n' }).expect(400)
    expect(badItems.body.error).toMatchObject({ code: 'MALFORMED_FILE', details: { file: 'items.tsv', line: 2 } })
    const badUsers = await http.post('/v1/datasets').send({ name: 'bad', itemsTsv: 'A\tok\n', usersTsv: 'u1\tA A\nu2\tA Z\n' }).expect(400)
    expect(badUsers.body.error).toMatchObject({ code: 'MALFORMED_FILE', details: { file: 'users.tsv', line: 2 } })
    const missing = await http.post('/v1/datasets').send({ name: 'bad', itemsTsv: 'A\tok\n' }).expect(400)
    expect(missing.body.error.code).toBe('VALIDATION_FAILED')
    const multipartMissing = await http.post('/v1/datasets').field('name', 'x').attach('items', Buffer.from('A\tok\n'), 'items.tsv').expect(400)
    expect(multipartMissing.body.error.code).toBe('VALIDATION_FAILED')
    expect(await db.prisma.dataset.count()).toBe(0)
    expect(await db.prisma.item.count()).toBe(0)
  })

  it('imports a multipart upload of the two files in one transaction', async () => {
    const res = await http
      .post('/v1/datasets')
      .field('name', 'scientific-300')
      .attach('items', Buffer.from(slice.itemsTsv), 'items.tsv')
      .attach('users', Buffer.from(slice.usersTsv), 'users.tsv')
      .expect(201)
    expect(res.body).toMatchObject({ name: 'scientific-300', numUsers: 300, numItems: slice.itemIds.length })
    const interactions = slice.userLines.reduce((s, l) => s + l.split('\t')[1].split(' ').length, 0)
    expect(res.body.numInteractions).toBe(interactions)
    datasetId = res.body.id
  })

  it('answers 409 before any model is active', async () => {
    const res = await http.post('/v1/recommendations').send({ datasetId, history: [slice.itemIds[0]], k: 5 }).expect(409)
    expect(res.body.error.code).toBe('NO_ACTIVE_MODEL')
  })

  it('validates training requests', async () => {
    expect((await http.post('/v1/training-jobs').send({ datasetId, method: 'magic' }).expect(400)).body.error.code).toBe('VALIDATION_FAILED')
    expect((await http.post('/v1/training-jobs').send({ datasetId, method: 'sasrec-id', config: { batchSize: 0 } }).expect(400)).body.error.code).toBe('VALIDATION_FAILED')
    expect((await http.post('/v1/training-jobs').send({ datasetId: '00000000-0000-4000-8000-000000000000', method: 'sasrec-id' }).expect(404)).body.error.code).toBe('NOT_FOUND')
    expect((await http.get('/v1/training-jobs/not-a-uuid').expect(400)).body.error.code).toBe('VALIDATION_FAILED')
  })

  it('trains in the worker with progress, and writes a model version', async () => {
    const { submitted, job: done } = await trainAndWait(http, { datasetId, method: 'sasrec-id', config: { maxEpochs: 3, patience: 3, batchSize: 32, lrItem: 1e-3, lrUser: 1e-3 } }, 120_000)
    expect(submitted.status).toBe('queued')
    expect(done.epochs).toHaveLength(3)
    for (const e of done.epochs) {
      expect(e.valHr10).toBeGreaterThanOrEqual(0)
      expect(e.valHr10).toBeLessThanOrEqual(1)
      expect(e.trainLoss).toBeGreaterThan(0)
    }
    expect(done.progress).toMatchObject({ phase: 'done', fraction: 1 })
    expect(done.modelVersionId).toEqual(expect.any(String))
    modelId = done.modelVersionId

    const versions = await http.get(`/v1/model-versions?datasetId=${datasetId}`).expect(200)
    expect(versions.body.modelVersions).toHaveLength(1)
    const mv = versions.body.modelVersions[0]
    expect(mv).toMatchObject({ id: modelId, method: 'sasrec-id', isActive: true, epochs: 3, embeddingDim: 64 })
    expect(mv.trainableParams).toBeGreaterThan(0)
    expect(mv.secondsPerEpoch).toBeGreaterThan(0)
    expect(mv.peakMemoryMb).toBeGreaterThan(0)
    expect(mv.testHr10).toBeGreaterThanOrEqual(0)
    // every kept item has one embedding row
    const stored = await db.prisma.modelVersion.findUniqueOrThrow({ where: { id: modelId } })
    expect(stored.itemEmbeddings.byteLength).toBe(stored.numItems * 64 * 4)
  })

  it('recommends top-k with titles, never an item of the history', async () => {
    const user = slice.userLines[5].split('\t')
    const history = user[1].split(' ')
    const res = await http.post('/v1/recommendations').send({ history, k: 10 }).expect(200)
    expect(res.body.modelId).toBe(modelId)
    expect(res.body.items).toHaveLength(10)
    for (const item of res.body.items) {
      expect(history).not.toContain(item.itemId)
      expect(item.title.length).toBeGreaterThan(0)
    }
    const scores = res.body.items.map((i: { score: number }) => i.score)
    expect([...scores].sort((a, b) => b - a)).toEqual(scores)

    // By user id: the stored history is used and excluded.
    const byUser = await http.post('/v1/recommendations').send({ userId: user[0], k: 20, datasetId }).expect(200)
    expect(byUser.body.items).toHaveLength(20)
    for (const item of byUser.body.items) expect(history).not.toContain(item.itemId)
  })

  it('answers 409 NO_KNOWN_HISTORY for a user whose stored history holds only items newer than the model', async () => {
    await addItems(db.prisma, datasetId, [{ externalId: 'LATE-ITEM', title: 'Added after training' }])
    await http.post('/v1/events').send({ datasetId, userId: 'late-user', itemId: 'LATE-ITEM' }).expect(201)
    const res = await http.post('/v1/recommendations').send({ datasetId, userId: 'late-user', k: 5 }).expect(409)
    expect(res.body.error).toMatchObject({ code: 'NO_KNOWN_HISTORY', details: { userId: 'late-user', modelId, unknownItemIds: ['LATE-ITEM'] } })
    expect(res.body.error.message).toMatch(/late-user/)
    // one item the model knows is enough
    const known = slice.userLines[5].split('\t')[1].split(' ')[0]
    await http.post('/v1/events').send({ datasetId, userId: 'late-user', itemId: known }).expect(201)
    const recs = await http.post('/v1/recommendations').send({ datasetId, userId: 'late-user', k: 5 }).expect(200)
    expect(recs.body.items.map((i: { itemId: string }) => i.itemId)).not.toContain(known)
  })

  it('answers every documented 4xx of recommendations', async () => {
    const known = slice.itemIds[0]
    const cases: [object, number, string][] = [
      [{ history: ['NOT-AN-ITEM'], k: 5 }, 400, 'UNKNOWN_ITEMS'],
      [{ history: [known], k: 0 }, 400, 'VALIDATION_FAILED'],
      [{ history: [known], k: 100000 }, 400, 'VALIDATION_FAILED'],
      [{ history: [known], k: 'ten' }, 400, 'VALIDATION_FAILED'],
      [{ k: 5 }, 400, 'VALIDATION_FAILED'],
      [{ history: [known], userId: 'x', k: 5 }, 400, 'VALIDATION_FAILED'],
      [{ history: [], k: 5 }, 400, 'VALIDATION_FAILED'],
      [{ userId: 'nobody', k: 5 }, 404, 'USER_NOT_FOUND'],
      [{ modelId: '00000000-0000-4000-8000-000000000000', history: [known], k: 5 }, 404, 'MODEL_NOT_FOUND'],
      [{ history: [known], k: 5, extra: true }, 400, 'VALIDATION_FAILED'],
    ]
    for (const [body, status, code] of cases) {
      const res = await http.post('/v1/recommendations').send(body)
      expect({ body, status: res.status, code: res.body.error?.code }).toEqual({ body, status, code })
    }
    const notJson = await http.post('/v1/recommendations').set('content-type', 'application/json').send('{"k": ')
    expect(notJson.status).toBe(400)
    expect(notJson.body.error.code).toEqual(expect.any(String))
  })

  it('cancels a running job', async () => {
    const submitted = await http.post('/v1/training-jobs').send({ datasetId, method: 'sasrec-id', config: { maxEpochs: 500, patience: 500, batchSize: 16 } }).expect(202)
    await until(async () => ((await http.get(`/v1/training-jobs/${submitted.body.id}`)).body.status === 'running' ? true : undefined), 60_000, 'job to run')
    await http.post(`/v1/training-jobs/${submitted.body.id}/cancel`).expect(202)
    const final = await until(
      async () => {
        const res = await http.get(`/v1/training-jobs/${submitted.body.id}`)
        return res.body.status === 'running' ? undefined : res.body
      },
      30_000,
      'job to stop',
    )
    expect(final.status).toBe('cancelled')
    expect(final.modelVersionId).toBeNull()
    expect((await http.post(`/v1/training-jobs/${submitted.body.id}/cancel`).expect(409)).body.error.code).toBe('JOB_FINISHED')
    expect((await http.post('/v1/training-jobs/00000000-0000-4000-8000-000000000000/cancel').expect(404)).body.error.code).toBe('NOT_FOUND')
  })

  it('serves the OpenAPI document generated from the route schemas', async () => {
    const res = await http.get('/docs/json').expect(200)
    expect(Object.keys(res.body.paths)).toEqual(expect.arrayContaining(['/v1/datasets', '/v1/training-jobs', '/v1/recommendations', '/healthz']))
  })

  it('the replica that handles an activation serves the new model from the next request, announcement or not', async () => {
    // a second version of the dataset: a copy of the trained one
    const source = (await getModelVersion(db.prisma, modelId))!
    const copy = await createModelVersion(db.prisma, {
      ...source,
      config: source.config as object,
      itemIndex: source.itemIndex as number[],
      metrics: source.metrics ?? undefined,
      jobId: null,
    })
    // a replica whose announcements reach no one, itself included
    const registry = new ServingRegistry(db.prisma)
    await registry.refreshActive()
    const replica = await buildApp({
      prisma: db.prisma,
      redis: platform.redis,
      trainingQueue: {} as never,
      registry,
      embeddingCacheUrl: 'http://127.0.0.1:1',
      announceActivation: async () => {},
      announceUpdated: async () => {},
    })
    try {
      await replica.ready()
      const r = request(replica.server)
      const history = slice.userLines[5].split('\t')[1].split(' ')
      expect((await r.post('/v1/recommendations').send({ datasetId, history, k: 5 }).expect(200)).body.modelId).toBe(modelId)
      await r.post(`/v1/model-versions/${copy.id}/activate`).expect(200)
      expect((await r.post('/v1/recommendations').send({ datasetId, history, k: 5 }).expect(200)).body.modelId).toBe(copy.id)
    } finally {
      await replica.close()
      await registry.close()
    }
  })
})

describe('Prometheus metrics', () => {
  it('counts requests by route template, not by URL', async () => {
    await http.get('/v1/training-jobs/00000000-0000-4000-8000-000000000001').expect(404)
    await http.get('/v1/training-jobs/00000000-0000-4000-8000-000000000002').expect(404)
    const text = (await http.get('/metrics').expect(200)).text
    expect(text).toMatch(/http_requests_total\{[^}]*route="\/v1\/training-jobs\/:id"[^}]*status="404"[^}]*\} [2-9]/)
    expect(text).not.toContain('00000000-0000-4000-8000-000000000001')
    expect(text).toMatch(/iisan_active_models\{service="api"\} \d/)
    // its versions are far below APPROXIMATE_INDEX_FROM: none answers from an index
    expect(text).toMatch(/iisan_serving_indexed_models\{service="api"\} 0\n/)
    expect(text).toContain('process_resident_memory_bytes')
  })
})

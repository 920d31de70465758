// IISAN through the whole platform, on real services: API and embedding cache in-process, the
// training worker as its own process. Import → cache → train IISAN → serve; activation switches
// under load; a cold-start item becomes recommendable with no training job running.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type request from 'supertest'
import { initBackend } from '@iisan/model'
import { sampleDataset } from '@iisan/pipeline'
import { openRowsFiles, startServices, trainAndWait, type ServicesUnderTest } from './helpers/platform.ts'

let services: ServicesUnderTest
let http: ReturnType<typeof request>
const slice = sampleDataset(300)
let datasetId: string
let iisanModel: string

beforeAll(async () => {
  await initBackend({ prefer: 'wasm' })
  services = await startServices('platform')
  http = services.http
  const imported = await http.post('/v1/datasets').send({ name: 'scientific-300', itemsTsv: slice.itemsTsv, usersTsv: slice.usersTsv }).expect(201)
  datasetId = imported.body.id
})

afterAll(async () => {
  await services?.close()
})

describe('IISAN end to end', () => {
  it('a training job builds the cache, trains IISAN and stores a model version with its efficiency figures', async () => {
    let mostRowsFiles = 0
    const watch = setInterval(() => (mostRowsFiles = Math.max(mostRowsFiles, openRowsFiles(services.workerPid).length)), 50)
    const { job, phases } = await trainAndWait(http, { datasetId, method: 'iisan', config: { maxEpochs: 2, patience: 2, batchSize: 32, lrItem: 1e-3, lrUser: 1e-3 } }).finally(() => clearInterval(watch))
    expect(phases.has('caching') || phases.has('training')).toBe(true)
    expect(job.epochs).toHaveLength(2)
    iisanModel = job.modelVersionId
    const mv = (await http.get(`/v1/model-versions/${iisanModel}`).expect(200)).body
    expect(mv).toMatchObject({ method: 'iisan', isActive: true, epochs: 2, embeddingDim: 64 })
    expect(mv.config.backbones.text).toMatch(/^[0-9a-f]{64}$/)
    expect(mv.config.sideLayers).toEqual([0, 2, 4]) // demo BERT: L = 4
    // IISAN serves every catalogue item with cached states, beyond the protocol's trained items
    expect(mv.metrics.dataset.itemsKept).toBeLessThan(slice.itemIds.length)
    expect(mv.numItems).toBe(slice.itemIds.length)
    expect(mv.trainableParams).toBeGreaterThan(0)
    expect(mv.secondsPerEpoch).toBeGreaterThan(0)
    expect(mv.peakMemoryMb).toBeGreaterThan(0)
    // the job read its states from rows files (text and image), and gave them back when it ended
    expect(mostRowsFiles).toBe(2)
    expect(openRowsFiles(services.workerPid)).toEqual([])
    // the whole catalogue was cached, one text state per distinct title
    const coverage = (await http.get(`/v1/datasets/${datasetId}/coverage`).expect(200)).body
    const text = coverage.backbones.find((b: { modality: string }) => b.modality === 'text')
    expect(text).toMatchObject({ total: slice.itemIds.length, done: slice.itemIds.length, failed: 0 })

    const history = slice.userLines[7].split('\t')[1].split(' ')
    const recs = await http.post('/v1/recommendations').send({ datasetId, history, k: 10 }).expect(200)
    expect(recs.body.method).toBe('iisan')
    expect(recs.body.items).toHaveLength(10)
    for (const item of recs.body.items) expect(history).not.toContain(item.itemId)
  })

  it('switching the active model under concurrent requests never fails a request', async () => {
    const { job } = await trainAndWait(http, { datasetId, method: 'sasrec-id', config: { maxEpochs: 1, patience: 1 } })
    const idModel = job.modelVersionId
    const history = slice.userLines[3].split('\t')[1].split(' ')
    const served = new Set<string>()
    const statuses: number[] = []
    let stop = false
    const load = (async () => {
      while (!stop) {
        const batch = await Promise.all(Array.from({ length: 8 }, () => http.post('/v1/recommendations').send({ datasetId, history, k: 5 })))
        for (const res of batch) {
          statuses.push(res.status)
          if (res.status === 200) served.add(res.body.modelId)
        }
      }
    })()
    for (const id of [idModel, iisanModel, idModel, iisanModel]) {
      await http.post(`/v1/model-versions/${id}/activate`).expect(200)
      await new Promise((r) => setTimeout(r, 300))
    }
    stop = true
    await load
    expect(statuses.length).toBeGreaterThan(20)
    expect(statuses.filter((s) => s !== 200)).toEqual([])
    expect(served).toEqual(new Set([idModel, iisanModel]))
    // the last activation stands
    const recs = await http.post('/v1/recommendations').send({ datasetId, history, k: 5 }).expect(200)
    expect(recs.body.modelId).toBe(iisanModel)
  })

  it('a new item is recommendable at once, with no training job running', async () => {
    const [anchorId, anchorTitle] = slice.itemsTsv.split('\n')[0].split('\t')
    const jobsBefore = (await http.get('/v1/training-jobs').expect(200)).body.jobs.length
    const added = await http.post('/v1/items').send({ datasetId, id: 'NEW-ITEM-1', title: `${anchorTitle} (new edition)` }).expect(201)
    expect(added.body.states.text).toBe('done')
    expect(added.body.states.image).toBe('absent')
    expect(added.body.models.map((m: { modelVersionId: string }) => m.modelVersionId)).toEqual([iisanModel])

    // item-to-item: the near-duplicate title lands next to its anchor
    const similar = await http.get(`/v1/items/${anchorId}/similar?datasetId=${datasetId}&k=5`).expect(200)
    expect(similar.body.items.map((i: { itemId: string }) => i.itemId)).toContain('NEW-ITEM-1')
    // recommendations rank it among everything else, and a history may now contain it
    const all = await http.post('/v1/recommendations').send({ datasetId, history: [anchorId], k: 1000 }).expect(200)
    expect(all.body.items.map((i: { itemId: string }) => i.itemId)).toContain('NEW-ITEM-1')
    await http.post('/v1/recommendations').send({ datasetId, history: ['NEW-ITEM-1'], k: 5 }).expect(200)
    // ID-based models cannot: the ID version does not know the item
    const idVersion = (await http.get(`/v1/model-versions?datasetId=${datasetId}`).expect(200)).body.modelVersions.find((m: { method: string }) => m.method === 'sasrec-id')
    await http.post('/v1/recommendations').send({ modelId: idVersion.id, history: ['NEW-ITEM-1'], k: 5 }).expect(400)
    expect((await http.get('/v1/training-jobs').expect(200)).body.jobs.length).toBe(jobsBefore)

    // bad input
    expect((await http.post('/v1/items').send({ datasetId, id: 'NEW-ITEM-1', title: 'again' }).expect(400)).body.error.code).toBe('DUPLICATE_ITEM')
    expect((await http.post('/v1/items').send({ datasetId, id: 'x', title: '' }).expect(400)).body.error.code).toBe('VALIDATION_FAILED')
    expect((await http.post('/v1/items').send({ datasetId: '00000000-0000-4000-8000-000000000000', id: 'x', title: 't' }).expect(404)).body.error.code).toBe('NOT_FOUND')
    expect((await http.get(`/v1/items/NOPE/similar?datasetId=${datasetId}`).expect(404)).body.error.code).toBe('ITEM_NOT_IN_MODEL')
  })

  it('a new item with an uploaded image gets image states too; a corrupt image only loses its image', async () => {
    const sharp = (await import('sharp')).default
    const png = await sharp({ create: { width: 48, height: 40, channels: 3, background: { r: 200, g: 40, b: 90 } } }).png().toBuffer()
    const withImage = await http
      .post('/v1/items')
      .field('datasetId', datasetId)
      .field('id', 'NEW-WITH-IMAGE')
      .field('title', 'Red anodized aluminium project box')
      .attach('image', png, { filename: 'box.png', contentType: 'image/png' })
      .expect(201)
    expect(withImage.body).toMatchObject({ item: { id: 'NEW-WITH-IMAGE', hasImage: true }, states: { text: 'done', image: 'done' } })
    expect(withImage.body.models).toHaveLength(1)
    const corrupt = await http
      .post('/v1/items')
      .field('datasetId', datasetId)
      .field('id', 'NEW-CORRUPT-IMAGE')
      .field('title', 'Blue project box')
      .attach('image', Buffer.from('definitely not a png'), { filename: 'x.png', contentType: 'image/png' })
      .expect(201)
    expect(corrupt.body.states).toEqual({ text: 'done', image: 'failed' })
    expect(corrupt.body.models).toHaveLength(1) // text alone is enough for an embedding
    const unsupported = await http.post('/v1/items').field('datasetId', datasetId).field('id', 'X').field('title', 't').attach('image', Buffer.from('%PDF'), { filename: 'x.pdf', contentType: 'application/pdf' })
    expect(unsupported.status).toBe(400)
    expect(unsupported.body.error.code).toBe('UNSUPPORTED_IMAGE')
    const recs = await http.post('/v1/recommendations').send({ datasetId, history: ['NEW-WITH-IMAGE', 'NEW-CORRUPT-IMAGE'], k: 5 }).expect(200)
    expect(recs.body.items).toHaveLength(5)
  })

  it('events extend a user’s history and userId recommendations use them at once', async () => {
    const user = 'fresh-user'
    const [first, second] = slice.itemIds
    expect((await http.post('/v1/recommendations').send({ datasetId, userId: user, k: 5 }).expect(404)).body.error.code).toBe('USER_NOT_FOUND')
    expect((await http.post('/v1/events').send({ datasetId, userId: user, itemId: first }).expect(201)).body).toMatchObject({ position: 0, userCreated: true })
    expect((await http.post('/v1/events').send({ datasetId, userId: user, itemId: second }).expect(201)).body).toMatchObject({ position: 1, userCreated: false })
    const recs = await http.post('/v1/recommendations').send({ datasetId, userId: user, k: 20 }).expect(200)
    const ids = recs.body.items.map((i: { itemId: string }) => i.itemId)
    expect(ids).not.toContain(first)
    expect(ids).not.toContain(second)
    expect((await http.post('/v1/events').send({ datasetId, userId: user, itemId: 'NOPE' }).expect(400)).body.error.code).toBe('UNKNOWN_ITEMS')
  })
})

// Every registered method through the whole platform, on real services (API and embedding cache
// in-process, the training worker as its own process): import → POST /v1/training-jobs → one epoch
// → a model version with its efficiency figures → recommendations served by that version.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type request from 'supertest'
import { METHODS, initBackend } from '@iisan/model'
import { sampleDataset } from '@iisan/pipeline'
import { startServices, trainAndWait, type ServicesUnderTest } from './helpers/platform.ts'

let services: ServicesUnderTest
let http: ReturnType<typeof request>
const slice = sampleDataset(80)
let datasetId: string

beforeAll(async () => {
  await initBackend({ prefer: 'wasm' })
  services = await startServices('methods')
  http = services.http
  datasetId = (await http.post('/v1/datasets').send({ name: 'scientific-80', itemsTsv: slice.itemsTsv, usersTsv: slice.usersTsv }).expect(201)).body.id
}, 300_000)

afterAll(async () => {
  await services?.close()
})

describe.each(METHODS.map((m) => [m.name, m] as const))('%s through the platform', (name, method) => {
  it('trains one epoch into a served model version', async () => {
    const { job } = await trainAndWait(http, { datasetId, method: name, config: { maxEpochs: 1, patience: 1, batchSize: 16 } }, 600_000)
    expect(job.status).toBe('completed')
    expect(job.epochs).toHaveLength(1)
    expect(job.config).toMatchObject({ batchSize: 16, maxEpochs: 1 })
    const mv = (await http.get(`/v1/model-versions/${job.modelVersionId}`).expect(200)).body
    expect(mv).toMatchObject({ method: name, epochs: 1, embeddingDim: 64 })
    expect(mv.trainableParams).toBeGreaterThan(0)
    expect(mv.secondsPerEpoch).toBeGreaterThan(0)
    expect(mv.peakMemoryMb).toBeGreaterThan(0)
    expect(mv.testHr10).toBeGreaterThanOrEqual(0)
    // the content and state methods name the backbones they were trained with
    if (method.reads !== 'item-ids') expect(mv.config.backbones.text).toMatch(/^[0-9a-f]{64}$/)

    await http.post(`/v1/model-versions/${job.modelVersionId}/activate`).expect(200)
    const history = slice.userLines[5].split('\t')[1].split(' ')
    const recs = await http.post('/v1/recommendations').send({ datasetId, history, k: 10 }).expect(200)
    expect(recs.body.method).toBe(name)
    expect(recs.body.modelId).toBe(job.modelVersionId)
    expect(recs.body.items).toHaveLength(10)
    for (const item of recs.body.items) expect(history).not.toContain(item.itemId)
  }, 900_000)
})

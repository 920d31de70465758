// The training methods as the API tells them (GET /v1/methods), the defaults a training job gets
// from its method, and TPME across compared model versions — over real PostgreSQL and Redis, the
// API in-process behind an API key. No worker: queued jobs stay queued.
import request from 'supertest'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { METHODS } from '@iisan/model'
import { measuredModelVersion } from './helpers/model-versions.ts'
import { createTestApi, createTestPlatform, freePort, type TestPlatform } from './helpers/platform.ts'

const KEY = 'api-methods-key-0123456789abcdef'
const UNKNOWN_UUID = '00000000-0000-4000-8000-000000000000'
/** The registry's methods in the paper's order, written out: the list must not shrink unnoticed. */
const ALL_METHODS = ['sasrec-id', 'iisan', 'iisan-uncached', 'fft', 'adapter', 'lora', 'bitfit']

let platform: TestPlatform
let api: Awaited<ReturnType<typeof createTestApi>>
let http: ReturnType<typeof request>
let datasetId: string

/** With the key, as every client of this deployment must send it. */
const get = (path: string) => http.get(path).set('authorization', `Bearer ${KEY}`)
const post = (path: string, body: object) => http.post(path).set('authorization', `Bearer ${KEY}`).send(body)

beforeAll(async () => {
  platform = await createTestPlatform('api-methods', { TEXT_BACKBONE_DIR: 'none', IMAGE_BACKBONE_DIR: 'none', API_KEYS: KEY })
  api = await createTestApi({ ...platform.env, EMBEDDING_CACHE_URL: `http://127.0.0.1:${await freePort()}` }, 'api-methods-test')
  await api.app.ready()
  http = request(api.app.server)
  datasetId = (await post('/v1/datasets', { name: 'methods', itemsTsv: 'A\tFirst\nB\tSecond\nC\tThird\n', usersTsv: 'u1\tA B C\nu2\tB C\n' }).expect(201)).body.id
})

afterAll(async () => {
  await api?.close()
  await platform?.close()
})

describe('GET /v1/methods', () => {
  it('lists every registered method, in the registry’s order, with its summary, what it reads and its capabilities', async () => {
    const { methods } = (await get('/v1/methods').expect(200)).body
    expect(methods.map((m: any) => m.name)).toEqual(ALL_METHODS)
    expect(methods.map((m: any) => m.name)).toEqual(METHODS.map((m) => m.name))
    for (const [i, m] of methods.entries()) {
      expect(m.summary).toBe(METHODS[i].summary)
      expect(m.summary.length).toBeGreaterThan(10)
    }
    const by = Object.fromEntries(methods.map((m: any) => [m.name, m]))
    expect(Object.fromEntries(ALL_METHODS.map((n) => [n, by[n].reads]))).toEqual({
      'sasrec-id': 'item-ids',
      iisan: 'cached-states',
      'iisan-uncached': 'item-content',
      fft: 'item-content',
      adapter: 'item-content',
      lora: 'item-content',
      bitfit: 'item-content',
    })
    // only IISAN embeds an item added after training without training again
    expect(ALL_METHODS.filter((n) => by[n].capabilities.coldStart)).toEqual(['iisan', 'iisan-uncached'])
  })

  it('gives each method the complete default config of its descriptor: the paper’s values', async () => {
    const by = Object.fromEntries((await get('/v1/methods').expect(200)).body.methods.map((m: any) => [m.name, m]))
    // shared keys: the same for every method
    for (const name of ALL_METHODS) {
      expect(by[name].defaults).toMatchObject({ maxEpochs: 100, patience: 11, selectBy: 'hr10', seed: 42, embeddingDim: 64, numBlocks: 2, numHeads: 2, maxSeqLen: 10, dropout: 0.1 })
    }
    expect(by['sasrec-id'].defaults).toMatchObject({ batchSize: 64, lrItem: 1e-4, lrUser: 2e-4 })
    expect(by.iisan.defaults).toMatchObject({ batchSize: 64, lrUser: 2e-4, lrTextEncoder: 5e-5, lrImageEncoder: 1e-4, lrTextAdapters: 1e-4, lrImageAdapters: 1e-4, modality: 'intra_inter', reduction: 64, activation: 'relu' })
    // the same but for the training threads, which only the cached states allow (0: automatic)
    const { trainThreads, ...sanDefaults } = by.iisan.defaults
    expect(trainThreads).toBe(0)
    expect(by['iisan-uncached'].defaults).toEqual(sanDefaults)
    expect(by.fft.defaults).toMatchObject({ batchSize: 32, lrUser: 1e-4, lrTextEncoder: 5e-5, lrImageEncoder: 1e-4 })
    expect(by.adapter.defaults).toMatchObject({ batchSize: 32, lrUser: 2e-4, lrTextAdapters: 4e-4, lrImageAdapters: 4e-4, adapterBottleneck: 64 })
    expect(by.lora.defaults).toMatchObject({ batchSize: 32, lrUser: 2e-4, lrTextAdapters: 4e-4, lrImageAdapters: 4e-4, loraRank: 8, loraAlpha: 1 })
    expect(by.bitfit.defaults).toMatchObject({ batchSize: 32, lrUser: 2e-4, lrTextEncoder: 5e-5, lrImageEncoder: 1e-4 })
    // and whatever a descriptor says, the API says too
    for (const method of METHODS) expect(by[method.name].defaults).toMatchObject(method.defaults)
  })

  it('names each parameter group, what it holds and the config key of its rate', async () => {
    const by = Object.fromEntries((await get('/v1/methods').expect(200)).body.methods.map((m: any) => [m.name, m]))
    const rates = (name: string) => Object.fromEntries(by[name].paramGroups.map((g: any) => [g.group, g.rateKey]))
    expect(rates('sasrec-id')).toEqual({ itemIds: 'lrItem', recsys: 'lrUser' })
    expect(rates('iisan')).toEqual({ textEncoder: 'lrTextEncoder', imageEncoder: 'lrImageEncoder', textAdapters: 'lrTextAdapters', imageAdapters: 'lrImageAdapters', recsys: 'lrUser' })
    expect(rates('fft')).toEqual({ textEncoder: 'lrTextEncoder', imageEncoder: 'lrImageEncoder', recsys: 'lrUser' })
    expect(rates('lora')).toEqual({ textAdapters: 'lrTextAdapters', imageAdapters: 'lrImageAdapters', recsys: 'lrUser' })
    for (const method of METHODS) {
      expect(by[method.name].paramGroups.map((g: any) => [g.group, g.holds])).toEqual(Object.entries(method.paramGroups))
    }
  })

  it('lists the config keys each method reads: the shared ones and its own, every default among them', async () => {
    const by = Object.fromEntries((await get('/v1/methods').expect(200)).body.methods.map((m: any) => [m.name, m]))
    const shared = ['maxEpochs', 'batchSize', 'lrItem', 'lrUser', 'lrTextEncoder', 'lrImageEncoder', 'lrTextAdapters', 'lrImageAdapters', 'patience', 'selectBy', 'embeddingDim', 'numBlocks', 'numHeads', 'maxSeqLen', 'dropout', 'seed']
    const own = (name: string) => by[name].configKeys.filter((k: string) => !shared.includes(k)).sort()
    expect(own('sasrec-id')).toEqual([])
    expect(own('iisan')).toEqual(['activation', 'modality', 'reduction', 'sideLayers', 'trainThreads'])
    expect(own('fft')).toEqual([])
    expect(own('adapter')).toEqual(['adapterBottleneck'])
    expect(own('lora')).toEqual(['loraAlpha', 'loraRank'])
    for (const name of ALL_METHODS) {
      expect(by[name].configKeys).toEqual(expect.arrayContaining(shared))
      expect(Object.keys(by[name].defaults).filter((k) => !by[name].configKeys.includes(k))).toEqual([])
    }
  })

  it('GET /v1/methods/:name is the same entry; an unknown name is 404 listing the methods', async () => {
    const { methods } = (await get('/v1/methods').expect(200)).body
    for (const m of methods) expect((await get(`/v1/methods/${m.name}`).expect(200)).body).toEqual(m)
    const missing = await get('/v1/methods/dora').expect(404)
    expect(missing.body.error).toMatchObject({ code: 'NOT_FOUND', details: { available: ALL_METHODS } })
    expect(missing.body.error.message).toMatch(/dora/)
  })

  it('needs the API key like every /v1 route', async () => {
    expect((await http.get('/v1/methods').expect(401)).body.error.code).toBe('UNAUTHORIZED')
    expect((await http.get('/v1/methods/iisan').expect(401)).body.error.code).toBe('UNAUTHORIZED')
    await http.get('/v1/methods').set('authorization', 'Bearer not-the-key-0123456789abc').expect(401)
  })

  it('is in the OpenAPI document with its response schema', async () => {
    const doc = (await http.get('/docs/json').expect(200)).body
    const schema = doc.paths['/v1/methods'].get.responses['200'].content['application/json'].schema
    const method = schema.properties.methods.items
    expect(Object.keys(method.properties).sort()).toEqual(['capabilities', 'configKeys', 'defaults', 'name', 'paramGroups', 'reads', 'summary'])
    expect(doc.paths['/v1/methods/{name}'].get.responses['404']).toBeDefined()
  })
})

describe('POST /v1/training-jobs: a job’s config comes from its method', () => {
  const submit = (method: string, config?: object) => post('/v1/training-jobs', { datasetId, method, ...(config ? { config } : {}) })

  it('without a config, a job gets its method’s defaults', async () => {
    const fft = (await submit('fft').expect(202)).body
    expect(fft.config).toMatchObject({ batchSize: 32, lrUser: 1e-4, lrTextEncoder: 5e-5, maxEpochs: 100 })
    const iisan = (await submit('iisan').expect(202)).body
    expect(iisan.config).toMatchObject({ batchSize: 64, lrUser: 2e-4, lrTextEncoder: 5e-5, modality: 'intra_inter', reduction: 64 })
    // what is stored is what the API answered
    expect((await get(`/v1/training-jobs/${fft.id}`).expect(200)).body.config).toEqual(fft.config)
  })

  it('a partial config is completed with the method’s defaults, not with the schema’s', async () => {
    // ajv fills in the schema's defaults of a config it is given (useDefaults): the method's must still win
    const job = (await submit('fft', { maxEpochs: 3, lrTextEncoder: 1e-5 }).expect(202)).body
    expect(job.config).toMatchObject({ maxEpochs: 3, batchSize: 32, lrUser: 1e-4, lrTextEncoder: 1e-5, patience: 11 })
  })

  it('an unknown method is 400 naming the methods there are', async () => {
    const res = await submit('dora').expect(400)
    expect(res.body.error.code).toBe('VALIDATION_FAILED')
    for (const name of ALL_METHODS) expect(res.body.error.message).toContain(`"${name}"`)
  })

  it('a key only another method reads is accepted and ignored: the stored config leaves it out', async () => {
    const fft = (await submit('fft', { loraRank: 4, modality: 'intra', batchSize: 16 }).expect(202)).body
    expect(fft.config.batchSize).toBe(16)
    expect(fft.config).not.toHaveProperty('loraRank')
    expect(fft.config).not.toHaveProperty('modality')
    const stored = (await get(`/v1/training-jobs/${fft.id}`).expect(200)).body.config
    expect(Object.keys(stored).sort()).toEqual([...(await get('/v1/methods/fft').expect(200)).body.configKeys].sort())
    // the method that reads it keeps it
    expect((await submit('lora', { loraRank: 4 }).expect(202)).body.config).toMatchObject({ loraRank: 4, loraAlpha: 1 })
  })
})

describe('GET /v1/model-versions/compare: TPME across the compared versions', () => {
  // TPME = 0.45·t + 0.1·p + 0.45·m, each min–max normalised across the compared versions
  const FIGURES = {
    a: { method: 'iisan', secondsPerEpoch: 10, trainableParams: 1_000_000, peakMemoryMb: 2000, testHr10: 0.12, testNdcg10: 0.07, epochs: 4 },
    b: { method: 'fft', secondsPerEpoch: 30, trainableParams: 100_000, peakMemoryMb: 1000, testHr10: 0.1, testNdcg10: 0.05, epochs: 5 },
    c: { method: 'lora', secondsPerEpoch: 20, trainableParams: 550_000, peakMemoryMb: 4000, testHr10: 0.11, testNdcg10: 0.06, epochs: 6 },
  }
  const ids: Record<string, string> = {}
  let unmeasured: string

  beforeAll(async () => {
    for (const [k, figures] of Object.entries(FIGURES)) ids[k] = (await measuredModelVersion(platform.db.prisma, datasetId, figures)).id
    unmeasured = (await measuredModelVersion(platform.db.prisma, datasetId, { method: 'sasrec-id', testHr10: 0.05 })).id
  })

  const compare = (...keys: string[]) => get(`/v1/model-versions/compare?ids=${keys.map((k) => ids[k] ?? k).join(',')}`)

  it('three versions: the figures side by side and each one’s TPME, worked out by hand', async () => {
    const { weights, versions } = (await compare('a', 'b', 'c').expect(200)).body
    expect(weights).toEqual({ time: 0.45, params: 0.1, memory: 0.45 })
    expect(versions.map((v: any) => v.id)).toEqual([ids.a, ids.b, ids.c])
    for (const [i, k] of ['a', 'b', 'c'].entries()) expect(versions[i]).toMatchObject(FIGURES[k as keyof typeof FIGURES])
    // time 10..30: a 0, b 1, c 0.5 · params 100k..1M: a 1, b 0, c 0.5 · memory 1000..4000: a 1/3, b 0, c 1
    const expected = [
      { timeNorm: 0, paramsNorm: 1, memoryNorm: 1 / 3, tpme: 0.45 * 0 + 0.1 * 1 + 0.45 * (1 / 3) }, // 0.25
      { timeNorm: 1, paramsNorm: 0, memoryNorm: 0, tpme: 0.45 }, // 0.45
      { timeNorm: 0.5, paramsNorm: 0.5, memoryNorm: 1, tpme: 0.225 + 0.05 + 0.45 }, // 0.725
    ]
    for (const [i, e] of expected.entries()) {
      for (const [field, value] of Object.entries(e)) expect(versions[i][field], `${field} of version ${i}`).toBeCloseTo(value, 12)
    }
    expect(versions.map((v: any) => v.tpme)).toEqual([expect.closeTo(0.25, 12), expect.closeTo(0.45, 12), expect.closeTo(0.725, 12)])
  })

  it('TPME is relative to the set: a alone against b is scored again', async () => {
    const { versions } = (await compare('b', 'a').expect(200)).body
    expect(versions.map((v: any) => v.id)).toEqual([ids.b, ids.a])
    // b: slowest (1), fewest params (0), least memory (0) → 0.45; a: fastest, most params, most memory → 0.1 + 0.45
    expect(versions[0].tpme).toBeCloseTo(0.45, 12)
    expect(versions[1].tpme).toBeCloseTo(0.55, 12)
  })

  it('a version without efficiency figures is shown, and left out of TPME', async () => {
    const { versions } = (await compare('a', unmeasured, 'c').expect(200)).body
    expect(versions[1]).toMatchObject({ id: unmeasured, tpme: null, timeNorm: null, secondsPerEpoch: null })
    // a against c only: time a 0, c 1 · params a 1, c 0 · memory a 0, c 1
    expect(versions[0].tpme).toBeCloseTo(0.1, 12)
    expect(versions[2].tpme).toBeCloseTo(0.9, 12)
  })

  it('a bad id list is 400; unknown ids are 404 naming them', async () => {
    const malformed = await compare('a', 'not-an-id').expect(400)
    expect(malformed.body.error).toMatchObject({ code: 'VALIDATION_FAILED', details: { malformed: ['not-an-id'] } })
    expect((await compare('a').expect(400)).body.error.code).toBe('VALIDATION_FAILED')
    expect((await compare('a', 'a').expect(400)).body.error.code).toBe('VALIDATION_FAILED')
    expect((await get('/v1/model-versions/compare').expect(400)).body.error.code).toBe('VALIDATION_FAILED')
    expect((await get('/v1/model-versions/compare?ids=').expect(400)).body.error.code).toBe('VALIDATION_FAILED')
    const unknown = await compare('a', UNKNOWN_UUID).expect(404)
    expect(unknown.body.error).toMatchObject({ code: 'NOT_FOUND', details: { missing: [UNKNOWN_UUID] } })
  })
})

// Bad input to the API (and the embedding cache) over real PostgreSQL and Redis: every case is a
// 4xx with `{ error: { code, message, details? } }` — never a 500, a hang or half-written data.
// The services run in-process; no worker and no model are needed. The API's embedding cache URL
// points at a port nothing listens on (the cold-start failure path).
import Fastify from 'fastify'
import request from 'supertest'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { EmbeddingCacheClientError } from '@iisan/embedding-cache/client'
import { errorHandling } from '@iisan/http'
import { isEmbeddingCacheFailure } from '../services/api/src/routes/items.ts'
import { createTestApi, createTestCache, createTestPlatform, freePort, type TestPlatform } from './helpers/platform.ts'

let platform: TestPlatform
let api: Awaited<ReturnType<typeof createTestApi>>
let cache: Awaited<ReturnType<typeof createTestCache>>
let http: ReturnType<typeof request>
let cacheHttp: ReturnType<typeof request>
let datasetId: string

const UNKNOWN_UUID = '00000000-0000-4000-8000-000000000000'
const ITEMS = 'A\tFirst item\nB\tSecond item\nC\tThird item\n'
const USERS = 'u1\tA B C\nu2\tB C\n'

beforeAll(async () => {
  platform = await createTestPlatform('api-input', { TEXT_BACKBONE_DIR: 'none', IMAGE_BACKBONE_DIR: 'none' })
  cache = await createTestCache(platform.env, 'cache-input-test', { worker: false })
  await cache.app.ready()
  cacheHttp = request(cache.app.server)
  api = await createTestApi({ ...platform.env, EMBEDDING_CACHE_URL: `http://127.0.0.1:${await freePort()}` }, 'api-input-test')
  await api.app.ready()
  http = request(api.app.server)
  datasetId = (await http.post('/v1/datasets').send({ name: 'base', itemsTsv: ITEMS, usersTsv: USERS }).expect(201)).body.id
})

afterAll(async () => {
  await api?.close()
  await cache?.close()
  await platform?.close()
})

/** The response is the error `status`/`code`, in the platform's error shape. */
function expectError(res: request.Response, status: number, code: string) {
  expect({ status: res.status, code: res.body?.error?.code }).toEqual({ status, code })
  expect(res.body.error.message).toEqual(expect.any(String))
  return res.body.error as { code: string; message: string; details?: any }
}

/** Rows in the database besides the `base` dataset's: nothing may be half-written. */
async function extraRows() {
  const prisma = platform.db.prisma
  return {
    datasets: (await prisma.dataset.count()) - 1,
    items: await prisma.item.count({ where: { NOT: { datasetId } } }),
    baseItems: await prisma.item.count({ where: { datasetId } }),
    users: await prisma.datasetUser.count({ where: { NOT: { datasetId } } }),
    jobs: await prisma.trainingJob.count(),
  }
}
const CLEAN = { datasets: 0, items: 0, baseItems: 3, users: 0, jobs: 0 }

describe('control characters', () => {
  it('a NUL or other C0 character in an id, a history or an image reference is MALFORMED_FILE naming the file and line', async () => {
    const cases: [string, string, string, number][] = [
      ['items', 'A\u0000\tok\n', 'u\tA\n', 1],
      ['items', 'A\tok\tpath/with\u001bescape.png\n', 'u\tA\n', 1],
      ['users', 'A\tok\nB\tok\n', 'u1\tA B\nu\u00002\tA\n', 2],
      ['users', 'A\tok\nB\tok\n', 'u1\tA\u000bB\n', 1],
    ]
    for (const [file, itemsTsv, usersTsv, line] of cases) {
      const res = await http.post('/v1/datasets').send({ name: 'ctl', itemsTsv, usersTsv })
      const error = expectError(res, 400, 'MALFORMED_FILE')
      expect({ file: error.details.file, line: error.details.line }).toEqual({ file: `${file}.tsv`, line })
      expect(error.details.reason).toMatch(/control character U\+00/)
    }
    // the same through a multipart upload
    const multipart = await http.post('/v1/datasets').field('name', 'ctl').attach('items', Buffer.from('A\tok\nB\u0000\tnul\n'), 'items.tsv').attach('users', Buffer.from('u\tA\n'), 'users.tsv')
    expect(expectError(multipart, 400, 'MALFORMED_FILE').details).toMatchObject({ file: 'items.tsv', line: 2 })
    // in titles they are removed instead (entities decoding to one too), and the import says where (test/api-usability.test.ts)
    const titles = await http.post('/v1/datasets').send({ name: 'ctl-titles', itemsTsv: 'A\tok\nB\tti\u0000tle\n\nC\tbell\u0007\nD\tx&#1;y\n', usersTsv: 'u\tA B C D\n' }).expect(201)
    expect(titles.body.warnings.map((w: { line: number }) => w.line)).toEqual([2, 4, 5])
    await platform.db.prisma.dataset.delete({ where: { id: titles.body.id } })
    // CRLF line ends and tabs between columns are fine
    await http.post('/v1/datasets').send({ name: 'crlf', itemsTsv: 'A\tok\r\nB\tok\r\n', usersTsv: 'u\tA\tB\r\n' }).expect(201)
    await platform.db.prisma.dataset.deleteMany({ where: { name: 'crlf' } })
    expect(await extraRows()).toEqual(CLEAN)
  })

  it('JSON strings with control characters are VALIDATION_FAILED, never a database error', async () => {
    const posts: [string, object][] = [
      ['/v1/datasets', { name: 'nul\u0000name', itemsTsv: ITEMS, usersTsv: USERS }],
      ['/v1/datasets', { name: 'ok', description: 'bell\u0007', itemsTsv: ITEMS, usersTsv: USERS }],
      ['/v1/datasets', { name: 'line\nbreak', itemsTsv: ITEMS, usersTsv: USERS }],
      ['/v1/items', { datasetId, id: 'NEW\u0000', title: 'ok' }],
      ['/v1/items', { datasetId, id: 'NEW', title: 'ok', imageUrl: 'file:///x\u0000.png' }],
      ['/v1/events', { datasetId, userId: 'u\u0000', itemId: 'A' }],
      ['/v1/events', { datasetId, userId: 'u1', itemId: 'A\u001f' }],
      ['/v1/recommendations', { datasetId, userId: 'u\u0000', k: 5 }],
      ['/v1/recommendations', { datasetId, history: ['A', 'B\u0000'], k: 5 }],
    ]
    for (const [path, body] of posts) {
      const error = expectError(await http.post(path).send(body), 400, 'VALIDATION_FAILED')
      expect(error.message).toMatch(/control characters/)
    }
    // multi-line text may hold tab and newline
    const described = await http.post('/v1/datasets').send({ name: 'described', description: 'line one\n\tline two', itemsTsv: ITEMS, usersTsv: USERS }).expect(201)
    await platform.db.prisma.dataset.delete({ where: { id: described.body.id } })
    expectError(await http.get(`/v1/datasets/${datasetId}/items?q=a%00b`), 400, 'VALIDATION_FAILED')
    expectError(await http.get(`/v1/items/A%00/similar?datasetId=${datasetId}`), 400, 'VALIDATION_FAILED')
    expect(await extraRows()).toEqual(CLEAN)
    expect(await platform.db.prisma.datasetUser.count({ where: { datasetId } })).toBe(2)
  })

  it('the shared error plugin turns any remaining PostgreSQL 22021 error into a 400', async () => {
    const app = Fastify()
    await app.register(errorHandling)
    app.get('/nul', async () => platform.db.prisma.$queryRaw`SELECT ${'a\u0000b'}::text AS t`)
    try {
      const res = await app.inject({ method: 'GET', url: '/nul' })
      expect(res.statusCode).toBe(400)
      expect(res.json().error).toMatchObject({ code: 'VALIDATION_FAILED', details: { sqlState: '22021' } })
    } finally {
      await app.close()
    }
  })
})

describe('integer bounds', () => {
  it('offset past int32 is a 400, not a Prisma error', async () => {
    const error = expectError(await http.get(`/v1/datasets/${datasetId}/items?offset=1e20`), 400, 'VALIDATION_FAILED')
    expect(error.message).toMatch(/offset/)
    expectError(await http.get(`/v1/datasets/${datasetId}/items?offset=2147483648`), 400, 'VALIDATION_FAILED')
    expect((await http.get(`/v1/datasets/${datasetId}/items?offset=2147483647`).expect(200)).body).toEqual({ items: [], total: 3 })
  })

  it('the embedding cache rejects item ids past int32', async () => {
    const error = expectError(await cacheHttp.post('/v1/items/encode').send({ itemIds: [999999999999] }), 400, 'VALIDATION_FAILED')
    expect(error.message).toMatch(/itemIds/)
    expectError(await cacheHttp.post('/v1/items/encode').send({ itemIds: [2 ** 31 - 1] }), 404, 'NOT_FOUND')
  })
})

describe('media types', () => {
  it('a body in any type but JSON (or multipart where taken) is 415 UNSUPPORTED_MEDIA_TYPE', async () => {
    for (const path of ['/v1/datasets', '/v1/items', '/v1/recommendations', '/v1/events', '/v1/training-jobs']) {
      const error = expectError(await http.post(path).set('content-type', 'text/plain').send('name=x'), 415, 'UNSUPPORTED_MEDIA_TYPE')
      expect(error.details).toMatchObject({ contentType: 'text/plain', accepted: expect.arrayContaining(['application/json']) })
      expectError(await http.post(path).type('form').send({ name: 'x' }), 415, 'UNSUPPORTED_MEDIA_TYPE')
      expectError(await http.post(path).set('content-type', 'application/xml').send('<x/>'), 415, 'UNSUPPORTED_MEDIA_TYPE')
    }
    // multipart only where the route reads it
    expectError(await http.post('/v1/recommendations').field('k', '5'), 415, 'UNSUPPORTED_MEDIA_TYPE')
    expectError(await cacheHttp.post('/v1/items/encode').set('content-type', 'text/plain').send('1'), 415, 'UNSUPPORTED_MEDIA_TYPE')
    // no body at all
    expectError(await http.post('/v1/datasets'), 400, 'VALIDATION_FAILED')
    expectError(await http.post('/v1/items'), 400, 'VALIDATION_FAILED')
    expect(await extraRows()).toEqual(CLEAN)
  })

  it('a malformed multipart body is 400 MALFORMED_MULTIPART', async () => {
    const truncated = '--XYZ\r\nContent-Disposition: form-data; name="name"\r\n\r\nabc'
    for (const path of ['/v1/datasets', '/v1/items']) {
      expectError(await http.post(path).set('content-type', 'multipart/form-data; boundary=XYZ').send(truncated), 400, 'MALFORMED_MULTIPART')
      expectError(await http.post(path).set('content-type', 'multipart/form-data').send('no boundary'), 400, 'MALFORMED_MULTIPART')
      expectError(await http.post(path).set('content-type', `multipart/form-data; boundary=${'b'.repeat(300)}`).send('x'), 400, 'MALFORMED_MULTIPART')
    }
    expect(await extraRows()).toEqual(CLEAN)
  })
})

describe('multipart bodies follow the JSON body’s rules', () => {
  it('POST /v1/datasets', async () => {
    const upload = (name: string, extra: Record<string, string> = {}) => {
      let req = http.post('/v1/datasets').field('name', name)
      for (const [k, v] of Object.entries(extra)) req = req.field(k, v)
      return req.attach('items', Buffer.from(ITEMS), 'items.tsv').attach('users', Buffer.from(USERS), 'users.tsv')
    }
    const long = expectError(await upload('x'.repeat(201)), 400, 'VALIDATION_FAILED')
    expect(long.details).toEqual([expect.objectContaining({ instancePath: '/name' })])
    expect(expectError(await upload('nul\u0000'), 400, 'VALIDATION_FAILED').message).toMatch(/name must not contain control characters/)
    expectError(await upload('ok', { description: 'd'.repeat(2001) }), 400, 'VALIDATION_FAILED')
    expect(expectError(await upload('ok', { bogus: '1' }), 400, 'VALIDATION_FAILED').details).toEqual([expect.objectContaining({ instancePath: '/bogus' })])
    expect(await extraRows()).toEqual(CLEAN)
    // and a valid one still imports
    const ok = await upload('multipart-ok', { description: 'two\nlines' }).expect(201)
    expect(ok.body).toMatchObject({ name: 'multipart-ok', description: 'two\nlines', numItems: 3, numUsers: 2 })
    await platform.db.prisma.dataset.delete({ where: { id: ok.body.id } })
  })

  it('POST /v1/items', async () => {
    const item = (fields: Record<string, string>) => {
      let req = http.post('/v1/items')
      for (const [k, v] of Object.entries({ datasetId, id: 'NEW', title: 'A new item', ...fields })) req = req.field(k, v)
      return req
    }
    const cases: [Record<string, string>, string][] = [
      [{ id: 'has space' }, '/id'],
      [{ id: 'x'.repeat(129) }, '/id'],
      [{ title: 't'.repeat(2001) }, '/title'],
      [{ imageUrl: '' }, '/imageUrl'],
      [{ imageUrl: 'u'.repeat(2001) }, '/imageUrl'],
      [{ datasetId: 'not-a-uuid' }, '/datasetId'],
      [{ extra: 'x' }, '/extra'],
    ]
    for (const [fields, path] of cases) {
      const error = expectError(await item(fields), 400, 'VALIDATION_FAILED')
      expect({ fields, paths: error.details.map((d: { instancePath: string }) => d.instancePath) }).toEqual({ fields, paths: [path] })
    }
    // a field over its size limit is refused whole, never truncated into something valid
    expectError(await item({ title: 't'.repeat(20_000) }), 413, 'PAYLOAD_TOO_LARGE')
    const png = { filename: 'x.png', contentType: 'image/png' }
    expectError(await item({}).attach('image', Buffer.from('a'), png).attach('image', Buffer.from('b'), png), 400, 'VALIDATION_FAILED')
    expectError(await item({}).attach('photo', Buffer.from('a'), png), 400, 'VALIDATION_FAILED')
    expect(await extraRows()).toEqual(CLEAN)
  })
})

describe('cold start when the embedding cache is down', () => {
  it('is 503 DEPENDENCY_UNAVAILABLE with Retry-After, saying the item was NOT added, and it is not', async () => {
    const refused = await http.post('/v1/items').send({ datasetId, id: 'NEW-1', title: 'A new item' })
    const json = expectError(refused, 503, 'DEPENDENCY_UNAVAILABLE')
    expect(refused.headers['retry-after']).toMatch(/^\d+$/)
    expect(json.details).toEqual({ dependency: 'embedding-cache' })
    expect(json.message).toMatch(/NOT added/)
    expect(json.message).toMatch(/ECONNREFUSED/)
    // where the cache lives is not the client's business
    expect(json.message).not.toMatch(/127\.0\.0\.1/)
    const multipart = await http.post('/v1/items').field('datasetId', datasetId).field('id', 'NEW-2').field('title', 'Another new item')
    expect(expectError(multipart, 503, 'DEPENDENCY_UNAVAILABLE').message).toMatch(/NOT added/)
    expect(await extraRows()).toEqual(CLEAN)
    expect((await http.get(`/v1/datasets/${datasetId}`).expect(200)).body.numItems).toBe(3)
  })

  it('only cache errors and network failures count as the cache’s fault', () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' })
    expect(isEmbeddingCacheFailure(new TypeError('fetch failed', { cause: refused }))).toBe(true)
    expect(isEmbeddingCacheFailure(new TypeError('fetch failed', { cause: new AggregateError([refused]) }))).toBe(true)
    expect(isEmbeddingCacheFailure(new EmbeddingCacheClientError(500, 'INTERNAL', 'boom'))).toBe(true)
    expect(isEmbeddingCacheFailure(new TypeError("Cannot read properties of undefined (reading 'id')"))).toBe(false)
    expect(isEmbeddingCacheFailure(new Error('connect ECONNREFUSED'))).toBe(false)
  })
})

describe('training config', () => {
  it('embeddingDim not divisible by numHeads and a seed past uint32 are 400 at submit time', async () => {
    const heads = expectError(await http.post('/v1/training-jobs').send({ datasetId, method: 'sasrec-id', config: { embeddingDim: 30, numHeads: 4 } }), 400, 'VALIDATION_FAILED')
    expect(heads.message).toMatch(/embeddingDim \(30\) must be divisible by numHeads \(4\)/)
    // against the default numHeads (2) too
    expectError(await http.post('/v1/training-jobs').send({ datasetId, method: 'iisan', config: { embeddingDim: 63 } }), 400, 'VALIDATION_FAILED')
    const seed = expectError(await http.post('/v1/training-jobs').send({ datasetId, method: 'sasrec-id', config: { seed: 2 ** 32 } }), 400, 'VALIDATION_FAILED')
    expect(seed.message).toMatch(/seed/)
    expect(await extraRows()).toEqual(CLEAN)
  })
})

describe('empty files', () => {
  it('a whitespace-only items.tsv or users.tsv is MALFORMED_FILE, not an empty dataset', async () => {
    const noItems = expectError(await http.post('/v1/datasets').send({ name: 'empty', itemsTsv: ' \n\t\n', usersTsv: USERS }), 400, 'MALFORMED_FILE')
    expect(noItems.details).toMatchObject({ file: 'items.tsv', reason: 'no items' })
    const noUsers = expectError(await http.post('/v1/datasets').send({ name: 'empty', itemsTsv: ITEMS, usersTsv: '\n  \n' }), 400, 'MALFORMED_FILE')
    expect(noUsers.details).toMatchObject({ file: 'users.tsv', reason: 'no users' })
    const multipart = await http.post('/v1/datasets').field('name', 'empty').attach('items', Buffer.from(ITEMS), 'items.tsv').attach('users', Buffer.from('   \n'), 'users.tsv')
    expect(expectError(multipart, 400, 'MALFORMED_FILE').details).toMatchObject({ file: 'users.tsv', reason: 'no users' })
    expect(await extraRows()).toEqual(CLEAN)
  })
})

describe('body limits', () => {
  it('1 MB for ordinary JSON bodies, as a 413 in the error shape', async () => {
    const big = JSON.stringify({ datasetId, history: Array.from({ length: 1000 }, (_, i) => `${i}`.padEnd(128, 'x')), pad: 'x'.repeat(2 ** 20) })
    const error = expectError(await http.post('/v1/recommendations').set('content-type', 'application/json').send(big), 413, 'PAYLOAD_TOO_LARGE')
    expect(error.details).toEqual({ limitBytes: 2 ** 20 })
    expectError(await http.post('/v1/items').send({ datasetId, id: 'BIG', title: 't', pad: 'x'.repeat(100_000) }), 413, 'PAYLOAD_TOO_LARGE')
    // history ids are ids: at most 128 characters
    expectError(await http.post('/v1/recommendations').send({ datasetId, history: ['x'.repeat(129)], k: 5 }), 400, 'VALIDATION_FAILED')
  })

  it('a dataset upload may be larger', async () => {
    const n = 30_000
    const itemsTsv = Array.from({ length: n }, (_, i) => `I${i}\tA reasonably long catalogue title number ${i} for the size test`).join('\n')
    const usersTsv = Array.from({ length: 1000 }, (_, u) => `U${u}\t${Array.from({ length: 5 }, (_, j) => `I${(u * 7 + j) % n}`).join(' ')}`).join('\n')
    expect(itemsTsv.length + usersTsv.length).toBeGreaterThan(2 * 2 ** 20)
    const res = await http.post('/v1/datasets').send({ name: 'large', itemsTsv, usersTsv }).expect(201)
    expect(res.body).toMatchObject({ numItems: n, numUsers: 1000 })
    await platform.db.prisma.dataset.delete({ where: { id: res.body.id } })
  })

  it('an image over 20 MB is 413 IMAGE_TOO_LARGE', async () => {
    const res = await http
      .post('/v1/items')
      .field('datasetId', datasetId)
      .field('id', 'HUGE')
      .field('title', 'huge image')
      .attach('image', Buffer.alloc(20 * 2 ** 20 + 1, 1), { filename: 'huge.png', contentType: 'image/png' })
    expect(expectError(res, 413, 'IMAGE_TOO_LARGE').details).toEqual({ limitBytes: 20 * 2 ** 20 })
    expect(await extraRows()).toEqual(CLEAN)
  })
})

describe('ids that cannot exist', () => {
  it('model-version compare with malformed ids is 400 listing them', async () => {
    const error = expectError(await http.get(`/v1/model-versions/compare?ids=abc,${UNKNOWN_UUID},def`), 400, 'VALIDATION_FAILED')
    expect(error.details).toEqual({ malformed: ['abc', 'def'] })
    // well-formed but unknown ids are still 404
    expectError(await http.get(`/v1/model-versions/compare?ids=${UNKNOWN_UUID},00000000-0000-4000-8000-000000000001`), 404, 'NOT_FOUND')
  })

  it('an unknown dataset is 404 NOT_FOUND; a known one without an active model 409', async () => {
    expect(expectError(await http.post('/v1/recommendations').send({ datasetId: UNKNOWN_UUID, history: ['A'], k: 5 }), 404, 'NOT_FOUND').message).toMatch(/dataset .* not found/)
    expectError(await http.get(`/v1/items/A/similar?datasetId=${UNKNOWN_UUID}`), 404, 'NOT_FOUND')
    expectError(await http.post('/v1/recommendations').send({ datasetId, history: ['A'], k: 5 }), 409, 'NO_ACTIVE_MODEL')
  })
})

describe('API keys', () => {
  it('with API_KEYS set, /v1 needs a valid key; health, metrics, docs and the dashboard page stay open', async () => {
    const { buildApp } = await import('../services/api/src/app.ts')
    const { ServingRegistry } = await import('@iisan/pipeline')
    const { createRedisConnection, createTrainingQueue } = await import('@iisan/queue')
    const redis = createRedisConnection(platform.env.REDIS_URL)
    const queue = createTrainingQueue(redis, platform.prefix)
    const key = 'k3y-for-tests-0123456789'
    const app = await buildApp(
      { prisma: platform.db.prisma, redis, trainingQueue: queue, registry: new ServingRegistry(platform.db.prisma), embeddingCacheUrl: 'http://127.0.0.1:9', announceActivation: async () => {}, announceUpdated: async () => {} },
      { apiKeys: [key, 'another-key-abcdefghij'] },
    )
    try {
      await app.ready()
      const http = request(app.server)
      const missing = await http.get('/v1/datasets').expect(401)
      expect(missing.body.error.code).toBe('UNAUTHORIZED')
      expect(missing.headers['www-authenticate']).toMatch(/Bearer/)
      expect((await http.get('/v1/datasets').set('authorization', 'Bearer wrong-key-0123456789').expect(401)).body.error.message).toMatch(/not valid/)
      await http.get('/v1/datasets').set('authorization', `Bearer ${key}`).expect(200)
      await http.get('/v1/datasets').set('x-api-key', 'another-key-abcdefghij').expect(200)
      // a rejected request never reaches validation or the database
      await http.post('/v1/datasets').send({ name: 'x' }).expect(401)
      await http.get('/healthz').expect(200)
      await http.get('/metrics').expect(200)
      await http.get('/docs/json').expect(200)
      await http.get('/admin/').expect(200)
    } finally {
      await app.close()
      await queue.close()
      await redis.quit()
    }
  })

  it('rejects short keys at start-up, naming the variable', async () => {
    const { loadConfig } = await import('@iisan/config')
    expect(() => loadConfig({ API_KEYS: 'short' })).toThrow(/API_KEYS/)
    expect(loadConfig({ API_KEYS: ' aaaaaaaaaaaaaaaa , bbbbbbbbbbbbbbbb ' }).apiKeys).toEqual(['aaaaaaaaaaaaaaaa', 'bbbbbbbbbbbbbbbb'])
  })

  it('reads the index beams, and rejects a beam that is not a whole number ≥ 1, naming the variable', async () => {
    const { loadConfig } = await import('@iisan/config')
    expect(loadConfig({ ITEM_INDEX_EF_SEARCH: '96', ITEM_INDEX_EF_CONSTRUCTION: '200' })).toMatchObject({ itemIndexEfSearch: 96, itemIndexEfConstruction: 200 })
    const unset = loadConfig({})
    expect([unset.itemIndexEfSearch, unset.itemIndexEfConstruction]).toEqual([undefined, undefined])
    for (const bad of ['0', '-5', '1.5', 'wide']) {
      expect(() => loadConfig({ ITEM_INDEX_EF_SEARCH: bad })).toThrow(/ITEM_INDEX_EF_SEARCH/)
      expect(() => loadConfig({ ITEM_INDEX_EF_CONSTRUCTION: bad })).toThrow(/ITEM_INDEX_EF_CONSTRUCTION/)
    }
  })
})

// Smaller holes in what the API accepts, over real PostgreSQL and Redis: one title rule for the
// import and POST /v1/items, image references refused at import (with the line) as the embedding
// cache would refuse them later, and Idempotency-Key on the creating POSTs.
import fs from 'node:fs'
import path from 'node:path'
import request from 'supertest'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { MAX_TITLE_LENGTH } from '@iisan/storage'
import { createTestApi, createTestCache, createTestPlatform, freePort, type TestPlatform } from './helpers/platform.ts'

let platform: TestPlatform
let api: Awaited<ReturnType<typeof createTestApi>>
let deadCacheApi: Awaited<ReturnType<typeof createTestApi>>
let cache: Awaited<ReturnType<typeof createTestCache>>
let http: ReturnType<typeof request>
/** A second replica whose embedding cache is down: POST /v1/items answers 503 there. */
let httpCacheDown: ReturnType<typeof request>
let datasetId: string
let imageRoot: string

const ITEMS = 'A\tFirst item\nB\tSecond item\nC\tThird item\n'
const USERS = 'u1\tA B C\nu2\tB C\n'

beforeAll(async () => {
  platform = await createTestPlatform('import-holes', { TEXT_BACKBONE_DIR: 'none', IMAGE_BACKBONE_DIR: 'none' })
  // The import reads the image policy as the embedding cache does: from this process's environment.
  imageRoot = path.join(platform.tmp, 'images')
  fs.mkdirSync(imageRoot)
  process.env.IMAGE_ROOT = imageRoot
  delete process.env.IMAGE_ALLOW_PRIVATE_HOSTS
  cache = await createTestCache(platform.env, 'import-holes-cache', { worker: false })
  const cacheUrl = await cache.app.listen({ port: 0, host: '127.0.0.1' })
  api = await createTestApi({ ...platform.env, EMBEDDING_CACHE_URL: cacheUrl }, 'import-holes-api')
  // listening, so that concurrent requests really are concurrent
  http = request(await api.app.listen({ port: 0, host: '127.0.0.1' }))
  deadCacheApi = await createTestApi({ ...platform.env, EMBEDDING_CACHE_URL: `http://127.0.0.1:${await freePort()}` }, 'import-holes-api-cache-down')
  httpCacheDown = request(await deadCacheApi.app.listen({ port: 0, host: '127.0.0.1' }))
  datasetId = (await http.post('/v1/datasets').send({ name: 'base', itemsTsv: ITEMS, usersTsv: USERS }).expect(201)).body.id
})

afterAll(async () => {
  await api?.close()
  await deadCacheApi?.close()
  await cache?.close()
  await platform?.close()
})

async function counts() {
  const prisma = platform.db.prisma
  return { datasets: await prisma.dataset.count(), items: await prisma.item.count(), users: await prisma.datasetUser.count() }
}

/** A 400 MALFORMED_FILE naming items.tsv and `line`; its reason. */
function expectMalformedItemsLine(res: request.Response, line: number): string {
  expect({ status: res.status, code: res.body?.error?.code, file: res.body?.error?.details?.file, line: res.body?.error?.details?.line }).toEqual({
    status: 400,
    code: 'MALFORMED_FILE',
    file: 'items.tsv',
    line,
  })
  return res.body.error.details.reason
}

describe('one title rule for the import and POST /v1/items', () => {
  it('a 100,000-character title in items.tsv is 400 naming its line, and nothing is written', async () => {
    const before = await counts()
    const itemsTsv = `A\tok\n\nB\t${'t'.repeat(100_000)}\nC\tok\n`
    const res = await http.post('/v1/datasets').send({ name: 'long-title', itemsTsv, usersTsv: 'u\tA C\n' })
    expect(expectMalformedItemsLine(res, 3)).toBe(`the title is 100000 characters long (at most ${MAX_TITLE_LENGTH})`)
    // the multipart upload takes the same path
    const multipart = await http.post('/v1/datasets').field('name', 'long-title').attach('items', Buffer.from(itemsTsv), 'items.tsv').attach('users', Buffer.from('u\tA C\n'), 'users.tsv')
    expectMalformedItemsLine(multipart, 3)
    // one over the cap, after HTML entities are decoded (the stored title is what counts)
    expectMalformedItemsLine(await http.post('/v1/datasets').send({ name: 'long-title', itemsTsv: `A\t${'&amp;'.repeat(MAX_TITLE_LENGTH + 1)}\n`, usersTsv: 'u\tA\n' }), 1)
    expect(await counts()).toEqual(before)
  })

  it('a title of exactly the cap imports on both paths, counted in characters (code points) on both', async () => {
    const atCap = 'x'.repeat(MAX_TITLE_LENGTH)
    const emoji = '🔬'.repeat(MAX_TITLE_LENGTH) // 4,000 UTF-16 code units
    const imported = await http.post('/v1/datasets').send({ name: 'cap', itemsTsv: `A\t${atCap}\nB\t${emoji}\nC\t${'&amp;'.repeat(MAX_TITLE_LENGTH)}\n`, usersTsv: 'u\tA B C\n' }).expect(201)
    const titles = (await platform.db.prisma.item.findMany({ where: { datasetId: imported.body.id }, orderBy: { id: 'asc' }, select: { title: true } })).map((i) => i.title)
    expect(titles).toEqual([atCap, emoji, '&'.repeat(MAX_TITLE_LENGTH)])

    const added = await http.post('/v1/items').send({ datasetId, id: 'CAP', title: atCap }).expect(201)
    expect(added.body.item).toMatchObject({ id: 'CAP', title: atCap })
    await http.post('/v1/items').send({ datasetId, id: 'CAP-EMOJI', title: emoji }).expect(201)
    const over = await http.post('/v1/items').send({ datasetId, id: 'OVER', title: `${atCap}x` }).expect(400)
    expect(over.body.error.code).toBe('VALIDATION_FAILED')
  })
})

describe('image references are checked at import', () => {
  const refused: [string, RegExp][] = [
    ['../../etc/passwd', /image path outside IMAGE_ROOT: \.\.\/\.\.\/etc\/passwd/],
    ['/etc/passwd', /image path outside IMAGE_ROOT/],
    ['file:///etc/passwd', /image path outside IMAGE_ROOT/],
    ['http://127.0.0.1/x.jpg', /private or loopback address/],
    ['http://10.0.0.1/x.jpg', /private or loopback address/],
    ['http://[::1]/x.jpg', /private or loopback address/],
    ['http://169.254.169.254/', /private or loopback address/],
    ['http://localhost:8080/x.jpg', /private or loopback address/],
    ['http://0x7f000001/x.jpg', /private or loopback address/],
    ['ftp://images.example.com/x.jpg', /unsupported image URL scheme "ftp:"/],
  ]

  it('a reference outside IMAGE_ROOT or to a private address is 400 with the line, and nothing is written', async () => {
    const before = await counts()
    for (const [ref, reason] of refused) {
      const res = await http.post('/v1/datasets').send({ name: 'bad-image', itemsTsv: `A\tok\nB\tok\t${ref}\n`, usersTsv: 'u\tA B\n' })
      expect({ ref, reason: expectMalformedItemsLine(res, 2) }).toEqual({ ref, reason: expect.stringMatching(reason) })
    }
    expect(await counts()).toEqual(before)
  })

  it('references the cache may read import: paths and file:// URLs inside IMAGE_ROOT, public http(s) URLs', async () => {
    const refs = ['photos/a.jpg', path.join(imageRoot, 'b.png'), `file://${path.join(imageRoot, 'c.png')}`, 'https://images.example.com/d.jpg', 'http://93.184.216.34/e.jpg']
    const itemsTsv = refs.map((ref, i) => `I${i}\tItem ${i}\t${ref}`).join('\n')
    const res = await http.post('/v1/datasets').send({ name: 'good-images', itemsTsv, usersTsv: `u\t${refs.map((_, i) => `I${i}`).join(' ')}\n` }).expect(201)
    const stored = await platform.db.prisma.item.findMany({ where: { datasetId: res.body.id }, orderBy: { id: 'asc' }, select: { imageRef: true } })
    expect(stored.map((i) => i.imageRef)).toEqual(refs)
  })

  it('POST /v1/items refuses the same references', async () => {
    const before = await counts()
    for (const [ref, reason] of refused) {
      const res = await http.post('/v1/items').send({ datasetId, id: 'IMG', title: 'with image', imageUrl: ref })
      expect({ ref, status: res.status, code: res.body.error?.code, message: res.body.error?.message }).toEqual({ ref, status: 400, code: 'VALIDATION_FAILED', message: expect.stringMatching(reason) })
      expect(res.body.error.details).toEqual([{ instancePath: '/imageUrl', message: expect.stringMatching(reason) }])
    }
    const multipart = await http.post('/v1/items').field('datasetId', datasetId).field('id', 'IMG').field('title', 'with image').field('imageUrl', 'http://10.0.0.1/x.jpg')
    expect(multipart.status).toBe(400)
    expect(await counts()).toEqual(before)
    await http.post('/v1/items').send({ datasetId, id: 'IMG-OK', title: 'with image', imageUrl: 'photos/ok.jpg' }).expect(201)
  })
})

describe('Idempotency-Key', () => {
  const dataset = (name: string) => ({ name, itemsTsv: ITEMS, usersTsv: USERS })
  const datasetRows = (name: string) => platform.db.prisma.dataset.count({ where: { name } })

  it('a retry gets the stored status and body, marked Idempotent-Replayed; another request with the key is 422', async () => {
    const first = await http.post('/v1/datasets').set('Idempotency-Key', 'replay-1').send(dataset('idem-replay')).expect(201)
    expect(first.headers['idempotent-replayed']).toBeUndefined()
    const retry = await http.post('/v1/datasets').set('Idempotency-Key', 'replay-1').send(dataset('idem-replay')).expect(201)
    expect(retry.headers['idempotent-replayed']).toBe('true')
    expect(retry.text).toBe(first.text)
    expect(await datasetRows('idem-replay')).toBe(1)

    // the same JSON with its keys in another order is the same request
    const { name, itemsTsv, usersTsv } = dataset('idem-replay')
    expect((await http.post('/v1/datasets').set('Idempotency-Key', 'replay-1').send({ usersTsv, itemsTsv, name }).expect(201)).body).toEqual(first.body)
    // and so is the multipart upload of the same fields and files
    const multipart = await http.post('/v1/datasets').set('Idempotency-Key', 'replay-1').field('name', name).attach('items', Buffer.from(itemsTsv), 'items.tsv').attach('users', Buffer.from(usersTsv), 'users.tsv')
    expect({ status: multipart.status, replayed: multipart.headers['idempotent-replayed'], body: multipart.body }).toEqual({ status: 201, replayed: 'true', body: first.body })

    const reused = await http.post('/v1/datasets').set('Idempotency-Key', 'replay-1').send(dataset('idem-other')).expect(422)
    expect(reused.body.error).toMatchObject({ code: 'IDEMPOTENCY_KEY_REUSED', details: { key: 'replay-1', scope: 'POST /v1/datasets' } })
    expect(await datasetRows('idem-other')).toBe(0)
  })

  it('20 concurrent identical imports with one key make exactly one dataset; every answer is its 201 or a 409 in progress', async () => {
    const answers = await Promise.all(Array.from({ length: 20 }, () => http.post('/v1/datasets').set('Idempotency-Key', 'concurrent-1').send(dataset('idem-concurrent'))))
    expect(await datasetRows('idem-concurrent')).toBe(1)
    const created = answers.filter((a) => a.status === 201)
    const inProgress = answers.filter((a) => a.status === 409)
    expect(created.length + inProgress.length).toBe(20)
    expect(created.filter((a) => a.headers['idempotent-replayed'] === undefined)).toHaveLength(1)
    expect(new Set(created.map((a) => a.text)).size).toBe(1)
    for (const a of inProgress) {
      expect(a.body.error.code).toBe('IDEMPOTENCY_KEY_IN_PROGRESS')
      expect(Number(a.headers['retry-after'])).toBeGreaterThan(0)
    }
    // once it is done, a retry gets the one dataset
    const retry = await http.post('/v1/datasets').set('Idempotency-Key', 'concurrent-1').send(dataset('idem-concurrent')).expect(201)
    expect(retry.text).toBe(created[0].text)
  })

  it('without the header nothing changes: two identical imports make two datasets', async () => {
    await http.post('/v1/datasets').send(dataset('idem-none')).expect(201)
    const second = await http.post('/v1/datasets').send(dataset('idem-none')).expect(201)
    expect(second.headers['idempotent-replayed']).toBeUndefined()
    expect(await datasetRows('idem-none')).toBe(2)
  })

  it('a key is scoped to its route: the same key on another route is another operation', async () => {
    const imported = await http.post('/v1/datasets').set('Idempotency-Key', 'shared-key').send(dataset('idem-scope')).expect(201)
    const event = await http.post('/v1/events').set('Idempotency-Key', 'shared-key').send({ datasetId: imported.body.id, userId: 'u9', itemId: 'A' }).expect(201)
    expect(event.headers['idempotent-replayed']).toBeUndefined()
    const job = await http.post('/v1/training-jobs').set('Idempotency-Key', 'shared-key').send({ datasetId: imported.body.id, method: 'sasrec-id' }).expect(202)
    expect(job.headers['idempotent-replayed']).toBeUndefined()
    const rows = await platform.db.prisma.idempotencyKey.findMany({ where: { key: 'shared-key' }, orderBy: { scope: 'asc' } })
    expect(rows.map((r) => [r.scope, r.statusCode])).toEqual([
      ['POST /v1/datasets', 201],
      ['POST /v1/events', 201],
      ['POST /v1/training-jobs', 202],
    ])
    // replays on each route are that route's own answer
    const jobAgain = await http.post('/v1/training-jobs').set('Idempotency-Key', 'shared-key').send({ datasetId: imported.body.id, method: 'sasrec-id' }).expect(202)
    expect(jobAgain.body).toEqual(job.body)
    expect(await platform.db.prisma.trainingJob.count({ where: { datasetId: imported.body.id } })).toBe(1)
    const eventAgain = await http.post('/v1/events').set('Idempotency-Key', 'shared-key').send({ datasetId: imported.body.id, userId: 'u9', itemId: 'A' }).expect(201)
    expect(eventAgain.body).toEqual(event.body)
    expect(await platform.db.prisma.interaction.count({ where: { datasetId: imported.body.id, source: 'event' } })).toBe(1)
  })

  it('a 4xx is stored and replayed; a 5xx releases the key so a retry runs again', async () => {
    const unknown = { datasetId, userId: 'u1', itemId: 'NO-SUCH-ITEM' }
    const first = await http.post('/v1/events').set('Idempotency-Key', 'four-hundred').send(unknown).expect(400)
    const again = await http.post('/v1/events').set('Idempotency-Key', 'four-hundred').send(unknown).expect(400)
    expect({ replayed: again.headers['idempotent-replayed'], body: again.body }).toEqual({ replayed: 'true', body: first.body })

    const item = { datasetId, id: 'FIVE-HUNDRED', title: 'encoded by a cache that is down' }
    const failed = await httpCacheDown.post('/v1/items').set('Idempotency-Key', 'five-hundred').send(item).expect(503)
    expect(failed.body.error.code).toBe('DEPENDENCY_UNAVAILABLE')
    expect(await platform.db.prisma.idempotencyKey.count({ where: { key: 'five-hundred' } })).toBe(0)
    // the retry runs (on a replica whose cache is up) and its answer is the one stored
    const retried = await http.post('/v1/items').set('Idempotency-Key', 'five-hundred').send(item).expect(201)
    expect(retried.headers['idempotent-replayed']).toBeUndefined()
    expect((await httpCacheDown.post('/v1/items').set('Idempotency-Key', 'five-hundred').send(item).expect(201)).body).toEqual(retried.body)
  })

  it('a key left in progress by a process that died is taken over once its lease lapses', async () => {
    await platform.db.prisma.$executeRaw`
      INSERT INTO idempotency_keys (scope, key, request_hash, created_at) VALUES ('POST /v1/datasets', 'orphan', 'whatever', now() - interval '10 minutes')`
    const res = await http.post('/v1/datasets').set('Idempotency-Key', 'orphan').send(dataset('idem-orphan')).expect(201)
    expect(res.headers['idempotent-replayed']).toBeUndefined()
    // a live one is not
    await platform.db.prisma.$executeRaw`
      INSERT INTO idempotency_keys (scope, key, request_hash) VALUES ('POST /v1/datasets', 'running', 'whatever')`
    expect((await http.post('/v1/datasets').set('Idempotency-Key', 'running').send(dataset('idem-orphan')).expect(422)).body.error.code).toBe('IDEMPOTENCY_KEY_REUSED')
  })

  it('an expired key (older than 24 h) is a new key', async () => {
    await http.post('/v1/datasets').set('Idempotency-Key', 'old').send(dataset('idem-old')).expect(201)
    await platform.db.prisma.$executeRaw`UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'old'`
    const again = await http.post('/v1/datasets').set('Idempotency-Key', 'old').send(dataset('idem-old')).expect(201)
    expect(again.headers['idempotent-replayed']).toBeUndefined()
    expect(await datasetRows('idem-old')).toBe(2)
  })

  it('a key longer than 255 characters is 400; the header is in the OpenAPI document of every creating POST', async () => {
    const res = await http.post('/v1/datasets').set('Idempotency-Key', 'k'.repeat(256)).send(dataset('idem-long')).expect(400)
    expect(res.body.error.code).toBe('VALIDATION_FAILED')
    await http.post('/v1/datasets').set('Idempotency-Key', 'k'.repeat(255)).send(dataset('idem-long')).expect(201)
    expect(await datasetRows('idem-long')).toBe(1)

    const doc = (await http.get('/docs/json').expect(200)).body
    for (const route of ['/v1/datasets', '/v1/items', '/v1/events', '/v1/training-jobs']) {
      const post = doc.paths[route].post
      const header = post.parameters?.find((p: { in: string; name: string }) => p.in === 'header' && p.name === 'idempotency-key')
      expect({ route, header: header && { required: header.required, maxLength: header.schema.maxLength } }).toEqual({ route, header: { required: false, maxLength: 255 } })
      expect(Object.keys(post.responses)).toEqual(expect.arrayContaining(['409', '422']))
    }
  })
})

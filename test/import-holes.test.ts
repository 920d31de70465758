// Smaller holes in what the API accepts, over real PostgreSQL and Redis: one title rule for the
// import and POST /v1/items, image references refused at import (with the line) as the embedding
// cache would refuse them later.
import fs from 'node:fs'
import path from 'node:path'
import request from 'supertest'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { MAX_TITLE_LENGTH } from '@iisan/storage'
import { createTestApi, createTestCache, createTestPlatform, type TestPlatform } from './helpers/platform.ts'

let platform: TestPlatform
let api: Awaited<ReturnType<typeof createTestApi>>
let cache: Awaited<ReturnType<typeof createTestCache>>
let http: ReturnType<typeof request>
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
  http = request(await api.app.listen({ port: 0, host: '127.0.0.1' }))
  datasetId = (await http.post('/v1/datasets').send({ name: 'base', itemsTsv: ITEMS, usersTsv: USERS }).expect(201)).body.id
})

afterAll(async () => {
  await api?.close()
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

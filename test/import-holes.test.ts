// Smaller holes in what the API accepts, over real PostgreSQL and Redis: one title rule for the
// import and POST /v1/items.
import request from 'supertest'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { MAX_TITLE_LENGTH } from '@iisan/storage'
import { createTestApi, createTestCache, createTestPlatform, type TestPlatform } from './helpers/platform.ts'

let platform: TestPlatform
let api: Awaited<ReturnType<typeof createTestApi>>
let cache: Awaited<ReturnType<typeof createTestCache>>
let http: ReturnType<typeof request>
let datasetId: string

const ITEMS = 'A\tFirst item\nB\tSecond item\nC\tThird item\n'
const USERS = 'u1\tA B C\nu2\tB C\n'

beforeAll(async () => {
  platform = await createTestPlatform('import-holes', { TEXT_BACKBONE_DIR: 'none', IMAGE_BACKBONE_DIR: 'none' })
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

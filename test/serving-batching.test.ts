// The API's batched hot path never mixes requests (issue 11): 200 concurrent requests with
// distinct histories each get the answer they get alone, history exclusion and k hold, and the
// replica's metrics show that the burst was in fact batched. Real PostgreSQL, Redis and HTTP.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { mulberry32 } from '@iisan/model'
import { sampleDataset } from '@iisan/pipeline'
import { concurrentRequests } from './helpers/concurrent-client.ts'
import { startQuickApi, untrainedModelVersion, type QuickApi } from './helpers/quick-api.ts'

const slice = sampleDataset(60)
const D = 8
let quick: QuickApi
let datasetId: string
let modelId: string
let itemIds: string[]

type Answer = { status: number; body: any }
async function call(method: 'GET' | 'POST', path: string, body?: object): Promise<Answer> {
  const res = await fetch(`${quick.base}${path}`, { method, headers: body ? { 'content-type': 'application/json' } : {}, body: body ? JSON.stringify(body) : undefined })
  return { status: res.status, body: await res.json() }
}

async function metric(name: string): Promise<number> {
  const text = await (await fetch(`${quick.base}/metrics`)).text()
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `))
  expect(line, `${name} in /metrics`).toBeDefined()
  return Number(line!.split(' ').at(-1))
}

beforeAll(async () => {
  quick = await startQuickApi('batching')
  const created = await call('POST', '/v1/datasets', { name: 'scientific-60', itemsTsv: slice.itemsTsv, usersTsv: slice.usersTsv })
  expect(created.status).toBe(201)
  datasetId = created.body.id
  const prisma = quick.platform.db.prisma
  const items = await prisma.item.findMany({ where: { datasetId }, orderBy: { id: 'asc' }, select: { externalId: true } })
  itemIds = items.map((i) => i.externalId)
  // distinct, seeded embeddings: every history gets its own answer
  const random = mulberry32(3)
  const version = await untrainedModelVersion(prisma, datasetId, { itemEmbeddings: Float32Array.from({ length: items.length * D }, () => random() * 2 - 1) })
  modelId = version.id
}, 120_000)

afterAll(async () => {
  await quick?.close()
})

describe('batched recommendations over HTTP', () => {
  it('200 concurrent requests with distinct histories each get their own answer, as when sent alone', async () => {
    const random = mulberry32(11)
    const bodies = Array.from({ length: 200 }, (_, i) => ({
      modelId,
      history: Array.from({ length: 1 + (i % 12) }, () => itemIds[Math.floor(random() * itemIds.length)]),
      k: 1 + (i % 25),
    }))
    const alone: Answer[] = []
    for (const body of bodies) alone.push(await call('POST', '/v1/recommendations', body))
    const batchesBefore = await metric('iisan_serving_batches')
    const requestsBefore = await metric('iisan_serving_batched_requests')

    const together = await concurrentRequests(quick.base, bodies.map((body) => ({ method: 'POST', path: '/v1/recommendations', body })))

    together.forEach((answer, i) => {
      expect(answer.status).toBe(200)
      expect(answer.body.items).toEqual(alone[i].body.items)
      const returned = answer.body.items.map((item: { itemId: string }) => item.itemId)
      expect(returned).toHaveLength(bodies[i].k)
      for (const id of returned) expect(bodies[i].history).not.toContain(id)
    })
    // the premise: the concurrent burst was answered in fewer batches than requests
    const batches = (await metric('iisan_serving_batches')) - batchesBefore
    const requests = (await metric('iisan_serving_batched_requests')) - requestsBefore
    expect(requests).toBe(200)
    expect(batches).toBeLessThan(200)
  })

  it('similar items under concurrency: each item gets its own neighbours, never itself', async () => {
    const asked = itemIds.slice(0, 100)
    const alone: Answer[] = []
    for (const id of asked) alone.push(await call('GET', `/v1/items/${encodeURIComponent(id)}/similar?modelId=${modelId}&k=7`))
    const together = await concurrentRequests(quick.base, asked.map((id) => ({ method: 'GET', path: `/v1/items/${encodeURIComponent(id)}/similar?modelId=${modelId}&k=7` })))
    together.forEach((answer, i) => {
      expect(answer.status).toBe(200)
      expect(answer.body.items).toEqual(alone[i].body.items)
      expect(answer.body.items).toHaveLength(7)
      expect(answer.body.items.map((item: { itemId: string }) => item.itemId)).not.toContain(asked[i])
    })
  })
})

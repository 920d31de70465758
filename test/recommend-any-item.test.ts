// Recommendations accept any catalogue item (issue 9): items a model has no embedding for are
// skipped and named, only ids the dataset does not know are an error — for an ID-SASRec and an
// IISAN version alike, explicit histories and stored ones, events and item-to-item. On the real
// services: API and embedding cache (demo backbones) in-process, the worker as its own process.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type request from 'supertest'
import { initBackend } from '@iisan/model'
import { sampleDataset, ServingRegistry } from '@iisan/pipeline'
import { addItems } from '@iisan/storage'
import { countDropped, distinct } from './helpers/dropped-items.ts'
import { startServices, trainAndWait, type ServicesUnderTest, type TestPlatform } from './helpers/platform.ts'

// 100 users: 627 items, of which the protocol drops 16 (they occur only early in long histories)
const slice = sampleDataset(100)
const raw = countDropped(slice.itemsTsv, slice.usersTsv)
const dropped = raw.dropped
const kept = raw.catalogue.filter((id) => !dropped.has(id))
// a user whose stored history holds dropped items and kept ones
const mixedUser = raw.users.find((u) => u.items.some((i) => dropped.has(i)) && u.items.some((i) => !dropped.has(i)))!
const QUICK = { maxEpochs: 1, patience: 1, batchSize: 32, lrItem: 1e-3, lrUser: 1e-3 }
// unique, so no cached text states exist for it: no model can embed it
const NO_STATES = { externalId: 'NO-STATES-1', title: 'Item added straight to the catalogue, never encoded (4f1c9e)' }

type Json = any
let platform: TestPlatform
let services: ServicesUnderTest
let http: ReturnType<typeof request>
let datasetId: string
let idModel: string
let iisanModel: string

const recommend = (body: object) => http.post('/v1/recommendations').send({ datasetId, ...body })
const itemIds = (res: { body: Json }) => res.body.items.map((i: { itemId: string }) => i.itemId)
const interactionsOf = (userId: string, itemId: string) => platform.db.prisma.interaction.count({ where: { datasetId, user: { externalId: userId }, item: { externalId: itemId } } })

beforeAll(async () => {
  expect(dropped.size).toBeGreaterThan(2)
  expect(mixedUser).toBeDefined()
  await initBackend({ prefer: 'wasm' })
  services = await startServices('anyitem')
  ;({ platform, http } = services)
  datasetId = (await http.post('/v1/datasets').send({ name: 'scientific-100', itemsTsv: slice.itemsTsv, usersTsv: slice.usersTsv }).expect(201)).body.id
  // the first version is activated by itself: ID-SASRec serves events and datasetId-only requests
  idModel = (await trainAndWait(http, { datasetId, method: 'sasrec-id', config: QUICK })).job.modelVersionId
  iisanModel = (await trainAndWait(http, { datasetId, method: 'iisan', config: QUICK })).job.modelVersionId
  // the premise: ID-SASRec has rows for exactly the items the protocol kept, IISAN for every item with cached states
  expect((await http.get(`/v1/model-versions/${idModel}`).expect(200)).body.numItems).toBe(kept.length)
  expect((await http.get(`/v1/model-versions/${iisanModel}`).expect(200)).body.numItems).toBe(raw.catalogue.length)
  // in the catalogue, but without states: added past the embedding cache
  await addItems(platform.db.prisma, datasetId, [NO_STATES])
}, 240_000)

afterAll(async () => {
  await services?.close()
})

describe('ID-SASRec: catalogue items the protocol dropped', () => {
  const history = mixedUser.items
  const usable = history.filter((i) => !dropped.has(i))

  it('in an explicit history are skipped and named; the answer is the one for the history without them', async () => {
    const res = await recommend({ modelId: idModel, history, k: 10 }).expect(200)
    expect(res.body.skippedItemIds).toEqual(distinct(history.filter((i) => dropped.has(i))))
    expect(res.body.skippedItemIds.length).toBeGreaterThan(0)
    expect(res.body.history).toBeUndefined()
    const without = await recommend({ modelId: idModel, history: usable, k: 10 }).expect(200)
    expect(without.body.skippedItemIds).toEqual([])
    expect(res.body.items).toEqual(without.body.items)
  })

  it('an id the dataset does not know is 400 UNKNOWN_ITEMS naming only that id', async () => {
    const res = await recommend({ modelId: idModel, history: [usable[0], [...dropped][0], 'NO-SUCH-ITEM', 'NO-SUCH-ITEM'], k: 5 }).expect(400)
    expect(res.body.error).toMatchObject({ code: 'UNKNOWN_ITEMS', details: { unknownItemIds: ['NO-SUCH-ITEM'] } })
    expect(res.body.error.message).toContain('NO-SUCH-ITEM')
  })

  it('in a stored history are skipped the same way, and the response shows that history with them marked', async () => {
    const res = await recommend({ modelId: idModel, userId: mixedUser.id, k: 10 }).expect(200)
    expect(res.body.skippedItemIds).toEqual(distinct(history.filter((i) => dropped.has(i))))
    expect(res.body.history.map((h: Json) => [h.itemId, h.skipped])).toEqual(history.map((i) => [i, dropped.has(i)]))
    for (const h of res.body.history) expect(h.title.length).toBeGreaterThan(0)
    const explicit = await recommend({ modelId: idModel, history: usable, k: 10 }).expect(200)
    expect(res.body.items).toEqual(explicit.body.items)
  })

  it('the items it lacks are described when it loads, so a stored history holding them needs no query', async () => {
    const registry = new ServingRegistry(platform.db.prisma)
    try {
      const model = (await registry.get(idModel))!
      const titles = new Map((await platform.db.prisma.item.findMany({ where: { datasetId } })).map((i) => [i.externalId, i.title]))
      expect(new Set([...model.outsideItems.values()].map((i) => i.externalId))).toEqual(new Set([...dropped, NO_STATES.externalId]))
      expect(model.outsideExternalIds).toEqual(new Set([...dropped, NO_STATES.externalId]))
      for (const item of model.outsideItems.values()) expect(item.title).toBe(titles.get(item.externalId))
      for (const [id, item] of model.outsideItems) expect(model.indexOfItemId.has(id) || model.indexOfExternal.has(item.externalId)).toBe(false)
    } finally {
      await registry.close()
    }
  })

  it('an item added after the load is still described, from the catalogue, and told from an unknown id', async () => {
    // the API has this version loaded before the item exists
    await recommend({ modelId: idModel, history: usable, k: 1 }).expect(200)
    const late = { externalId: 'LATE-1', title: 'Added after the version loaded (9d2e71)' }
    await addItems(platform.db.prisma, datasetId, [late])
    for (const itemId of [usable[0], late.externalId]) await http.post('/v1/events').send({ datasetId, userId: 'late-user', itemId }).expect(201)
    const res = await recommend({ modelId: idModel, userId: 'late-user', k: 5 }).expect(200)
    expect(res.body.skippedItemIds).toEqual([late.externalId])
    expect(res.body.history).toEqual([
      { itemId: usable[0], title: expect.any(String), skipped: false },
      { itemId: late.externalId, title: late.title, skipped: true },
    ])
    // given as a history: skipped as a catalogue item, beside a dropped one the load described
    const given = await recommend({ modelId: idModel, history: [usable[0], late.externalId, [...dropped][0]], k: 5 }).expect(200)
    expect(given.body.skippedItemIds).toEqual([late.externalId, [...dropped][0]])
    const unknown = await recommend({ modelId: idModel, history: [usable[0], late.externalId, 'NOWHERE-3b9f'], k: 5 }).expect(400)
    expect(unknown.body.error).toMatchObject({ code: 'UNKNOWN_ITEMS', details: { unknownItemIds: ['NOWHERE-3b9f'] } })
  })

  it('a history of dropped items only: 400 NO_KNOWN_HISTORY when given, 409 when stored', async () => {
    const only = [...dropped].slice(0, 2)
    const given = await recommend({ modelId: idModel, history: only, k: 5 }).expect(400)
    expect(given.body.error).toMatchObject({ code: 'NO_KNOWN_HISTORY', details: { modelId: idModel, skippedItemIds: only } })
    for (const itemId of only) await http.post('/v1/events').send({ datasetId, userId: 'dropped-only', itemId }).expect(201)
    const stored = await recommend({ modelId: idModel, userId: 'dropped-only', k: 5 }).expect(409)
    expect(stored.body.error).toMatchObject({ code: 'NO_KNOWN_HISTORY', details: { userId: 'dropped-only', modelId: idModel, skippedItemIds: only } })
  })

  it('an event on a dropped item is stored, and the response says the active model skips it', async () => {
    const item = [...dropped][2]
    expect(await interactionsOf('event-user', item)).toBe(0)
    const res = await http.post('/v1/events').send({ datasetId, userId: 'event-user', itemId: item }).expect(201)
    expect(res.body).toMatchObject({ position: 0, userCreated: true, activeModel: { modelId: idModel, skipsItem: true } })
    expect(await interactionsOf('event-user', item)).toBe(1)
    const usableEvent = await http.post('/v1/events').send({ datasetId, userId: 'event-user', itemId: usable[0] }).expect(201)
    expect(usableEvent.body).toMatchObject({ position: 1, activeModel: { modelId: idModel, skipsItem: false } })
    // the active model answers: the dropped item is skipped, the other one used
    const recs = await recommend({ userId: 'event-user', k: 5 }).expect(200)
    expect(recs.body).toMatchObject({ modelId: idModel, skippedItemIds: [item] })
    expect(recs.body.items).toEqual((await recommend({ modelId: idModel, history: [usable[0]], k: 5 }).expect(200)).body.items)
  })

  it('item-to-item for a dropped item is 404 ITEM_NOT_IN_MODEL saying the catalogue has it', async () => {
    const item = [...dropped][0]
    const res = await http.get(`/v1/items/${item}/similar?modelId=${idModel}&k=5`).expect(404)
    expect(res.body.error).toMatchObject({ code: 'ITEM_NOT_IN_MODEL', details: { itemId: item, modelId: idModel, inDataset: true } })
    const unknown = await http.get(`/v1/items/NO-SUCH-ITEM/similar?modelId=${idModel}&k=5`).expect(404)
    expect(unknown.body.error).toMatchObject({ code: 'ITEM_NOT_IN_MODEL', details: { inDataset: false } })
  })
})

describe('IISAN: the same rule, asked of the model', () => {
  it('embeds the items the protocol dropped: none is skipped, and all of them are excluded as history', async () => {
    const history = mixedUser.items
    const res = await recommend({ modelId: iisanModel, history, k: 1000 }).expect(200)
    expect(res.body.skippedItemIds).toEqual([])
    // every catalogue item with states is ranked but the history's (NO-STATES has none)
    expect(itemIds(res).sort()).toEqual(raw.catalogue.filter((i) => !history.includes(i)).sort())
    const byUser = await recommend({ modelId: iisanModel, userId: mixedUser.id, k: 10 }).expect(200)
    expect(byUser.body.skippedItemIds).toEqual([])
    expect(byUser.body.history.every((h: Json) => !h.skipped)).toBe(true)
    const similar = await http.get(`/v1/items/${[...dropped][0]}/similar?modelId=${iisanModel}&k=5`).expect(200)
    expect(similar.body.items).toHaveLength(5)
  })

  it('skips a catalogue item it has no states for, explicit or stored; unknown ids stay 400', async () => {
    const usable = mixedUser.items.slice(-4)
    const res = await recommend({ modelId: iisanModel, history: [usable[0], NO_STATES.externalId, ...usable.slice(1)], k: 10 }).expect(200)
    expect(res.body.skippedItemIds).toEqual([NO_STATES.externalId])
    expect(res.body.items).toEqual((await recommend({ modelId: iisanModel, history: usable, k: 10 }).expect(200)).body.items)

    for (const itemId of [usable[0], NO_STATES.externalId]) await http.post('/v1/events').send({ datasetId, userId: 'no-states-user', itemId }).expect(201)
    expect(await interactionsOf('no-states-user', NO_STATES.externalId)).toBe(1)
    const stored = await recommend({ modelId: iisanModel, userId: 'no-states-user', k: 10 }).expect(200)
    expect(stored.body.skippedItemIds).toEqual([NO_STATES.externalId])
    expect(stored.body.history).toEqual([
      { itemId: usable[0], title: expect.any(String), skipped: false },
      { itemId: NO_STATES.externalId, title: NO_STATES.title, skipped: true },
    ])
    expect(stored.body.items).toEqual((await recommend({ modelId: iisanModel, history: [usable[0]], k: 10 }).expect(200)).body.items)

    const unknown = await recommend({ modelId: iisanModel, history: [NO_STATES.externalId, 'NO-SUCH-ITEM'], k: 5 }).expect(400)
    expect(unknown.body.error).toMatchObject({ code: 'UNKNOWN_ITEMS', details: { unknownItemIds: ['NO-SUCH-ITEM'] } })
    expect((await recommend({ modelId: iisanModel, history: [NO_STATES.externalId], k: 5 }).expect(400)).body.error.code).toBe('NO_KNOWN_HISTORY')
    const similar = await http.get(`/v1/items/${NO_STATES.externalId}/similar?modelId=${iisanModel}`).expect(404)
    expect(similar.body.error).toMatchObject({ code: 'ITEM_NOT_IN_MODEL', details: { inDataset: true } })
  })

  it('events say which items the active IISAN version skips', async () => {
    await http.post(`/v1/model-versions/${iisanModel}/activate`).expect(200)
    const droppedEvent = await http.post('/v1/events').send({ datasetId, userId: 'iisan-events', itemId: [...dropped][0] }).expect(201)
    expect(droppedEvent.body.activeModel).toEqual({ modelId: iisanModel, skipsItem: false })
    const noStates = await http.post('/v1/events').send({ datasetId, userId: 'iisan-events', itemId: NO_STATES.externalId }).expect(201)
    expect(noStates.body.activeModel).toEqual({ modelId: iisanModel, skipsItem: true })
    expect(await interactionsOf('iisan-events', NO_STATES.externalId)).toBe(1)
  })
})

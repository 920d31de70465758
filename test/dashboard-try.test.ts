// The dashboard's Try it page in headless Chromium against the real platform (API listening on a
// random port in-process, the worker as its own process): a known user's stored history is shown
// beside the recommendations, with the items the model skipped marked, and so is a typed one.
import type { ChildProcess } from 'node:child_process'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import request from 'supertest'
import { initBackend } from '@iisan/model'
import { sampleDataset } from '@iisan/pipeline'
import { launchBrowser, type BrowserSession, type PageProblem } from './helpers/browser.ts'
import { countDropped } from './helpers/dropped-items.ts'
import { WORKER_ENTRY, createTestApi, createTestPlatform, startService, stopService, trainAndWait, type TestPlatform } from './helpers/platform.ts'

const slice = sampleDataset(100)
const raw = countDropped(slice.itemsTsv, slice.usersTsv)
// a user whose stored history holds items the protocol dropped (so ID-SASRec has no row for them)
const mixedUser = raw.users.find((u) => u.items.some((i) => raw.dropped.has(i)) && u.items.some((i) => !raw.dropped.has(i)))!

let platform: TestPlatform
let server: Awaited<ReturnType<typeof createTestApi>>
let worker: ChildProcess
let base: string
let http: ReturnType<typeof request>
let browser: BrowserSession
let datasetId: string
let modelId: string

function expectNoProblems(allowed: (p: PageProblem) => boolean = () => false) {
  expect(browser.takeProblems().filter((p) => !allowed(p))).toEqual([])
}

const ids = (selector: string) => browser.page.locator(selector).evaluateAll((els) => els.map((el) => (el as HTMLElement).dataset.itemId))

/** Clicks Recommend and returns the API's answer the page received. */
async function recommendFromPage() {
  const [response] = await Promise.all([browser.page.waitForResponse((r) => r.url().endsWith('/v1/recommendations')), browser.page.locator('#recommend').click()])
  return { status: response.status(), body: await response.json() }
}

beforeAll(async () => {
  browser = await launchBrowser()
  await initBackend({ prefer: 'wasm' })
  platform = await createTestPlatform('dashtry')
  server = await createTestApi(platform.env, 'dashtry-api')
  base = await server.app.listen({ port: 0, host: '127.0.0.1' })
  http = request(base)
  worker = startService(WORKER_ENTRY, platform.env)
  datasetId = (await http.post('/v1/datasets').send({ name: 'scientific-100', itemsTsv: slice.itemsTsv, usersTsv: slice.usersTsv }).expect(201)).body.id
  modelId = (await trainAndWait(http, { datasetId, method: 'sasrec-id', config: { maxEpochs: 1, patience: 1, batchSize: 32 } })).job.modelVersionId
}, 180_000)

afterAll(async () => {
  await browser?.close()
  await stopService(worker)
  await server?.close()
  await platform?.close()
})

afterEach(() => {
  browser?.takeProblems()
})

describe('Try it', () => {
  it('shows a known user’s stored history beside the recommendations, the skipped items marked', async () => {
    const { page } = browser
    await page.goto(`${base}/admin/#/try?dataset=${datasetId}`)
    await page.locator('.segmented input[value="user"]').check({ force: true })
    await page.locator('#user-id').fill(mixedUser.id)
    const answered = await recommendFromPage()
    expect(answered.status).toBe(200)
    expect(answered.body.modelId).toBe(modelId)

    await expect.poll(() => page.locator('#user-history li').count()).toBe(mixedUser.items.length)
    expect(await ids('#user-history li')).toEqual(mixedUser.items)
    const marks = await page.locator('#user-history li').evaluateAll((lis) => lis.map((li) => [(li as HTMLElement).dataset.skipped, li.querySelector('.skipped-badge') !== null]))
    expect(marks).toEqual(mixedUser.items.map((i) => (raw.dropped.has(i) ? ['true', true] : ['false', false])))
    for (const title of await page.locator('#user-history li .item-title').allTextContents()) expect(title.length).toBeGreaterThan(0)
    const skippedCount = mixedUser.items.filter((i) => raw.dropped.has(i)).length
    expect(await page.locator('#user-history-summary').textContent()).toContain(`${skippedCount} skipped`)

    // the recommendations are the API's, for the same user
    const direct = await http.post('/v1/recommendations').send({ datasetId, userId: mixedUser.id, k: 10 }).expect(200)
    await expect.poll(() => ids('.recommendations li')).toEqual(direct.body.items.map((i: { itemId: string }) => i.itemId))
    // beside them: the history in the left column, the recommendations in the right one
    const left = (await page.locator('#user-history').boundingBox())!
    const right = (await page.locator('#results').boundingBox())!
    expect(left.x + left.width).toBeLessThanOrEqual(right.x)
    await browser.screenshot('try-it-user-history')
    expectNoProblems()
  })

  it('marks the skipped items of a typed history, also when nothing else is left', async () => {
    const { page } = browser
    const droppedItem = mixedUser.items.find((i) => raw.dropped.has(i))!
    const keptItem = mixedUser.items.find((i) => !raw.dropped.has(i))!
    await page.goto(`${base}/admin/#/try?dataset=${datasetId}`)
    await page.reload()
    await page.locator('.segmented input[value="history"]').check({ force: true })
    const add = async (itemId: string) => {
      await page.locator('#item-search').fill(itemId)
      const hit = page.locator(`#search-results button[data-item-id="${itemId}"]`)
      await hit.waitFor({ timeout: 10_000 })
      await hit.click()
    }
    await add(keptItem)
    await add(droppedItem)
    const answered = await recommendFromPage()
    expect(answered.status).toBe(200)
    expect(answered.body.skippedItemIds).toEqual([droppedItem])
    await expect.poll(() => ids('#history li[data-skipped="true"]')).toEqual([droppedItem])
    expect(await ids('#history li[data-skipped="false"]')).toEqual([keptItem])
    expect(await page.locator('#results').textContent()).toContain('1 history item skipped')
    await browser.screenshot('try-it-typed-skipped')
    expectNoProblems()

    // only the dropped item: the API's NO_KNOWN_HISTORY, shown inline, the item still marked
    await page.locator(`#history li[data-item-id="${keptItem}"] button.icon`).click()
    const refused = await recommendFromPage()
    expect(refused.status).toBe(400)
    await expect.poll(() => page.locator('#try-error .error').textContent()).toMatch(/NO_KNOWN_HISTORY/)
    await expect.poll(() => ids('#history li[data-skipped="true"]')).toEqual([droppedItem])
    expectNoProblems((p) => p.kind === 'console' && /status of 400/.test(p.text) && p.url.endsWith('/v1/recommendations'))
  })
})

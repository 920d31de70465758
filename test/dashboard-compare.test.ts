// The dashboard in headless Chromium against the API (in-process, listening): the new-job form
// built from GET /v1/methods, and the Models page's comparison of stored versions with TPME.
// Versions are stored with known figures instead of trained, and no worker runs.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { chartData, chartSeries, launchBrowser, type BrowserSession } from './helpers/browser.ts'
import { measuredModelVersion } from './helpers/model-versions.ts'
import { createTestApi, createTestPlatform, freePort, type TestPlatform } from './helpers/platform.ts'

let platform: TestPlatform
let server: Awaited<ReturnType<typeof createTestApi>>
let browser: BrowserSession
let base: string
let datasetId: string

async function api(path: string, body?: unknown): Promise<any> {
  const res = await fetch(base + path, body === undefined ? {} : { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
  if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`)
  return res.json()
}

beforeAll(async () => {
  browser = await launchBrowser()
  platform = await createTestPlatform('dashboard-compare', { TEXT_BACKBONE_DIR: 'none', IMAGE_BACKBONE_DIR: 'none' })
  server = await createTestApi({ ...platform.env, EMBEDDING_CACHE_URL: `http://127.0.0.1:${await freePort()}` }, 'dashboard-compare-test')
  base = await server.app.listen({ port: 0, host: '127.0.0.1' })
  datasetId = (await api('/v1/datasets', { name: 'compare', itemsTsv: 'A\tFirst\nB\tSecond\nC\tThird\n', usersTsv: 'u1\tA B C\nu2\tB C\n' })).id
})

afterAll(async () => {
  await browser?.close()
  await server?.close()
  await platform?.close()
})

afterEach(() => {
  browser?.takeProblems()
})

describe('new-job form', () => {
  it('offers every method the API lists, with its summary, cold start and defaults; they follow the chosen method', async () => {
    const { page } = browser
    const { methods } = await api('/v1/methods')
    await page.goto(`${base}/admin/#/jobs`)
    const select = page.locator('#job-method')
    await expect.poll(() => select.locator('option').count()).toBe(methods.length)
    expect(await select.locator('option').evaluateAll((os) => os.map((o) => (o as HTMLOptionElement).value))).toEqual(methods.map((m: any) => m.name))

    const about = page.locator('#job-method-about')
    await page.locator('#start-job details.advanced summary').click()
    await select.selectOption('fft')
    await expect.poll(() => about.locator('.method-summary').textContent()).toBe(methods.find((m: any) => m.name === 'fft').summary)
    expect(await about.locator('[data-cold-start]').getAttribute('data-cold-start')).toBe('false')
    expect(await page.locator('#job-batch-size').getAttribute('placeholder')).toBe('default 32')
    const rateFields = () => page.locator('#job-method-fields input[data-config]').evaluateAll((is) => Object.fromEntries(is.map((i) => [(i as HTMLInputElement).dataset.config, (i as HTMLInputElement).dataset.default])))
    expect(await rateFields()).toEqual({ lrTextEncoder: '0.00005', lrImageEncoder: '0.0001', lrUser: '0.0001' })
    const sections = () => page.locator('#job-method-fields').evaluate((el) => Array.from(el.children, (n) => (n.matches('h3') ? n.textContent : n.nodeName)))
    expect(await sections()).toEqual(['Learning rates', 'DIV'])
    await browser.screenshot('jobs-form-fft')

    await select.selectOption('iisan')
    await expect.poll(() => about.locator('[data-cold-start]').getAttribute('data-cold-start')).toBe('true')
    expect(await page.locator('#job-batch-size').getAttribute('placeholder')).toBe('default 64')
    expect(await rateFields()).toEqual({ lrTextEncoder: '0.00005', lrImageEncoder: '0.0001', lrTextAdapters: '0.0001', lrImageAdapters: '0.0001', lrUser: '0.0002', reduction: '64', trainThreads: '0' })

    await select.selectOption('lora')
    await expect.poll(() => rateFields()).toEqual({ lrTextAdapters: '0.0004', lrImageAdapters: '0.0004', lrUser: '0.0002', loraRank: '8', loraAlpha: '1' })
    expect(await page.locator('#job-batch-size').getAttribute('placeholder')).toBe('default 32')
    expect(await sections()).toEqual(['Learning rates', 'DIV', 'lora settings', 'DIV'])
    expect(browser.takeProblems()).toEqual([])
  })

  it('submits the chosen method with only what was filled in; the job shows its method’s rates', async () => {
    const { page } = browser
    // another hash than the last test's: the page is drawn anew (the Advanced section closed)
    await page.goto(`${base}/admin/#/jobs?dataset=${datasetId}`)
    await expect.poll(() => page.locator('#job-dataset').inputValue()).toBe(datasetId)
    await page.locator('#job-method').selectOption('adapter')
    await page.locator('#job-max-epochs').fill('2')
    await page.locator('#start-job details.advanced summary').click()
    await page.locator('#job-method-fields input[data-config="adapterBottleneck"]').fill('16')
    await page.locator('#start-job button[type=submit]').click()
    await expect.poll(() => page.evaluate(() => location.hash)).toMatch(/^#\/jobs\/[0-9a-f-]{36}$/)
    const jobId = (await page.evaluate(() => location.hash)).split('/')[2]
    const job = await api(`/v1/training-jobs/${jobId}`)
    // the rest are the adapter's defaults, filled in by the API
    expect(job).toMatchObject({ method: 'adapter', config: { maxEpochs: 2, adapterBottleneck: 16, batchSize: 32, lrTextAdapters: 4e-4 } })
    const facts = page.locator('.job-detail .facts')
    await expect.poll(() => facts.textContent()).toContain('textAdapters 0.0004 · imageAdapters 0.0004 · recsys 0.0002')
    expect(browser.takeProblems()).toEqual([])
  })
})

describe('Models: compare', () => {
  it('shows the ticked versions side by side with their TPME across the selection', async () => {
    const { page } = browser
    const prisma = platform.db.prisma
    // TPME = 0.45·t + 0.1·p + 0.45·m, min–max normalised across the compared versions:
    // t 12..36 s → fast 0, slow 1, mid 0.5 · p 2M..200k → fast 1, slow 0, mid 0.5 · m 500..2500 MB → fast 0, slow 0.4, mid 1
    const fast = await measuredModelVersion(prisma, datasetId, { method: 'iisan', secondsPerEpoch: 12, trainableParams: 2_000_000, peakMemoryMb: 500, testHr10: 0.125, testNdcg10: 0.0625, epochs: 3 })
    const slow = await measuredModelVersion(prisma, datasetId, { method: 'fft', secondsPerEpoch: 36, trainableParams: 200_000, peakMemoryMb: 1300, testHr10: 0.1, testNdcg10: 0.05, epochs: 4 })
    const mid = await measuredModelVersion(prisma, datasetId, { method: 'lora', secondsPerEpoch: 24, trainableParams: 1_100_000, peakMemoryMb: 2500, testHr10: 0.11, testNdcg10: 0.055, epochs: 5 })
    const other = await measuredModelVersion(prisma, datasetId, { method: 'bitfit', secondsPerEpoch: 99, trainableParams: 1, peakMemoryMb: 1 })
    const expectedTpme = new Map([
      [fast.id, 0.1], // 0.45·0 + 0.1·1 + 0.45·0
      [slow.id, 0.63], // 0.45·1 + 0.1·0 + 0.45·0.4
      [mid.id, 0.725], // 0.45·0.5 + 0.1·0.5 + 0.45·1
    ])

    await page.goto(`${base}/admin/#/models`)
    for (const v of [fast, slow, mid, other]) await expect.poll(() => page.locator(`.versions-table tr[data-version-id="${v.id}"]`).count()).toBe(1)
    expect(await page.locator('#compare-button').isDisabled()).toBe(true)
    for (const v of [fast, slow, mid]) await page.locator(`.versions-table tr[data-version-id="${v.id}"] input[type=checkbox]`).check()
    await page.locator('#compare-button').click()
    await expect.poll(() => page.locator('.compare-table').count()).toBe(1)

    const cell = (field: string, id: string) => page.locator(`.compare-table tr[data-field="${field}"] td[data-version-id="${id}"]`).textContent()
    const shown = await page.locator('.compare-table thead th[data-version-id]').evaluateAll((ths) => ths.map((th) => (th as HTMLElement).dataset.versionId))
    expect(new Set(shown)).toEqual(new Set([fast.id, slow.id, mid.id]))
    for (const v of [fast, slow, mid]) {
      expect(await cell('method', v.id)).toBe(v.method)
      expect(await cell('tpme', v.id)).toBe(expectedTpme.get(v.id)!.toFixed(3))
      expect(await cell('testHr10', v.id)).toBe(v.testHr10!.toFixed(4))
      expect(await cell('testNdcg10', v.id)).toBe(v.testNdcg10!.toFixed(4))
      expect(await cell('trainableParams', v.id)).toBe(v.trainableParams!.toLocaleString('en-US'))
    }
    expect(await cell('secondsPerEpoch', slow.id)).toBe('36.0 s')
    expect(await cell('peakMemoryMb', mid.id)).toBe('2,500 MB')
    // the lowest TPME is marked best
    expect(await page.locator(`.compare-table tr[data-field="tpme"] td.best`).getAttribute('data-version-id')).toBe(fast.id)

    // the charts draw the same numbers, in the table's order
    const order = shown as string[]
    const byId = new Map([fast, slow, mid].map((v) => [v.id, v]))
    const cost = await chartData(page, 'compare-cost')
    expect(chartSeries(cost, 's / epoch')).toEqual(order.map((id) => byId.get(id)!.secondsPerEpoch))
    expect(chartSeries(cost, 'peak memory')).toEqual(order.map((id) => byId.get(id)!.peakMemoryMb))
    const efficiency = await chartData(page, 'compare-efficiency')
    expect(chartSeries(efficiency, 'TPME')!.map((x) => Number(x!.toFixed(12)))).toEqual(order.map((id) => expectedTpme.get(id)))
    await browser.screenshot('models-compare-three')

    // another selection is another set: fast against slow alone
    await page.locator(`.versions-table tr[data-version-id="${mid.id}"] input[type=checkbox]`).uncheck()
    await page.locator('#compare-button').click()
    await expect.poll(() => page.locator('.compare-table thead th[data-version-id]').count()).toBe(2)
    // t fast 0, slow 1 · p fast 1, slow 0 · m fast 0, slow 1
    await expect.poll(() => cell('tpme', fast.id)).toBe((0.1).toFixed(3))
    expect(await cell('tpme', slow.id)).toBe((0.9).toFixed(3))
    expect(browser.takeProblems()).toEqual([])
  })
})

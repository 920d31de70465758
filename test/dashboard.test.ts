// The admin dashboard in headless Chromium against the real platform: the API listening on a
// random port (in-process), the training worker as its own process, a throwaway database and
// Redis prefix. Every page is loaded, checked against what the API says, and screenshotted to
// artifacts/screenshots/.
import type { ChildProcess } from 'node:child_process'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { initBackend } from '@iisan/model'
import { sampleDataset } from '@iisan/pipeline'
import { fetchCoverage, requestCacheBuild } from '@iisan/embedding-cache/client'
import { chartData as chartDataOn, chartSeries, launchBrowser, type BrowserSession, type PageProblem } from './helpers/browser.ts'
import { WORKER_ENTRY, createTestApi, createTestCache, createTestPlatform, startService, stopService, until, waitForJob, type TestPlatform } from './helpers/platform.ts'

const slice = sampleDataset(200)
// Small and quick: enough epochs for curves, and two versions to compare.
const QUICK = { patience: 5, batchSize: 32, lrItem: 1e-3, lrUser: 1e-3 }

let platform: TestPlatform
let server: Awaited<ReturnType<typeof createTestApi>>
let cache: Awaited<ReturnType<typeof createTestCache>>
let cacheUrl: string
let worker: ChildProcess
let base: string
let browser: BrowserSession
let datasetId: string
let apiJobId: string

async function api<T = any>(path: string, init: { method?: string; body?: unknown } = {}): Promise<{ status: number; body: T }> {
  const res = await fetch(base + path, {
    method: init.method ?? 'GET',
    headers: init.body === undefined ? {} : { 'content-type': 'application/json' },
    body: init.body === undefined ? undefined : JSON.stringify(init.body),
  })
  const text = await res.text()
  return { status: res.status, body: text ? JSON.parse(text) : null }
}

async function jobDone(id: string, timeoutMs = 150_000) {
  const { job } = await waitForJob(async (p) => (await api(p)).body, id, { timeoutMs, finished: ['completed', 'cancelled'] })
  return job
}

const chartData = (canvasId: string) => chartDataOn(browser.page, canvasId)
const series = chartSeries

function expectNoProblems(allowed: (p: PageProblem) => boolean = () => false) {
  const problems = browser.takeProblems().filter((p) => !allowed(p))
  expect(problems).toEqual([])
}

beforeAll(async () => {
  // First: without Chromium nothing below is worth setting up, and the message says what to do.
  browser = await launchBrowser()
  await initBackend({ prefer: 'wasm' })
  platform = await createTestPlatform('dashboard')
  const { env } = platform
  // the embedding cache, in-process, with the demo backbones: the Datasets page shows real coverage
  cache = await createTestCache(env, 'dashboard-cache')
  cacheUrl = await cache.app.listen({ port: 0, host: '127.0.0.1' })
  env.EMBEDDING_CACHE_URL = cacheUrl
  server = await createTestApi(env, 'dashboard-test')
  base = await server.app.listen({ port: 0, host: '127.0.0.1' })
  worker = startService(WORKER_ENTRY, env)

  const imported = await api('/v1/datasets', { method: 'POST', body: { name: 'scientific-200', description: 'First 200 users of Amazon Scientific', itemsTsv: slice.itemsTsv, usersTsv: slice.usersTsv } })
  expect(imported.status).toBe(201)
  datasetId = imported.body.id
  // Version 1 trains through the API while the first pages are checked.
  const job = await api('/v1/training-jobs', { method: 'POST', body: { datasetId, method: 'sasrec-id', config: { ...QUICK, maxEpochs: 3 } } })
  expect(job.status).toBe(202)
  apiJobId = job.body.id
})

afterAll(async () => {
  await browser?.close()
  await stopService(worker)
  await server?.close()
  await cache?.close()
  await platform?.close()
})

afterEach(() => {
  // A failed test's leftovers must not fail the next one too.
  browser?.takeProblems()
})

describe('admin dashboard', () => {
  it('is served by the API: /admin, its modules and Chart.js from node_modules', async () => {
    const redirect = await fetch(`${base}/admin`, { redirect: 'manual' })
    expect(redirect.status).toBe(301)
    expect(redirect.headers.get('location')).toBe('/admin/')
    const index = await fetch(`${base}/admin/`)
    expect(index.status).toBe(200)
    expect(index.headers.get('content-type')).toMatch(/text\/html/)
    expect(await index.text()).toContain('Training jobs')
    for (const asset of ['js/app.js', 'js/api.js', 'js/pages/jobs.js', 'styles.css', 'vendor/chart.umd.js']) {
      const res = await fetch(`${base}/admin/${asset}`)
      expect({ asset, status: res.status }).toEqual({ asset, status: 200 })
    }
    expect((await fetch(`${base}/admin/vendor/chart.js`)).status).toBe(404)
    expect((await fetch(`${base}/admin/missing.js`)).status).toBe(404)
    // the static routes stay out of the OpenAPI document
    const doc = (await api('/docs/json')).body
    expect(Object.keys(doc.paths).some((p: string) => p.startsWith('/admin'))).toBe(false)
  })

  it('Datasets: name, counts and cache coverage', async () => {
    const { page } = browser
    const dataset = (await api(`/v1/datasets/${datasetId}`)).body
    await requestCacheBuild(cacheUrl, datasetId)
    await until(async () => ((await fetchCoverage(cacheUrl, datasetId)).backbones.every((b) => b.pending === 0) ? true : undefined), 120_000, 'the cache build')
    const coverage = await api(`/v1/datasets/${datasetId}/coverage`)
    expect(coverage.status).toBe(200)
    await page.goto(`${base}/admin/`)
    const card = page.locator(`.dataset[data-dataset-id="${datasetId}"]`)
    await expect.poll(() => card.locator('.dataset-name').textContent()).toBe('scientific-200')
    const stat = (key: string) => card.locator(`[data-stat="${key}"] .stat-value`).textContent()
    expect(await stat('items')).toBe(dataset.numItems.toLocaleString('en-US'))
    expect(await stat('users')).toBe('200')
    expect(await stat('interactions')).toBe(dataset.numInteractions.toLocaleString('en-US'))
    expect(dataset.numItems).toBe(slice.itemIds.length)
    const backbones = coverage.body.backbones as { modality: string; done: number; total: number }[]
    expect(backbones.map((b) => b.modality).sort()).toEqual(['image', 'text'])
    await expect.poll(() => card.locator('.coverage tbody tr').count()).toBe(backbones.length)
    const text = backbones.find((b) => b.modality === 'text')!
    expect(text.done).toBe(slice.itemIds.length)
    await expect.poll(() => card.locator('.coverage tbody').textContent()).toContain(text.done.toLocaleString('en-US'))
    await expect.poll(() => page.locator('#health .dot.ok').count()).toBe(2)
    await browser.screenshot('datasets')
    expectNoProblems()
  })

  it('Training jobs: job rows with status, and per-epoch curves from the API', async () => {
    const { page } = browser
    const done = await jobDone(apiJobId)
    expect(done.status).toBe('completed')
    await page.goto(`${base}/admin/#/jobs/${apiJobId}`)
    const row = page.locator(`.jobs-table tr[data-job-id="${apiJobId}"]`)
    await expect.poll(() => row.getAttribute('data-status')).toBe('completed')
    expect(await row.locator('td').nth(2).textContent()).toBe('scientific-200')
    await expect.poll(() => page.locator('.job-detail').getAttribute('data-status')).toBe('completed')
    await expect.poll(() => page.locator('.epochs-table tbody tr').count()).toBe(done.epochs.length)

    const data = await chartData('training-chart')
    expect(done.epochs).toHaveLength(3)
    expect(data.labels).toEqual(done.epochs.map((e: any) => e.epoch))
    expect(series(data, 'train loss')).toEqual(done.epochs.map((e: any) => e.trainLoss))
    expect(series(data, 'val HR@10')).toEqual(done.epochs.map((e: any) => e.valHr10))
    expect(series(data, 'val NDCG@10')).toEqual(done.epochs.map((e: any) => e.valNdcg10))
    expect(await page.locator('.job-detail .progress').getAttribute('aria-valuenow')).toBe('100')
    await browser.screenshot('jobs-completed')
    expectNoProblems()
  })

  it('starts a training job from the dashboard and follows it to completion', async () => {
    const { page } = browser
    await page.goto(`${base}/admin/#/jobs`)
    await page.locator('#job-dataset').selectOption(datasetId)
    await page.locator('#job-method').selectOption('sasrec-id')
    await page.locator('#job-max-epochs').fill('2')
    await page.locator('#start-job button[type=submit]').click()
    await expect.poll(() => page.evaluate(() => location.hash)).toMatch(/^#\/jobs\/[0-9a-f-]{36}$/)
    const jobId = (await page.evaluate(() => location.hash)).split('/')[2]
    const job = (await api(`/v1/training-jobs/${jobId}`)).body
    expect(job).toMatchObject({ datasetId, method: 'sasrec-id', config: { maxEpochs: 2 } })
    // the page follows the job by itself: no reloads from here on
    await expect.poll(() => page.locator('.job-detail').getAttribute('data-status'), { timeout: 150_000, interval: 500 }).toBe('completed')
    const done = (await api(`/v1/training-jobs/${jobId}`)).body
    await expect.poll(async () => (await chartData('training-chart')).labels.length).toBe(done.epochs.length)
    expect(series(await chartData('training-chart'), 'val NDCG@10')).toEqual(done.epochs.map((e: any) => e.valNdcg10))
    expect(await page.locator(`.jobs-table tr[data-job-id="${jobId}"]`).getAttribute('data-status')).toBe('completed')
    expectNoProblems()
  }, 180_000)

  it('shows live progress of a running job and cancels it', async () => {
    const { page } = browser
    await page.goto(`${base}/admin/#/jobs`)
    await page.locator('#job-dataset').selectOption(datasetId)
    await page.locator('#job-method').selectOption('sasrec-id')
    await page.locator('#job-max-epochs').fill('300')
    await page.locator('#start-job details.advanced summary').click()
    await page.locator('#job-patience').fill('300')
    await page.locator('#start-job button[type=submit]').click()
    await expect.poll(() => page.evaluate(() => location.hash)).toMatch(/^#\/jobs\/[0-9a-f-]{36}$/)
    const jobId = (await page.evaluate(() => location.hash)).split('/')[2]
    const detail = page.locator('.job-detail')
    await expect.poll(() => detail.getAttribute('data-status'), { timeout: 60_000 }).toBe('running')
    // The chart grows while we watch: two epochs drawn without reloading the page.
    await expect.poll(async () => (await chartData('training-chart')).labels.length, { timeout: 90_000, interval: 500 }).toBeGreaterThanOrEqual(2)
    const drawn = await chartData('training-chart')
    const apiEpochs = (await api(`/v1/training-jobs/${jobId}`)).body.epochs
    expect(series(drawn, 'train loss')).toEqual(apiEpochs.slice(0, drawn.labels.length).map((e: any) => e.trainLoss))
    expect(Number(await detail.locator('.progress').getAttribute('aria-valuenow'))).toBeGreaterThanOrEqual(0)
    await expect.poll(() => detail.locator('[data-field="epoch"] .live-value').textContent()).toMatch(/^\d+ \/ 300$/)
    expect(await detail.locator('[data-field="loss"] .live-value').textContent()).toMatch(/^\d+\.\d{4}$/)
    await browser.screenshot('jobs-live')

    await page.locator('#cancel-job').click()
    await expect.poll(() => detail.getAttribute('data-status'), { timeout: 30_000 }).toBe('cancelled')
    expect((await api(`/v1/training-jobs/${jobId}`)).body).toMatchObject({ status: 'cancelled', modelVersionId: null })
    expect(await page.locator('#cancel-job').isHidden()).toBe(true)
    expectNoProblems()
  }, 180_000)

  it('Models: versions side by side with TPME, and activation', async () => {
    const { page } = browser
    const versions = (await api(`/v1/model-versions?datasetId=${datasetId}`)).body.modelVersions
    expect(versions).toHaveLength(2)
    await page.goto(`${base}/admin/#/models`)
    for (const v of versions) {
      const row = page.locator(`.versions-table tr[data-version-id="${v.id}"]`)
      await expect.poll(() => row.count()).toBe(1)
      expect(await row.locator('td').nth(7).textContent()).toBe(v.testHr10.toFixed(4))
      await row.locator('input[type=checkbox]').check()
    }
    await page.locator('#compare-button').click()
    await expect.poll(() => page.locator('.compare-table').count()).toBe(1)
    const ids = new URLSearchParams((await page.evaluate(() => location.hash)).split('?')[1]).get('compare')!
    const compared = (await api(`/v1/model-versions/compare?ids=${ids}`)).body
    expect(compared.versions).toHaveLength(2)
    for (const v of compared.versions) {
      expect(v.tpme).toEqual(expect.any(Number))
      expect(await page.locator(`.compare-table tr[data-field="tpme"] td[data-version-id="${v.id}"]`).textContent()).toBe(v.tpme.toFixed(3))
      expect(await page.locator(`.compare-table tr[data-field="testNdcg10"] td[data-version-id="${v.id}"]`).textContent()).toBe(v.testNdcg10.toFixed(4))
      expect(await page.locator(`.compare-table tr[data-field="trainableParams"] td[data-version-id="${v.id}"]`).textContent()).toBe(v.trainableParams.toLocaleString('en-US'))
    }
    const efficiency = await chartData('compare-efficiency')
    expect(series(efficiency, 'TPME')).toEqual(compared.versions.map((v: any) => v.tpme))
    expect(series(efficiency, 's / epoch')).toEqual(compared.versions.map((v: any) => v.timeNorm))
    expect(series(efficiency, 'memory')).toEqual(compared.versions.map((v: any) => v.memoryNorm))
    expect(series(efficiency, 'params')).toEqual(compared.versions.map((v: any) => v.paramsNorm))
    const quality = await chartData('compare-quality')
    expect(series(quality, 'HR@10')).toEqual(compared.versions.map((v: any) => v.testHr10))
    expect(series(quality, 'NDCG@10')).toEqual(compared.versions.map((v: any) => v.testNdcg10))
    await browser.screenshot('models-compare')

    const inactive = versions.find((v: any) => !v.isActive)
    await page.locator(`.versions-table tr[data-version-id="${inactive.id}"] button.activate`).click()
    await expect.poll(() => page.locator(`.versions-table tr[data-version-id="${inactive.id}"] .badge-active`).count()).toBe(1)
    const after = (await api(`/v1/model-versions?datasetId=${datasetId}`)).body.modelVersions
    expect(after.filter((v: any) => v.isActive).map((v: any) => v.id)).toEqual([inactive.id])
    expectNoProblems()
  })

  it('Datasets after training: the active model, versions and jobs', async () => {
    const { page } = browser
    const active = (await api(`/v1/model-versions?datasetId=${datasetId}`)).body.modelVersions.find((v: any) => v.isActive)
    const jobs = (await api(`/v1/training-jobs?datasetId=${datasetId}`)).body.jobs
    await page.goto(`${base}/admin/#/datasets`)
    const card = page.locator(`.dataset[data-dataset-id="${datasetId}"]`)
    await expect.poll(() => card.locator('.facts').textContent()).toContain(`${active.method} · ${active.id.slice(0, 8)}`)
    const facts = await card.locator('.facts').textContent()
    expect(facts).toContain(`${jobs.filter((j: any) => j.status === 'completed').length} completed`)
    expect(facts).toContain('1 cancelled')
    await browser.screenshot('datasets-trained')
    expectNoProblems()
  })

  it('Try it: a history typed through the search box → the API’s recommendations with titles', async () => {
    const { page } = browser
    // a user the protocol keeps (≥ 5 interactions), so every item of the history is known to the model
    const user = slice.userLines.map((l) => l.split('\t')[1].split(' ')).find((items) => items.length >= 5)!
    const history = user.slice(0, 3)
    await page.goto(`${base}/admin/#/try?dataset=${datasetId}`)
    await expect.poll(() => page.locator('#search-results li').count()).toBeGreaterThan(0)
    for (const itemId of history) {
      // the stored title (HTML entities of the source file decoded), typed in part
      const stored = (await api(`/v1/datasets/${datasetId}/items?q=${itemId}`)).body.items[0]
      expect(stored.id).toBe(itemId)
      await page.locator('#item-search').fill(stored.title.slice(0, 40))
      const hit = page.locator(`#search-results button[data-item-id="${itemId}"]`)
      await hit.waitFor({ timeout: 10_000 })
      await hit.click()
    }
    expect(await page.locator('#history li').evaluateAll((lis) => lis.map((li) => (li as HTMLElement).dataset.itemId))).toEqual(history)
    await page.locator('#k').fill('8')
    const [response] = await Promise.all([page.waitForResponse((r) => r.url().endsWith('/v1/recommendations')), page.locator('#recommend').click()])
    const answered = await response.json()
    await expect.poll(() => page.locator('.recommendations li').count()).toBe(8)
    // Ask the API the same question, directly.
    const direct = await api('/v1/recommendations', { method: 'POST', body: { datasetId, modelId: answered.modelId, history, k: 8 } })
    expect(direct.status).toBe(200)
    const shownTitles = await page.locator('.recommendations li .item-title').allTextContents()
    expect(shownTitles).toEqual(direct.body.items.map((i: any) => i.title))
    expect(await page.locator('.recommendations li').evaluateAll((lis) => lis.map((li) => (li as HTMLElement).dataset.itemId))).toEqual(direct.body.items.map((i: any) => i.itemId))
    for (const t of shownTitles) expect(t.length).toBeGreaterThan(0)
    await browser.screenshot('try-it')
    expectNoProblems()

    // errors come back inline with the API's code and message
    await page.locator('.segmented input[value="user"]').check({ force: true })
    await page.locator('#user-id').fill('nobody-here')
    await page.locator('#recommend').click()
    await expect.poll(() => page.locator('#try-error .error').textContent()).toMatch(/USER_NOT_FOUND.*nobody-here/)
    await browser.screenshot('try-it-error')
    expectNoProblems((p) => p.kind === 'console' && /status of 404/.test(p.text) && p.url.endsWith('/v1/recommendations'))
  })
})

// The dashboard's deletes and statistics, the models table at 1400 px, and the /docs page
// uploading a dataset from two files, in headless Chromium against the real API (in-process,
// listening) over a throwaway database. No worker: model versions are made directly (untrained
// ID-SASRec, loadable), jobs are put in the state a test needs.
import { writeFileSync } from 'node:fs'
import path from 'node:path'
import request from 'supertest'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { launchBrowser, type BrowserSession } from './helpers/browser.ts'
import type { TestPlatform } from './helpers/platform.ts'
import { startQuickApi, untrainedModelVersion, type QuickApi } from './helpers/quick-api.ts'

let quick: QuickApi
let platform: TestPlatform
let base: string
let http: ReturnType<typeof request>
let browser: BrowserSession

async function importDataset(name: string, itemsTsv: string, usersTsv: string): Promise<string> {
  return (await http.post('/v1/datasets').send({ name, itemsTsv, usersTsv }).expect(201)).body.id
}

/** A version with made-up figures, as the Models page lists them. */
function modelVersionOf(datasetId: string, activate = false) {
  return untrainedModelVersion(platform.db.prisma, datasetId, {
    testHr10: 0.0123,
    testNdcg10: 0.0061,
    valHr10: 0.0234,
    valNdcg10: 0.0117,
    secondsPerEpoch: 47.3,
    peakMemoryMb: 1123,
    trainableParams: 4_120_000,
    epochs: 57,
    activate,
  })
}

/** A full load of a dashboard page (the same URL with only its hash changed would not re-render). */
async function show(hash: string) {
  await browser.page.goto(`${base}/admin/?load=${Date.now()}${hash}`)
}

function expectNoProblems() {
  expect(browser.takeProblems()).toEqual([])
}

const ITEMS = Array.from({ length: 8 }, (_, i) => `I${i}\tItem number ${i}`).join('\n')
// u1 and u2 have 5+ interactions (kept by the protocol), u3 has 2; I7 is in no history; u1 repeats I0
const USERS = 'u1\tI0 I1 I2 I0 I3\nu2\tI1 I2 I3 I4 I5 I6\nu3\tI0 I1\n'

beforeAll(async () => {
  browser = await launchBrowser({ viewport: { width: 1400, height: 900 } })
  quick = await startQuickApi('dashboard-deletes')
  ;({ platform, base } = quick)
  http = request(base)
})

afterAll(async () => {
  await browser?.close()
  await quick?.close()
})

afterEach(() => {
  browser?.takeProblems()
})

describe('Datasets page', () => {
  it('shows density, never-interacted items and what training keeps, as the API computes them', async () => {
    const id = await importDataset('stats', ITEMS, USERS)
    const { stats } = (await http.get(`/v1/datasets/${id}`).expect(200)).body
    expect(stats).toMatchObject({ distinctPairs: 12, coldItems: 1, protocol: { usersKept: 2, itemsKept: 7 } })
    const { page } = browser
    await show('#/datasets')
    const card = page.locator(`.dataset[data-dataset-id="${id}"]`)
    const stat = (key: string) => card.locator(`[data-stat="${key}"] .stat-value`).textContent()
    await expect.poll(() => stat('density')).toBe(`${((12 / (3 * 8)) * 100).toFixed(3)}%`)
    expect(await stat('coldItems')).toBe('1')
    expect(await stat('usersKept')).toBe('2')
    expect(await stat('itemsKept')).toBe('7')
    expect(await card.locator('[data-stat="usersKept"] .stat-label').textContent()).toMatch(/≥ 5 interactions/)
    expectNoProblems()
  })

  it('deletes a dataset after a confirmation; Cancel keeps it; a running job’s 409 is shown', async () => {
    const doomed = await importDataset('doomed', ITEMS, USERS)
    const busy = await importDataset('busy', ITEMS, USERS)
    const job = (await http.post('/v1/training-jobs').send({ datasetId: busy, method: 'sasrec-id' }).expect(202)).body.id
    await platform.db.prisma.$executeRaw`UPDATE training_jobs SET status = 'running', heartbeat_at = now(), worker_id = 'test' WHERE id = ${job}::uuid`
    const { page } = browser
    await show('#/datasets')
    const card = page.locator(`.dataset[data-dataset-id="${doomed}"]`)
    await card.locator('.delete-dataset').click()
    const dialog = page.locator('dialog.confirm-dialog')
    await expect.poll(() => dialog.isVisible()).toBe(true)
    expect(await dialog.textContent()).toMatch(/Delete dataset doomed\?.*8 items, 13 interactions, 0 training job\(s\) and 0 model version\(s\)/)
    await browser.screenshot('datasets-delete-dialog')
    await dialog.locator('button[value="cancel"]').click()
    await expect.poll(() => dialog.count()).toBe(0)
    await http.get(`/v1/datasets/${doomed}`).expect(200)

    await card.locator('.delete-dataset').click()
    await dialog.locator('button.confirm').click()
    await expect.poll(() => page.locator(`.dataset[data-dataset-id="${doomed}"]`).count()).toBe(0)
    await http.get(`/v1/datasets/${doomed}`).expect(404)

    const busyCard = page.locator(`.dataset[data-dataset-id="${busy}"]`)
    await busyCard.locator('.delete-dataset').click()
    await dialog.locator('button.confirm').click()
    await expect.poll(() => busyCard.locator('.delete-error .error-code').textContent()).toBe('JOB_RUNNING')
    expect(await busyCard.locator('.delete-error').textContent()).toMatch(/cancel/)
    await http.get(`/v1/datasets/${busy}`).expect(200)
    // the 409 is the one console error: Chromium logs the failed request
    expect(browser.takeProblems().map((p) => p.text)).toEqual([expect.stringMatching(/409/)])
  })
})

describe('Models page', () => {
  it('fits the models table at 1400 × 900, and deletes an inactive version after a confirmation', async () => {
    // a realistic name: the dataset column is the one that grows
    const id = await importDataset('Amazon Industrial & Scientific, first 2,000 users', ITEMS, USERS)
    const active = await modelVersionOf(id, true)
    const inactive = await modelVersionOf(id)
    const { page } = browser
    await show('#/models')
    const row = (v: { id: string }) => page.locator(`.versions-table tr[data-version-id="${v.id}"]`)
    await expect.poll(() => row(inactive).count()).toBe(1)
    const shot = await browser.screenshot('models-1400')
    // at 1400 px nothing of the table is cut off: it fits inside its card, no scrolling needed
    const layout = await page.evaluate(() => {
      const scroll = document.querySelector('.versions-table')!.closest('.table-scroll') as HTMLElement
      const card = scroll.closest('.card') as HTMLElement
      const table = scroll.querySelector('table')!.getBoundingClientRect()
      const cell = Array.from(document.querySelectorAll('.versions-table tbody tr:first-child td')).at(-1)!.getBoundingClientRect()
      return {
        viewport: window.innerWidth,
        page: document.documentElement.scrollWidth,
        cardRight: card.getBoundingClientRect().right,
        tableRight: table.right,
        lastCellRight: cell.right,
        scrollable: scroll.scrollWidth > scroll.clientWidth && getComputedStyle(scroll).overflowX === 'auto',
        scrollRight: scroll.getBoundingClientRect().right,
      }
    })
    expect(layout.page, shot).toBeLessThanOrEqual(layout.viewport)
    expect(layout.cardRight).toBeLessThanOrEqual(layout.viewport)
    expect({ scrollable: layout.scrollable, lastCellInside: layout.lastCellRight <= layout.scrollRight + 0.5 }).toEqual({ scrollable: false, lastCellInside: true })

    expect(await row(active).locator('.delete-version').count()).toBe(0)
    await row(inactive).locator('.delete-version').click()
    const dialog = page.locator('dialog.confirm-dialog')
    await expect.poll(() => dialog.isVisible()).toBe(true)
    expect(await dialog.textContent()).toMatch(/Delete model version sasrec-id · /)
    await dialog.locator('button.confirm').click()
    await expect.poll(() => row(inactive).count()).toBe(0)
    expect(await row(active).count()).toBe(1)
    await http.get(`/v1/model-versions/${inactive.id}`).expect(404)
    expectNoProblems()
  })
})

describe('/docs', () => {
  it('imports a dataset from two files through Swagger UI’s multipart form', async () => {
    const { page } = browser
    await page.goto(`${base}/docs`)
    const operation = page.locator('#operations-datasets-post_v1_datasets')
    await operation.locator('.opblock-summary').click()
    await operation.locator('button.try-out__btn').click()
    await operation.locator('select.content-type, .body-param-content-type select').first().selectOption('multipart/form-data')
    const field = (name: string) => operation.locator(`tr[data-property-name="${name}"]`)
    // the form starts from the document's examples, as a user would see it
    expect(await field('name').locator('input').inputValue()).toBe('scientific')
    await field('name').locator('input').fill('from-swagger-ui')
    await field('description').locator('input[type="text"]').fill('')
    const dir = platform.tmp
    const itemsFile = path.join(dir, 'items.tsv')
    const usersFile = path.join(dir, 'users.tsv')
    writeFileSync(itemsFile, ITEMS)
    writeFileSync(usersFile, USERS)
    await field('items').locator('input[type="file"]').setInputFiles(itemsFile)
    await field('users').locator('input[type="file"]').setInputFiles(usersFile)
    await operation.locator('button.execute').click()
    const status = operation.locator('.live-responses-table .response .response-col_status').first()
    await expect.poll(() => status.textContent(), { timeout: 20_000 }).toMatch(/201/)
    await browser.screenshot('docs-multipart-import')
    const created = (await http.get('/v1/datasets').expect(200)).body.datasets.find((d: { name: string }) => d.name === 'from-swagger-ui')
    expect(created).toMatchObject({ numItems: 8, numUsers: 3, numInteractions: 13 })
  })
})

// The dashboard against an API with API_KEYS set: it asks for the key once, sends it on every
// call, and shows the data; a wrong key leaves the page showing the API's error.
import type { AddressInfo } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { initBackend } from '@iisan/model'
import { launchBrowser, type BrowserSession } from './helpers/browser.ts'
import { createTestApi, createTestPlatform, type TestPlatform } from './helpers/platform.ts'

const KEY = 'dashboard-test-key-0123456789'
let platform: TestPlatform
let api: Awaited<ReturnType<typeof createTestApi>>
let browser: BrowserSession
let base: string

beforeAll(async () => {
  browser = await launchBrowser()
  await initBackend({ prefer: 'wasm' })
  platform = await createTestPlatform('dashboard-auth', { API_KEYS: KEY })
  api = await createTestApi(platform.env, 'dashboard-auth-api')
  await api.app.listen({ port: 0, host: '127.0.0.1' })
  base = `http://127.0.0.1:${(api.app.server.address() as AddressInfo).port}`
  const res = await fetch(`${base}/v1/datasets`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` },
    body: JSON.stringify({ name: 'keyed-dataset', itemsTsv: 'A\tfirst\nB\tsecond\n', usersTsv: 'u1\tA B A B A\n' }),
  })
  expect(res.status).toBe(201)
})

afterAll(async () => {
  await browser?.close()
  await api?.close()
  await platform?.close()
})

describe('dashboard with API keys', () => {
  it('asks for the key on the first 401, remembers it, and shows the data', async () => {
    const { page } = browser
    const prompts: string[] = []
    const answer = (text: string) => (dialog: import('playwright-core').Dialog) => {
      prompts.push(dialog.message())
      return dialog.accept(text)
    }
    const wrong = answer('not-the-key-0123456789')
    page.once('dialog', wrong)
    await page.goto(`${base}/admin/`)
    await expect.poll(() => page.locator('body').textContent()).toMatch(/not valid|UNAUTHORIZED/)
    page.off('dialog', wrong)
    // a stored wrong key is asked again once; this time the right one
    await page.evaluate(() => localStorage.removeItem('iisan.apiKey'))
    page.on('dialog', answer(KEY))
    await page.goto(`${base}/admin/`)
    await expect.poll(() => page.locator('.dataset-name').first().textContent()).toBe('keyed-dataset')
    expect(prompts.length).toBeGreaterThanOrEqual(2)
    expect(prompts[0]).toMatch(/API_KEYS/)
    // remembered: a reload needs no prompt
    const before = prompts.length
    await page.reload()
    await expect.poll(() => page.locator('.dataset-name').first().textContent()).toBe('keyed-dataset')
    expect(prompts.length).toBe(before)
    await browser.screenshot('datasets-with-api-key')
  })
})

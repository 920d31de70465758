/**
 * Headless Chromium for dashboard tests, through playwright-core and the system's Chromium
 * (`apt-get install -y chromium`; `npx playwright install` cannot download here). Every launch
 * gets a fresh user-data directory, removed again on close. Console errors and uncaught page
 * errors are collected so tests can assert there were none.
 */
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { chromium, type BrowserContext, type Page } from 'playwright-core'
import { REPO_ROOT } from './db.ts'

export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
export const SCREENSHOT_DIR = path.join(REPO_ROOT, 'artifacts/screenshots')

const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run']

export interface PageProblem {
  kind: 'console' | 'pageerror'
  text: string
  /** URL the console message points at (for failed requests: the request's URL). */
  url: string
}

export interface BrowserSession {
  context: BrowserContext
  page: Page
  /** Console errors and uncaught exceptions since the last takeProblems(). */
  takeProblems(): PageProblem[]
  /** Full-page PNG into artifacts/screenshots/<name>.png; returns the path. */
  screenshot(name: string): Promise<string>
  close(): Promise<void>
}

export async function launchBrowser(options: { viewport?: { width: number; height: number } } = {}): Promise<BrowserSession> {
  if (!existsSync(CHROMIUM_PATH)) {
    throw new Error(
      `Chromium is not installed at ${CHROMIUM_PATH}: the dashboard tests need it. Install it with \`apt-get install -y chromium\` (CI does), or point CHROMIUM_PATH at a Chromium binary.`,
    )
  }
  const userDataDir = await mkdtemp(path.join(os.tmpdir(), 'iisan-chromium-'))
  let context: BrowserContext
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM_PATH,
      headless: true,
      args: CHROMIUM_ARGS,
      viewport: options.viewport ?? { width: 1366, height: 900 },
      deviceScaleFactor: 1,
    })
  } catch (e) {
    await rm(userDataDir, { recursive: true, force: true })
    throw new Error(`could not launch Chromium at ${CHROMIUM_PATH}: ${e instanceof Error ? e.message : e}`)
  }
  const page = context.pages()[0] ?? (await context.newPage())
  let problems: PageProblem[] = []
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push({ kind: 'console', text: msg.text(), url: msg.location().url })
  })
  page.on('pageerror', (err) => problems.push({ kind: 'pageerror', text: err.stack ?? err.message, url: page.url() }))
  await mkdir(SCREENSHOT_DIR, { recursive: true })
  return {
    context,
    page,
    takeProblems() {
      const taken = problems
      problems = []
      return taken
    },
    async screenshot(name) {
      const file = path.join(SCREENSHOT_DIR, `${name}.png`)
      await page.screenshot({ path: file, fullPage: true })
      return file
    },
    async close() {
      await context.close().catch(() => undefined)
      await rm(userDataDir, { recursive: true, force: true })
    },
  }
}

export interface ChartData {
  labels: unknown[]
  datasets: { label: string; data: (number | null)[] }[]
}

/** The data of the Chart.js chart drawn on the canvas `#canvasId`: what the page drew, not what it meant to. */
export function chartData(page: Page, canvasId: string): Promise<ChartData> {
  return page.evaluate((id) => {
    const Chart = (window as unknown as { Chart: { getChart(c: HTMLCanvasElement): { data: ChartData } | undefined } }).Chart
    const canvas = document.getElementById(id) as HTMLCanvasElement | null
    if (!canvas) throw new Error(`no canvas #${id}`)
    const chart = Chart.getChart(canvas)
    if (!chart) throw new Error(`no chart on #${id}`)
    return { labels: [...chart.data.labels], datasets: chart.data.datasets.map((d) => ({ label: d.label, data: [...d.data] })) }
  }, canvasId)
}

/** One series of a chart by its legend label. */
export const chartSeries = (data: ChartData, label: string) => data.datasets.find((d) => d.label === label)?.data

/**
 * One scenario's platform: its own database on the run's PostgreSQL, its own queue prefix on the
 * run's Redis, the environment every service of the scenario shares, and helpers to start them,
 * import data and follow training jobs.
 */
import path from 'node:path'
import { sampleDataset } from '@iisan/pipeline'
import type { PrismaClient } from '@iisan/storage'
import { ApiClient, type Json } from './http.ts'
import { freePort, progress, sleep, type Fleet, type Service } from './infra.ts'

export interface Platform {
  name: string
  fleet: Fleet
  dbUrl: string
  prisma: PrismaClient
  prefix: string
  env: Record<string, string>
  /** The port the embedding cache of this scenario listens on (when one is started). */
  cachePort: number
  api?: Service
  client: ApiClient
  apiKey?: string
  startApi(extra?: Record<string, string>): Promise<Service>
  startWorker(extra?: Record<string, string>): Promise<Service>
  startCache(extra?: Record<string, string>): Promise<Service>
  close(): Promise<void>
}

export async function createPlatform(fleet: Fleet, name: string, options: { apiKey?: string } = {}): Promise<Platform> {
  if (!fleet.redis) throw new Error('Redis is not started')
  const database = `faults_${name}_${Date.now().toString(36)}`
  const { url, prisma } = await fleet.createDatabase(database)
  const prefix = `faults_${name}`
  const cachePort = await freePort()
  const env: Record<string, string> = {
    DATABASE_URL: url,
    REDIS_URL: fleet.redis.url,
    QUEUE_PREFIX: prefix,
    ARTIFACTS_DIR: path.join(fleet.tmp, 'artifacts'),
    LOG_LEVEL: 'warn',
    HOST: '127.0.0.1',
    INTERNAL_TOKEN: fleet.internalToken,
    EMBEDDING_CACHE_HOST: '127.0.0.1',
    EMBEDDING_CACHE_URL: `http://127.0.0.1:${cachePort}`,
    // image paths are not used by the bench: keep the cache from reading the filesystem
    IMAGE_ROOT: 'none',
  }
  const platform: Platform = {
    name,
    fleet,
    dbUrl: url,
    prisma,
    prefix,
    env,
    cachePort,
    client: new ApiClient('http://127.0.0.1:0'),
    apiKey: options.apiKey,
    async startApi(extra = {}) {
      const api = await fleet.startService('api', { ...env, ...(options.apiKey ? { API_KEYS: options.apiKey } : {}), ...extra })
      platform.api = api
      platform.client = new ApiClient(`http://127.0.0.1:${api.port}`, options.apiKey)
      return api
    },
    startWorker: (extra = {}) => fleet.startService('worker', { ...env, ...extra }),
    startCache: (extra = {}) => fleet.startService('cache', { ...env, ...extra }, { port: cachePort, healthTimeoutMs: 180_000 }),
    async close() {
      await fleet.stopAll()
      await prisma.$disconnect().catch(() => undefined)
    },
  }
  return platform
}

/** What an import of `sampleDataset(users)` must leave in the database. */
export function expectedCounts(sample: { itemsTsv: string; usersTsv: string }) {
  const items = sample.itemsTsv.split('\n').filter(Boolean).length
  const userLines = sample.usersTsv.split('\n').filter(Boolean)
  const interactions = userLines.reduce((s, l) => s + l.split('\t')[1].split(' ').filter(Boolean).length, 0)
  return { items, users: userLines.length, interactions }
}

/** POST /v1/datasets with the first `users` users of Scientific; returns the dataset. */
export async function importSample(client: ApiClient, name: string, users: number): Promise<Json> {
  const slice = sampleDataset(users)
  return client.must('POST', '/v1/datasets', { name, itemsTsv: slice.itemsTsv, usersTsv: slice.usersTsv }, 201, 300_000)
}

/** Polls a job until it is completed (or failed / cancelled, which throws unless allowed). */
export async function waitForJob(client: ApiClient, id: string, timeoutMs: number, label = 'job'): Promise<Json> {
  const deadline = Date.now() + timeoutMs
  let last: Json
  let lastPrint = 0
  while (Date.now() < deadline) {
    try {
      const res = await client.get(`/v1/training-jobs/${id}`, 10_000)
      if (res.status === 200) {
        last = res.body
        if (['completed', 'failed', 'cancelled'].includes(last.status)) return last
      }
    } catch {
      // the API may be away for a moment (a restarted dependency): ask again
    }
    if (Date.now() - lastPrint > 15_000) {
      lastPrint = Date.now()
      const p = last?.progress
      progress(`  ${label} ${id.slice(0, 8)}: ${last?.status ?? '?'} ${p?.phase ?? ''}${p?.epoch ? ` epoch ${p.epoch}/${p.maxEpochs}` : ''}${p?.cached !== undefined ? ` cached ${p.cached}/${p.total}` : ''} attempts ${last?.attempts ?? '?'}`)
    }
    await sleep(500)
  }
  throw new Error(`${label} ${id} did not finish within ${Math.round(timeoutMs / 1000)} s (last: ${JSON.stringify(last)?.slice(0, 400)})`)
}

/** Fixed-width table on stdout. */
export function printTable(title: string, rows: Record<string, unknown>[]): void {
  console.log(`\n${title}`)
  if (rows.length === 0) {
    console.log('  (none)')
    return
  }
  const columns = [...new Set(rows.flatMap((r) => Object.keys(r)))]
  const cell = (v: unknown) => (v === undefined || v === null ? '' : typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toFixed(1)) : String(v))
  const widths = columns.map((c) => Math.max(c.length, ...rows.map((r) => cell(r[c]).length)))
  const line = (values: string[]) => '  ' + values.map((v, i) => v.padEnd(widths[i])).join('  ')
  console.log(line(columns))
  console.log(line(widths.map((w) => '-'.repeat(w))))
  for (const r of rows) console.log(line(columns.map((c) => cell(r[c]))))
}

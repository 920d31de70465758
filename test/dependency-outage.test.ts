// A PostgreSQL outage as the services see it: a PostgreSQL server of the test's own (the shared one
// serves every other suite) is stopped under the running API and embedding cache, which must answer
// 503 DEPENDENCY_UNAVAILABLE with Retry-After instead of 500, and serve again once it is back,
// without a restart. The classifier is checked on errors the real clients throw.
import { mkdtempSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { randomUUID } from 'node:crypto'
import pg from 'pg'
import { Redis } from 'ioredis'
import request from 'supertest'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ensureDatabaseExists, withDatabase } from '@iisan/config'
import { DependencyUnavailableError, dependencyFailure } from '@iisan/http'
import { initBackend } from '@iisan/model'
import { fetchCoverage } from '@iisan/embedding-cache'
import { runTrainingJob } from '@iisan/pipeline'
import { Prisma, applyMigrations, createPrisma } from '@iisan/storage'
import { createRedisConnection } from '@iisan/queue'
import { MIGRATIONS_DIR, cleanupRedisPrefix, testRedisPrefix, testRedisUrl } from './helpers/db.ts'
import { createTestApi, createTestCache, freePort, until } from './helpers/platform.ts'
import { startPgInstance, type PgInstance } from './helpers/pg-instance.ts'

let pgServer: PgInstance | undefined
let dbUrl: string
let prefix: string
let tmp: string
let redis: Redis
let api: Awaited<ReturnType<typeof createTestApi>> | undefined
let cache: Awaited<ReturnType<typeof createTestCache>> | undefined
let http: ReturnType<typeof request>
let cacheHttp: ReturnType<typeof request>
let datasetId: string
/** Rows before the interrupted import, compared after the restart. */
let rowsBefore: { datasets: number; items: number }

// 12 items, 8 users of 7 interactions each: enough for the protocol (≥ 5) and a one-epoch model
const ITEMS = Array.from({ length: 12 }, (_, i) => `I${i + 1}`)
const itemsTsv = ITEMS.map((id, i) => `${id}\tlab item number ${i + 1}`).join('\n') + '\n'
const usersTsv = Array.from({ length: 8 }, (_, u) => `u${u + 1}\t${Array.from({ length: 7 }, (_, k) => ITEMS[(u + k) % ITEMS.length]).join(' ')}`).join('\n') + '\n'

/** A reply during the outage: 503, Retry-After, the shared body naming the dependency. */
function expectUnavailable(res: request.Response, dependency = 'postgres') {
  expect(res.status, JSON.stringify(res.body)).toBe(503)
  expect(Number(res.headers['retry-after'])).toBeGreaterThan(0)
  expect(res.body.error).toMatchObject({ code: 'DEPENDENCY_UNAVAILABLE', message: expect.any(String), details: { dependency } })
}

/** A query of ours that runs until the server goes away, started at once (Prisma queries are lazy). */
function started<T>(p: PromiseLike<T>): Promise<T> {
  const running = Promise.resolve(p)
  running.catch(() => undefined)
  return running
}

async function caught(p: PromiseLike<unknown>): Promise<unknown> {
  try {
    await p
  } catch (e) {
    return e
  }
  throw new Error('expected a rejection')
}

async function countRows(table: 'datasets' | 'items'): Promise<number> {
  const client = new pg.Client({ connectionString: dbUrl })
  await client.connect()
  try {
    return Number((await client.query(`SELECT count(*)::int AS n FROM ${table}`)).rows[0].n)
  } finally {
    await client.end()
  }
}

beforeAll(async () => {
  await initBackend({ prefer: 'wasm' })
  pgServer = await startPgInstance()
  dbUrl = withDatabase(pgServer.url, 'iisan_outage')
  await ensureDatabaseExists(dbUrl)
  await applyMigrations(dbUrl, MIGRATIONS_DIR)
  prefix = testRedisPrefix('outage')
  redis = createRedisConnection(testRedisUrl())
  tmp = mkdtempSync(path.join(os.tmpdir(), 'iisan-outage-'))
  const env = { DATABASE_URL: dbUrl, REDIS_URL: testRedisUrl(), QUEUE_PREFIX: prefix, LOG_LEVEL: 'error', ARTIFACTS_DIR: path.join(tmp, 'artifacts') }
  api = await createTestApi(env, 'outage-api')
  await api.app.ready()
  http = request(api.app.server)
  cache = await createTestCache({ ...env, EMBEDDING_CACHE_PORT: String(await freePort()) }, 'outage-cache', { worker: false })
  await cache.app.ready()
  cacheHttp = request(cache.app.server)

  const imported = await http.post('/v1/datasets').send({ name: 'tiny', itemsTsv, usersTsv }).expect(201)
  datasetId = imported.body.id
  // The training job is queued through the API and run here: a worker process would add nothing
  // but start-up time to a test about the API.
  const job = await http.post('/v1/training-jobs').send({ datasetId, method: 'sasrec-id', config: { maxEpochs: 1, patience: 1, batchSize: 8 } }).expect(202)
  const trainer = createPrisma(dbUrl, { maxConnections: 2 })
  try {
    const outcome = await runTrainingJob(trainer, job.body.id)
    expect(outcome.status).toBe('completed')
  } finally {
    await trainer.$disconnect()
  }
}, 180_000)

afterAll(async () => {
  // every step on its own: the PostgreSQL instance must go even if a service fails to close
  const steps: (() => Promise<unknown> | undefined)[] = [
    async () => {
      if (pgServer && !(await pgServer.running())) await pgServer.start()
    },
    () => cache?.close(),
    () => api?.close(),
    async () => {
      if (!redis) return
      await cleanupRedisPrefix(redis, prefix)
      await redis.quit()
    },
    () => pgServer?.destroy(),
    async () => tmp && rmSync(tmp, { recursive: true, force: true }),
  ]
  for (const step of steps) await Promise.resolve(step()).catch((e) => console.error('cleanup step failed:', e))
})

describe('dependencyFailure on what the real clients throw', () => {
  it('a Prisma error whose own code is a socket error (seen by bench:faults: `write EPIPE` when the server stopped mid-import)', () => {
    const epipe = new Prisma.PrismaClientKnownRequestError('Invalid `prisma.$queryRaw()` invocation: write EPIPE', { code: 'EPIPE', clientVersion: Prisma.prismaVersion.client })
    expect(dependencyFailure(epipe)).toEqual({ dependency: 'postgres', reason: expect.stringContaining('EPIPE') })
    // a Prisma error with a query-level code stays the request's
    const unique = new Prisma.PrismaClientKnownRequestError('Unique constraint failed', { code: 'P2002', clientVersion: Prisma.prismaVersion.client })
    expect(dependencyFailure(unique)).toBeUndefined()
  })

  it('Prisma over adapter-pg: nothing listening, a killed backend, an immediate shutdown', async () => {
    const closed = await freePort()
    const nowhere = createPrisma(`postgresql://postgres@127.0.0.1:${closed}/none`, { maxConnections: 1 })
    try {
      // raw query: P2010 with meta.driverAdapterError { kind: 'DatabaseNotReachable' }
      const raw = await caught(nowhere.$queryRaw`SELECT 1`)
      expect(raw).toMatchObject({ name: 'PrismaClientKnownRequestError' })
      expect(dependencyFailure(raw)).toEqual({ dependency: 'postgres', reason: expect.stringContaining('DatabaseNotReachable') })
      // model query: P1001
      const model = await caught(nowhere.dataset.findMany())
      expect(dependencyFailure(model)).toMatchObject({ dependency: 'postgres' })
      // interactive transaction: fails at BEGIN
      const tx = await caught(nowhere.$transaction(async (t) => t.dataset.count()))
      expect(dependencyFailure(tx)).toMatchObject({ dependency: 'postgres' })
    } finally {
      await nowhere.$disconnect()
    }

    const prisma = createPrisma(dbUrl, { maxConnections: 1 })
    const admin = new pg.Client({ connectionString: dbUrl })
    await admin.connect()
    try {
      // not the server's fault: the request's (22012) and a unique violation stay undefined
      expect(dependencyFailure(await caught(prisma.$queryRaw`SELECT 1/0`))).toBeUndefined()
      expect(dependencyFailure(await caught(prisma.$executeRawUnsafe(`INSERT INTO datasets (id, name) VALUES ('${datasetId}', 'dup')`)))).toBeUndefined()

      // pg_terminate_backend mid-query: 57P01 in the adapter error's cause
      const marker = `outage_${randomUUID().slice(0, 8)}`
      const sleeping = started(prisma.$queryRawUnsafe(`SELECT pg_sleep(10) AS ${marker}`))
      await until(async () => ((await admin.query(`SELECT 1 FROM pg_stat_activity WHERE query LIKE '%AS ${marker}%' AND pid <> pg_backend_pid()`)).rowCount ? true : undefined), 10_000, 'the sleeping query')
      await admin.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%AS ${marker}%' AND pid <> pg_backend_pid()`)
      const terminated = (await caught(sleeping)) as { meta?: { driverAdapterError?: { cause?: { originalCode?: string } } } }
      expect(terminated.meta?.driverAdapterError?.cause?.originalCode).toBe('57P01')
      expect(dependencyFailure(terminated)).toEqual({ dependency: 'postgres', reason: expect.stringContaining('57P01') })
    } finally {
      await admin.end()
    }

    // immediate shutdown mid-query: pg's own "Connection terminated unexpectedly", passed through by adapter-pg
    const sleeping = started(prisma.$queryRawUnsafe('SELECT pg_sleep(10)'))
    await new Promise((r) => setTimeout(r, 300))
    await pgServer!.stop('immediate')
    try {
      const cut = (await caught(sleeping)) as Error
      expect(dependencyFailure(cut)).toMatchObject({ dependency: 'postgres' })
      // and the pool's next connection is refused
      expect(dependencyFailure(await caught(prisma.$queryRaw`SELECT 1`))).toMatchObject({ dependency: 'postgres' })
    } finally {
      await pgServer!.start()
      await prisma.$disconnect()
    }
  })

  it('pg, ioredis, fetch and the embedding-cache client', async () => {
    const closed = await freePort()
    const client = new pg.Client({ connectionString: `postgresql://postgres@127.0.0.1:${closed}/none` })
    const refused = await caught(client.connect())
    expect(refused).toMatchObject({ code: 'ECONNREFUSED' })
    // a bare socket error names no dependency, but it is one
    expect(dependencyFailure(refused)).toEqual({ dependency: 'unknown', reason: `ECONNREFUSED 127.0.0.1:${closed}` })

    const quiet = (r: Redis) => (r.on('error', () => undefined), r)
    const limited = quiet(new Redis(`redis://127.0.0.1:${closed}`, { maxRetriesPerRequest: 1, retryStrategy: () => 20 }))
    const noRetry = quiet(new Redis(`redis://127.0.0.1:${closed}`, { retryStrategy: () => null }))
    const noQueue = quiet(new Redis(`redis://127.0.0.1:${closed}`, { enableOfflineQueue: false }))
    try {
      const maxRetries = await caught(limited.ping())
      expect(maxRetries).toMatchObject({ name: 'MaxRetriesPerRequestError' })
      expect(dependencyFailure(maxRetries)).toMatchObject({ dependency: 'redis' })
      expect(dependencyFailure(await caught(noRetry.ping()))).toEqual({ dependency: 'redis', reason: 'Connection is closed.' })
      expect(dependencyFailure(await caught(noQueue.ping()))).toMatchObject({ dependency: 'redis' })
    } finally {
      for (const r of [limited, noRetry, noQueue]) r.disconnect()
    }
    const quit = createRedisConnection(testRedisUrl())
    await quit.quit()
    expect(dependencyFailure(await caught(quit.ping()))).toMatchObject({ dependency: 'redis' })

    // a bare `fetch failed` may be a user's URL: not an outage of ours …
    const fetchFailed = await caught(fetch(`http://127.0.0.1:${closed}/`))
    expect(fetchFailed).toMatchObject({ message: 'fetch failed' })
    expect(dependencyFailure(fetchFailed)).toBeUndefined()
    // … unless the client that made it names the service
    expect(dependencyFailure(new DependencyUnavailableError('scorer', 'scorer unreachable', { cause: fetchFailed }))).toEqual({ dependency: 'scorer', reason: 'scorer unreachable' })
    const cacheDown = await caught(fetchCoverage(`http://127.0.0.1:${closed}`, randomUUID()))
    expect(cacheDown).toMatchObject({ name: 'EmbeddingCacheUnavailable' })
    expect(dependencyFailure(cacheDown)).toMatchObject({ dependency: 'embedding-cache' })

    expect(dependencyFailure(new Error('boom'))).toBeUndefined()
    expect(dependencyFailure('a string')).toBeUndefined()
  })
})

describe('PostgreSQL stopped under the running services', () => {
  it('serves before the outage', async () => {
    await http.get('/healthz').expect(200)
    const res = await http.post('/v1/recommendations').send({ datasetId, userId: 'u1', k: 3 }).expect(200)
    expect(res.body.items).toHaveLength(3)
    await cacheHttp.get('/v1/backbones').expect(200)
  })

  it('documents the 503 on every route', async () => {
    const spec = (await http.get('/docs/json').expect(200)).body
    for (const [route, method] of [
      ['/v1/datasets', 'post'],
      ['/v1/datasets', 'get'],
      ['/v1/recommendations', 'post'],
    ] as const) {
      const r503 = spec.paths[route][method].responses['503']
      expect(r503, `${method} ${route}`).toBeDefined()
      expect(r503.headers['retry-after']).toBeDefined()
    }
  })

  it('an import in flight when the server stops answers 503 and leaves nothing behind', async () => {
    rowsBefore = { datasets: await countRows('datasets'), items: await countRows('items') }
    // Hold the import inside its transaction (it waits for the items table) so that the stop
    // surely lands mid-import.
    const locker = new pg.Client({ connectionString: dbUrl })
    locker.on('error', () => undefined) // the stop ends this session too
    await locker.connect()
    await locker.query('BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE')
    const inflight = started(http.post('/v1/datasets').send({ name: 'in-flight', itemsTsv, usersTsv }))
    const watcher = new pg.Client({ connectionString: dbUrl })
    await watcher.connect()
    try {
      await until(async () => ((await watcher.query(`SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query ILIKE '%items%'`)).rowCount ? true : undefined), 20_000, 'the import to wait for the lock')
    } finally {
      await watcher.end()
    }
    await pgServer!.stop('fast')
    // its rows are counted after the restart, in the recovery test
    expectUnavailable(await inflight)
  })

  it('answers 503 DEPENDENCY_UNAVAILABLE naming postgres while it is down', async () => {
    expect(await pgServer!.running()).toBe(false)
    expectUnavailable(await http.post('/v1/recommendations').send({ datasetId, userId: 'u1', k: 3 }))
    // a history needs no database: the model is in memory
    await http.post('/v1/recommendations').send({ datasetId, history: ['I1', 'I2', 'I3'], k: 3 }).expect(200)
    expectUnavailable(await http.post('/v1/datasets').send({ name: 'during-outage', itemsTsv, usersTsv }))
    expectUnavailable(await http.get('/v1/datasets'))
    expectUnavailable(await http.get(`/v1/datasets/${datasetId}`))
    // the embedding cache shares the error handling
    expectUnavailable(await cacheHttp.get('/v1/backbones'))
  })

  it('/healthz answers 503 at once, naming postgres', async () => {
    for (const [name, target] of [
      ['api', http],
      ['embedding-cache', cacheHttp],
    ] as const) {
      const t0 = performance.now()
      const res = await target.get('/healthz')
      expect(performance.now() - t0, name).toBeLessThan(1500)
      expect(res.status, name).toBe(503)
      expect(Number(res.headers['retry-after'])).toBeGreaterThan(0)
      expect(res.body).toMatchObject({ status: 'degraded', postgres: { ok: false, error: expect.any(String) }, redis: { ok: true }, unavailable: ['postgres'] })
      expect(res.body.postgres.error).not.toMatch(/\n/)
    }
  })

  it('recovers once PostgreSQL is back, in the same process', async () => {
    await pgServer!.start()
    // the first request after the restart already succeeds: broken pool connections were dropped
    const rec = await http.post('/v1/recommendations').send({ datasetId, userId: 'u1', k: 3 })
    expect(rec.status, JSON.stringify(rec.body)).toBe(200)
    await http.get('/healthz').expect(200)
    await cacheHttp.get('/healthz').expect(200)
    await cacheHttp.get('/v1/backbones').expect(200)
    const list = await http.get('/v1/datasets').expect(200)
    // the interrupted import and the ones refused during the outage left no rows
    expect(list.body.datasets.map((d: { name: string }) => d.name)).toEqual(['tiny'])
    expect(await countRows('datasets')).toBe(rowsBefore.datasets)
    expect(await countRows('items')).toBe(rowsBefore.items)
    const again = await http.post('/v1/datasets').send({ name: 'after-outage', itemsTsv, usersTsv }).expect(201)
    expect(again.body).toMatchObject({ name: 'after-outage', numItems: ITEMS.length, numUsers: 8 })
  })
})

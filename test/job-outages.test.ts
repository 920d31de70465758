// Outages under running training jobs. Each test starts the dependency it breaks as its own
// instance (a redis-server or a PostgreSQL of its own); the machine's shared ones are never touched.
//  - Redis restarted without persistence, a job running and one queued: both complete (the
//    reconciler re-enqueues what Redis forgot; the running job's failed progress reports are
//    logged, not fatal).
//  - PostgreSQL down for 8 s in the middle of training: the job completes, with no epoch lost or
//    repeated, instead of burning its attempts in two seconds and staying "running" for ever.
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import request from 'supertest'
import { ensureDatabaseExists, withDatabase } from '@iisan/config'
import { initBackend } from '@iisan/model'
import { sampleDataset } from '@iisan/pipeline'
import { applyMigrations } from '@iisan/storage'
import { MIGRATIONS_DIR } from './helpers/db.ts'
import { startPgInstance } from './helpers/pg-instance.ts'
import { createTestApi, createTestPlatform, startService, stopService, until, waitForJob, WORKER_ENTRY } from './helpers/platform.ts'
import { startRedisInstance } from './helpers/redis-instance.ts'

// the in-process API loads each activated model
beforeAll(() => initBackend({ prefer: 'wasm' }))

const cleanups: (() => Promise<unknown>)[] = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch((e) => console.error('cleanup failed', e))
})

/** The API in-process and one worker process on `env`; a small Scientific slice imported. */
async function stack(name: string, env: Record<string, string>) {
  const api = await createTestApi(env, `${name}-api`)
  await api.app.ready()
  cleanups.push(() => api.close())
  const http = request(api.app.server)
  const worker = startService(WORKER_ENTRY, env)
  cleanups.push(() => stopService(worker))
  const slice = sampleDataset(300)
  const dataset = (await http.post('/v1/datasets').send({ name, itemsTsv: slice.itemsTsv, usersTsv: slice.usersTsv }).expect(201)).body
  const submit = async (maxEpochs: number) =>
    (await http.post('/v1/training-jobs').send({ datasetId: dataset.id, method: 'sasrec-id', config: { maxEpochs, patience: 100, batchSize: 16 } }).expect(202)).body.id as string
  const job = async (id: string) => (await http.get(`/v1/training-jobs/${id}`)).body
  const inEpoch = (id: string, epoch: number) =>
    until(async () => {
      const body = await job(id)
      return body.status === 'running' && body.epochs.length >= epoch ? true : undefined
    }, 120_000, `job ${id} past epoch ${epoch}`)
  return { http, submit, job, inEpoch }
}

describe('Redis restarted without persistence', () => {
  it('loses neither the running job nor the queued one', async () => {
    const redis = await startRedisInstance()
    cleanups.push(() => redis.destroy())
    const platform = await createTestPlatform('redis-restart')
    cleanups.push(() => platform.close())
    const s = await stack('redis-restart', { ...platform.env, REDIS_URL: redis.url })
    const running = await s.submit(6)
    const queued = await s.submit(2)
    await s.inEpoch(running, 1)
    expect((await s.job(queued)).status).toBe('queued')

    await redis.kill()
    await new Promise((r) => setTimeout(r, 2000))
    await redis.start()

    for (const id of [running, queued]) {
      const { job } = await waitForJob(async (p) => (await s.http.get(p)).body, id, { timeoutMs: 240_000 })
      expect(job.status).toBe('completed')
      expect(job.epochs.map((e: { epoch: number }) => e.epoch)).toEqual(Array.from({ length: job.epochs.length }, (_, i) => i + 1))
    }
    // the running job was not restarted: one attempt
    expect((await s.job(running)).attempts).toBe(1)
  }, 420_000)
})

describe('PostgreSQL down during training', () => {
  it('completes the job once the database is back, without repeating or losing an epoch', async () => {
    const pg = await startPgInstance()
    cleanups.push(() => pg.destroy())
    const url = withDatabase(pg.url, 'iisan_training_outage')
    await ensureDatabaseExists(url)
    await applyMigrations(url, MIGRATIONS_DIR)
    const platform = await createTestPlatform('pg-outage')
    cleanups.push(() => platform.close())
    const s = await stack('pg-outage', { ...platform.env, DATABASE_URL: url })
    const id = await s.submit(6)
    await s.inEpoch(id, 1)

    await pg.stop('fast')
    await new Promise((r) => setTimeout(r, 8000))
    await pg.start()

    const { job } = await waitForJob(async (p) => (await s.http.get(p)).body, id, { timeoutMs: 300_000 })
    expect(job.status).toBe('completed')
    expect(job.epochs.map((e: { epoch: number }) => e.epoch)).toEqual([1, 2, 3, 4, 5, 6])
    expect(job.modelVersionId).toEqual(expect.any(String))
  }, 480_000)
})

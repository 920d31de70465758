// Process lifecycle of the three services, as `npm start` runs them: each answers /healthz and
// exits 0 on SIGTERM; a worker stopped in the middle of a training job hands the job back, and
// another worker trains it to completion.
import { spawn } from 'node:child_process'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import request from 'supertest'
import { initBackend } from '@iisan/model'
import { sampleDataset } from '@iisan/pipeline'
import { createTestApi, createTestPlatform, exited, freePort, startService, stopService, until, waitForJob, WORKER_ENTRY, type TestPlatform } from './helpers/platform.ts'

let platform: TestPlatform
let api: Awaited<ReturnType<typeof createTestApi>>
let http: ReturnType<typeof request>

beforeAll(async () => {
  await initBackend({ prefer: 'wasm' })
  platform = await createTestPlatform('lifecycle')
  api = await createTestApi(platform.env, 'lifecycle-api')
  await api.app.ready()
  http = request(api.app.server)
})

afterAll(async () => {
  await api?.close()
  await platform?.close()
})

async function healthy(port: number) {
  return until(
    async () => {
      try {
        const res = await fetch(`http://127.0.0.1:${port}/healthz`)
        return res.status === 200 ? await res.json() : undefined
      } catch {
        return undefined
      }
    },
    60_000,
    `health on port ${port}`,
  )
}

describe('services', () => {
  it.each([
    ['api', 'services/api/src/main.ts', 'PORT'],
    ['embedding-cache', 'services/embedding-cache/src/main.ts', 'EMBEDDING_CACHE_PORT'],
    ['worker', WORKER_ENTRY, 'WORKER_HEALTH_PORT'],
  ])('%s reports Postgres and Redis on /healthz and exits 0 on SIGTERM', async (_name, entry, portVariable) => {
    const port = await freePort()
    const child = startService(entry, { ...platform.env, [portVariable]: String(port), HOST: '127.0.0.1' })
    const body = await healthy(port)
    expect(body).toMatchObject({ status: 'ok', postgres: { ok: true }, redis: { ok: true } })
    const metricsText = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
    expect(metricsText).toContain(`service="${_name}"`)
    expect(metricsText).toMatch(/http_requests_total\{[^}]*route="\/healthz"/)
    expect(await stopService(child, 'SIGTERM')).toBe(0)
  })

  it('refuses to start on bad configuration with a message naming the variable, not a stack trace', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'services/api/src/main.ts'], { env: { ...process.env, ...platform.env, PORT: 'eighty' }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stderr = ''
    child.stderr!.on('data', (d) => (stderr += d))
    child.stdout!.resume()
    expect(await exited(child)).toBe(1)
    expect(stderr).toMatch(/PORT="eighty"/)
    expect(stderr).not.toMatch(/\n\s+at /)
  })
})

describe('worker shutdown during training', () => {
  it('puts the job back in the queue, and the next worker completes it', async () => {
    const slice = sampleDataset(300)
    const dataset = (await http.post('/v1/datasets').send({ name: 'lifecycle', itemsTsv: slice.itemsTsv, usersTsv: slice.usersTsv }).expect(201)).body
    const job = (await http.post('/v1/training-jobs').send({ datasetId: dataset.id, method: 'sasrec-id', config: { maxEpochs: 20, patience: 20, batchSize: 8 } }).expect(202)).body
    const first = startService(WORKER_ENTRY, platform.env)
    await until(async () => {
      const body = (await http.get(`/v1/training-jobs/${job.id}`)).body
      return body.status === 'running' && body.progress?.phase === 'training' && body.epochs.length >= 1 ? true : undefined
    }, 90_000, 'a first epoch')
    expect(await stopService(first, 'SIGTERM')).toBe(0)
    const handedBack = (await http.get(`/v1/training-jobs/${job.id}`)).body
    expect(handedBack.status).toBe('queued')
    expect(handedBack.modelVersionId).toBeNull()

    const second = startService(WORKER_ENTRY, { ...platform.env, WORKER_HEALTH_PORT: String(await freePort()) })
    try {
      const { job: done } = await waitForJob(async (p) => (await http.get(p)).body, job.id, { timeoutMs: 180_000 })
      expect(done.status).toBe('completed')
      expect(done.modelVersionId).toEqual(expect.any(String))
      // one model version: the interrupted attempt wrote nothing
      expect(await platform.db.prisma.modelVersion.count()).toBe(1)
      // the second attempt carried on from the first one's last checkpoint, not from epoch 1
      expect(done.attempts).toBe(2)
      expect(done.epochs.map((e: { epoch: number }) => e.epoch)).toEqual(Array.from({ length: done.epochs.length }, (_, i) => i + 1))
    } finally {
      await stopService(second)
    }
  }, 300_000)
})

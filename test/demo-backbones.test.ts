// Wherever the demo backbones are in use, the platform says so, and how to get real ones: the
// embedding cache's and the worker's start, the training job's progress, the model version (by id
// and in the list). Per modality: here the text backbone is the demo BERT and the image backbone
// an ordinary checkpoint folder (a reference fixture), so only "text" may be named.
import { spawn, type ChildProcess } from 'node:child_process'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import request from 'supertest'
import { initBackend } from '@iisan/model'
import { sampleDataset } from '@iisan/pipeline'
import { CACHE_ENTRY, WORKER_ENTRY, createTestApi, createTestPlatform, freePort, stopService, trainAndWait, until, type TestPlatform } from './helpers/platform.ts'
import { REPO_ROOT } from './helpers/db.ts'
import { fixtureDir } from './fixtures-gen/backbone-fixtures.ts'

let platform: TestPlatform
let api: Awaited<ReturnType<typeof createTestApi>>
let http: ReturnType<typeof request>
const services: { child: ChildProcess; output: () => string }[] = []
let cacheService: (typeof services)[number]
let workerService: (typeof services)[number]
let datasetId: string

/** A service as its own process (as `npm start` runs it), its log kept for the assertions. */
function start(entry: string, env: Record<string, string>) {
  const child = spawn(process.execPath, ['--import', 'tsx', entry], { cwd: REPO_ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let log = ''
  child.stdout!.on('data', (d: Buffer) => (log += d.toString()))
  child.stderr!.on('data', (d: Buffer) => (log += d.toString()))
  const service = { child, output: () => log }
  services.push(service)
  return service
}

/** The pino line (JSON) with this message, once it has been written. */
const logLine = (service: { output: () => string }, msg: RegExp) =>
  until(
    async () =>
      service
        .output()
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as { level: number; msg: string; demoBackbones?: string[] })
        .find((l) => msg.test(l.msg)),
    60_000,
    `log line ${msg}`,
  )

beforeAll(async () => {
  // the API serves the trained models in this process
  await initBackend({ prefer: 'wasm' })
  platform = await createTestPlatform('demo-backbones', { IMAGE_BACKBONE: fixtureDir('vit-tiny-a'), LOG_LEVEL: 'info' })
  const { env } = platform
  env.EMBEDDING_CACHE_PORT = String(await freePort())
  env.EMBEDDING_CACHE_URL = `http://127.0.0.1:${env.EMBEDDING_CACHE_PORT}`
  cacheService = start(CACHE_ENTRY, env)
  await logLine(cacheService, /^embedding cache ready$/)
  workerService = start(WORKER_ENTRY, env)
  api = await createTestApi({ ...env, LOG_LEVEL: 'warn' }, 'api-demo-backbones')
  await api.app.ready()
  http = request(api.app.server)
  const slice = sampleDataset(150)
  datasetId = (await http.post('/v1/datasets').send({ name: 'scientific-150', itemsTsv: slice.itemsTsv, usersTsv: slice.usersTsv }).expect(201)).body.id
}, 120_000)

afterAll(async () => {
  for (const s of services) await stopService(s.child)
  await api?.close()
  await platform?.close()
})

describe('demo backbones are named wherever they are used', () => {
  it('in the start log of the embedding cache and of the worker', async () => {
    for (const service of [cacheService, workerService]) {
      const line = await logLine(service, /demo .*backbone is in use/)
      expect(line.level).toBe(40) // warn
      expect(line.demoBackbones).toEqual(['text'])
      expect(line.msg).toContain('npm run backbone -- download bert-base-uncased')
      expect(line.msg).toContain('TEXT_BACKBONE=bert-base-uncased')
      expect(line.msg).not.toContain('vit-base')
    }
  })

  it('in the training job and the model version it writes', async () => {
    const { job } = await trainAndWait(http, { datasetId, method: 'iisan', config: { maxEpochs: 1, patience: 1, batchSize: 32 } })
    expect(job.progress.demoBackbones).toEqual(['text'])
    expect(job.progress.warnings).toHaveLength(1)
    expect(job.progress.warnings[0]).toMatch(/demo text \(BERT\) backbone is in use.*real checkpoints.*npm run backbone -- download bert-base-uncased/)

    const mv = (await http.get(`/v1/model-versions/${job.modelVersionId}`).expect(200)).body
    expect(mv.demoBackbones).toEqual(['text'])
    expect(mv.warnings).toEqual(job.progress.warnings)
    const listed = (await http.get(`/v1/model-versions?datasetId=${datasetId}`).expect(200)).body.modelVersions
    expect(listed.find((v: { id: string }) => v.id === job.modelVersionId)).toMatchObject({ demoBackbones: ['text'], warnings: mv.warnings })
  })

  it('and nowhere else: an ID-SASRec version uses no backbone', async () => {
    const { job } = await trainAndWait(http, { datasetId, method: 'sasrec-id', config: { maxEpochs: 1, patience: 1 } })
    expect(job.progress.warnings).toBeUndefined()
    const mv = (await http.get(`/v1/model-versions/${job.modelVersionId}`).expect(200)).body
    expect(mv).toMatchObject({ demoBackbones: [], warnings: [] })
  })
})

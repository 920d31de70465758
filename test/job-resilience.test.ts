// Training jobs survive what real deployments do to them: a worker killed mid-epoch, a queue that
// forgets its jobs, BullMQ giving up on a job. PostgreSQL stays the record: the job's row, its
// heartbeat and its last checkpoint; the reconciler makes the queue agree with it again.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import request from 'supertest'
import { UnrecoverableError, Worker } from 'bullmq'
import { SequentialRecommender, buildProtocol, initBackend, parseTrainingState, readCheckpoint, sasRecIdConfig, serializeTrainingState, tf, train, TrainingCancelled, type TrainingState } from '@iisan/model'
import { reconcileTrainingJobs, sampleDataset } from '@iisan/pipeline'
import { QUEUE_NAMES, createTrainingQueue, enqueueTrainingJob, type TrainingQueue } from '@iisan/queue'
import { JOB_LIVENESS, MAX_JOB_STARTS, claimTrainingJob, createTrainingJob, getModelVersion, heartbeatTrainingJob, requestTrainingJobCancel } from '@iisan/storage'
import { createTestApi, createTestPlatform, freePort, startService, stopService, until, waitForJob, WORKER_ENTRY, type TestPlatform } from './helpers/platform.ts'

let platform: TestPlatform
let queue: TrainingQueue

beforeAll(async () => {
  platform = await createTestPlatform('resilience')
  queue = createTrainingQueue(platform.redis, platform.prefix)
})

afterAll(async () => {
  await queue?.close()
  await platform?.close()
})

/** Next item = previous item + 1 (mod N): learnable, so the weights move every epoch. */
function syntheticProtocol(users: number, items: number) {
  const itemKeys = Array.from({ length: items }, (_, i) => `i${i}`)
  const sequences = Array.from({ length: users }, (_, u) => ({ key: `u${u}`, items: Array.from({ length: 8 }, (_, t) => itemKeys[(u * 7 + t) % items]) }))
  return buildProtocol(sequences, itemKeys, { maxSeqLen: 5, minInteractions: 5 })
}

const TRAIN = { maxEpochs: 5, batchSize: 16, lrItem: 1e-2, lrUser: 1e-2, patience: 100, seed: 11 }

async function finalWeights(resumeAfter?: number) {
  const data = syntheticProtocol(96, 40)
  const config = sasRecIdConfig(data.numItems, { embeddingDim: 16, numBlocks: 1, numHeads: 2, maxSeqLen: 5, dropout: 0.2, seed: 5 })
  let state: TrainingState | undefined
  if (resumeAfter !== undefined) {
    // a first run that is stopped after `resumeAfter` epochs, keeping its checkpoints as bytes
    const first = new SequentialRecommender(config)
    let saved: Uint8Array | undefined
    await expect(
      train(first, data, TRAIN, {
        onCheckpoint: (s) => {
          saved = serializeTrainingState(s)
        },
        shouldCancel: () => saved !== undefined && parseTrainingState(saved).epoch >= resumeAfter,
      }),
    ).rejects.toBeInstanceOf(TrainingCancelled)
    first.dispose()
    state = parseTrainingState(saved!)
    expect(state.epoch).toBe(resumeAfter)
  }
  const model = new SequentialRecommender(config)
  const result = await train(model, data, TRAIN, { resumeFrom: state })
  const weights = model.params.snapshot()
  model.dispose()
  return { weights, result }
}

describe.each(['wasm', 'cpu'] as const)('resuming from a checkpoint (%s backend)', (backend) => {
  it('reaches the same final weights and metrics as an uninterrupted run with the same seed', async () => {
    await initBackend({ prefer: 'wasm' })
    await tf.setBackend(backend)
    expect(tf.getBackend()).toBe(backend)
    const straight = await finalWeights()
    const resumed = await finalWeights(2)
    expect(resumed.result.epochs.map((e) => e.epoch)).toEqual([1, 2, 3, 4, 5])
    expect(resumed.result.bestEpoch).toBe(straight.result.bestEpoch)
    expect(resumed.result.test.ndcg10).toBeCloseTo(straight.result.test.ndcg10, 6)
    for (const [name, { values }] of straight.weights) {
      const other = resumed.weights.get(name)!.values
      let worst = 0
      for (let i = 0; i < values.length; i++) worst = Math.max(worst, Math.abs(values[i] - other[i]))
      expect(worst, name).toBeLessThan(1e-5)
    }
    // and the run did learn: a resumed run that silently restarted would still differ from this
    const initial = new SequentialRecommender(sasRecIdConfig(41, { embeddingDim: 16, numBlocks: 1, numHeads: 2, maxSeqLen: 5, dropout: 0.2, seed: 5 }))
    const before = initial.params.snapshot()
    initial.dispose()
    const moved = [...straight.weights].some(([name, { values }]) => values.some((v, i) => Math.abs(v - before.get(name)!.values[i]) > 1e-3))
    expect(moved).toBe(true)
  })
})

describe('job ownership in PostgreSQL', () => {
  async function queuedJob() {
    const dataset = await platform.db.prisma.dataset.create({ data: { name: `own-${Math.random()}` } })
    return createTrainingJob(platform.db.prisma, { datasetId: dataset.id, method: 'sasrec-id', config: {} })
  }
  const ageHeartbeat = (id: string, seconds: number) =>
    platform.db.prisma.$executeRaw`UPDATE training_jobs SET heartbeat_at = now() - make_interval(secs => ${seconds}) WHERE id = ${id}::uuid`

  it('lets one worker hold a job, and another take it over only once the holder stops beating', async () => {
    const job = await queuedJob()
    const first = await claimTrainingJob(platform.db.prisma, job.id, 'worker-a')
    expect(first && 'claimed' in first && first.claimed.attempts).toBe(1)
    expect(await claimTrainingJob(platform.db.prisma, job.id, 'worker-b')).toHaveProperty('heldElsewhere')
    expect(await heartbeatTrainingJob(platform.db.prisma, job.id, 'worker-a')).toBe(true)

    await ageHeartbeat(job.id, JOB_LIVENESS.staleMs / 1000 + 1)
    const taken = await claimTrainingJob(platform.db.prisma, job.id, 'worker-b')
    expect(taken && 'claimed' in taken && taken.claimed).toMatchObject({ workerId: 'worker-b', attempts: 2 })
    // the old holder learns it has lost the job at its next heartbeat
    expect(await heartbeatTrainingJob(platform.db.prisma, job.id, 'worker-a')).toBe(false)
  })

  it('cancels at once a running job that no live worker holds, and only flags one that is held', async () => {
    const held = await queuedJob()
    await claimTrainingJob(platform.db.prisma, held.id, 'worker-a')
    expect(await requestTrainingJobCancel(platform.db.prisma, held.id)).toMatchObject({ status: 'running', cancelRequested: true })

    const abandoned = await queuedJob()
    await claimTrainingJob(platform.db.prisma, abandoned.id, 'worker-a')
    await ageHeartbeat(abandoned.id, 60)
    const cancelled = await requestTrainingJobCancel(platform.db.prisma, abandoned.id)
    expect(cancelled).toMatchObject({ status: 'cancelled', workerId: null })
    expect(cancelled.finishedAt).toBeInstanceOf(Date)
  })

  it('shows a running job without a live worker as stale in the API, and the API cancels it at once', async () => {
    const api = await createTestApi(platform.env, 'resilience-stale-api')
    await api.app.ready()
    try {
      const http = request(api.app.server)
      const job = await queuedJob()
      await claimTrainingJob(platform.db.prisma, job.id, 'worker-a')
      expect((await http.get(`/v1/training-jobs/${job.id}`).expect(200)).body).toMatchObject({ status: 'running', stale: false, attempts: 1, heartbeatAt: expect.any(String) })
      await ageHeartbeat(job.id, 120)
      const shown = (await http.get(`/v1/training-jobs/${job.id}`).expect(200)).body
      expect(shown).toMatchObject({ status: 'running', stale: true })
      expect(Date.now() - Date.parse(shown.heartbeatAt)).toBeGreaterThan(100_000)
      expect((await http.post(`/v1/training-jobs/${job.id}/cancel`).expect(202)).body).toMatchObject({ status: 'cancelled', stale: false })
    } finally {
      await api.close()
    }
  })
})

describe('the reconciler', () => {
  async function jobIn(status: 'queued' | 'running', heartbeatAgeSeconds = 0, attempts = 1) {
    const dataset = await platform.db.prisma.dataset.create({ data: { name: `rec-${Math.random()}` } })
    const job = await createTrainingJob(platform.db.prisma, { datasetId: dataset.id, method: 'sasrec-id', config: {} })
    await platform.db.prisma.$executeRaw`
      UPDATE training_jobs SET status = ${status}, attempts = ${attempts}, worker_id = ${status === 'running' ? 'gone' : null},
             heartbeat_at = now() - make_interval(secs => ${heartbeatAgeSeconds}) WHERE id = ${job.id}::uuid`
    return job.id
  }
  const row = (id: string) => platform.db.prisma.trainingJob.findUniqueOrThrow({ where: { id } })

  /** Fail queue entries the way a worker does, without the database hearing of it. */
  async function failInQueue(ids: string[], attempts: number) {
    for (const id of ids) await enqueueTrainingJob(queue, id, { attempts })
    const worker = new Worker(
      QUEUE_NAMES.training,
      async () => {
        throw attempts === 1 ? new Error('database unreachable') : new UnrecoverableError('the row was never updated')
      },
      { connection: platform.redis.duplicate(), prefix: platform.prefix },
    )
    await until(async () => ((await queue.getFailedCount()) >= ids.length ? true : undefined), 20_000, 'queue entries to fail')
    await worker.close()
  }

  it('re-enqueues what the queue lost, fails what BullMQ gave up on, and leaves held jobs alone', async () => {
    const lostQueued = await jobIn('queued')
    const abandoned = await jobIn('running', 60)
    const held = await jobIn('running', 0)
    const exhausted = await jobIn('queued')
    const failedEarly = await jobIn('queued')
    const crashLooping = await jobIn('running', 60, MAX_JOB_STARTS)
    await failInQueue([exhausted], 1)
    await failInQueue([failedEarly], 5)

    const report = await reconcileTrainingJobs(platform.db.prisma, queue)
    expect(report.requeued.sort()).toEqual([lostQueued, abandoned, failedEarly].sort())
    expect(report.failed.sort()).toEqual([exhausted, crashLooping].sort())

    for (const id of [lostQueued, abandoned, failedEarly]) {
      expect((await row(id)).status).toBe('queued')
      expect(await (await queue.getJob(id))!.getState()).toBe('waiting')
    }
    expect(await row(exhausted)).toMatchObject({ status: 'failed', error: expect.stringContaining('database unreachable') })
    expect(await row(crashLooping)).toMatchObject({ status: 'failed', error: expect.stringContaining(`${MAX_JOB_STARTS} times`) })
    expect(await row(held)).toMatchObject({ status: 'running', workerId: 'gone' })
    expect(await queue.getJob(held)).toBeUndefined()

    // a second pass finds nothing more to do
    const again = await reconcileTrainingJobs(platform.db.prisma, queue)
    expect(again.requeued).toEqual([])
    expect(again.failed).toEqual([])
    await queue.obliterate({ force: true })
  })
})

describe('a worker killed in the middle of training', () => {
  it('loses at most the epoch in hand: another worker carries on from the checkpoint to the weights of an uninterrupted run', async () => {
    await initBackend({ prefer: 'wasm' })
    await tf.setBackend('wasm')
    const api = await createTestApi(platform.env, 'resilience-api')
    await api.app.ready()
    const http = request(api.app.server)
    // small checkpoint parts: the resumed state is reassembled from many rows
    const env = { ...platform.env, BLOB_PART_BYTES: '65536' }
    const workers = [startService(WORKER_ENTRY, env), startService(WORKER_ENTRY, { ...env, WORKER_HEALTH_PORT: String(await freePort()) })]
    try {
      const slice = sampleDataset(300)
      const dataset = (await http.post('/v1/datasets').send({ name: 'killed', itemsTsv: slice.itemsTsv, usersTsv: slice.usersTsv }).expect(201)).body
      const config = { maxEpochs: 6, patience: 100, batchSize: 16, seed: 3 }
      const job = (await http.post('/v1/training-jobs').send({ datasetId: dataset.id, method: 'sasrec-id', config }).expect(202)).body

      // kill the holder once it has checkpointed two epochs and is into the third
      const holder = await until(
        async () => {
          const row = await platform.db.prisma.trainingJob.findUnique({ where: { id: job.id }, include: { checkpoint: { select: { epoch: true } } } })
          return row?.checkpoint && row.checkpoint.epoch >= 2 && row.workerId ? row.workerId : undefined
        },
        150_000,
        'the second checkpoint',
      )
      const pid = Number(holder.split(':')[1])
      const victim = workers.find((w) => w.pid === pid)!
      expect(victim).toBeDefined()
      const killedAt = Date.now()
      await stopService(victim, 'SIGKILL')
      const stale = (await http.get(`/v1/training-jobs/${job.id}`)).body
      expect(stale.status).toBe('running')
      const live = await platform.db.prisma.trainingCheckpoint.findUniqueOrThrow({ where: { jobId: job.id }, select: { stateBlob: { select: { partCount: true } } } })
      expect(live.stateBlob.partCount).toBeGreaterThan(1)

      // the other worker takes it over within the lease (≈ 25 s), not BullMQ's old two minutes
      await until(
        async () => {
          const row = await platform.db.prisma.trainingJob.findUnique({ where: { id: job.id } })
          return row && row.attempts === 2 && row.status === 'running' ? true : undefined
        },
        45_000,
        'the takeover',
      )
      const pickupSeconds = (Date.now() - killedAt) / 1000
      const { job: done } = await waitForJob(async (p) => (await http.get(p)).body, job.id, { timeoutMs: 150_000 })
      expect(done.status).toBe('completed')
      expect(done.progress.phase).toBe('done')
      const epochs = done.epochs.map((e: { epoch: number }) => e.epoch)
      expect(epochs).toEqual([1, 2, 3, 4, 5, 6])
      // no checkpoint left behind, one version
      expect(await platform.db.prisma.trainingCheckpoint.count({ where: { jobId: job.id } })).toBe(0)
      // every stored blob belongs to a row: the checkpoints' states went with them
      const [{ ownerless }] = await platform.db.prisma.$queryRaw<{ ownerless: number }[]>`
        SELECT count(*)::int AS ownerless FROM blobs b
        WHERE NOT EXISTS (SELECT 1 FROM model_versions m WHERE m.weights_blob_id = b.id) AND NOT EXISTS (SELECT 1 FROM training_checkpoints c WHERE c.state_blob_id = b.id)`
      expect(ownerless).toBe(0)
      expect(await platform.db.prisma.modelVersion.count({ where: { jobId: job.id } })).toBe(1)

      // the same job without a kill, for the weights it should have reached
      const straight = (await http.post('/v1/training-jobs').send({ datasetId: dataset.id, method: 'sasrec-id', config }).expect(202)).body
      const { job: straightDone } = await waitForJob(async (p) => (await http.get(p)).body, straight.id, { timeoutMs: 150_000 })
      const weights = async (modelVersionId: string) =>
        readCheckpoint((await getModelVersion(platform.db.prisma, modelVersionId))!.weights).values
      const [resumedWeights, straightWeights] = [await weights(done.modelVersionId), await weights(straightDone.modelVersionId)]
      for (const [name, { values }] of straightWeights) {
        const other = resumedWeights.get(name)!.values
        let worst = 0
        for (let i = 0; i < values.length; i++) worst = Math.max(worst, Math.abs(values[i] - other[i]))
        expect(worst, name).toBeLessThan(1e-5)
      }
      console.info(`worker SIGKILL: taken over after ${pickupSeconds.toFixed(1)} s`)
    } finally {
      for (const w of workers) await stopService(w)
      await api.close()
    }
  }, 400_000)
})

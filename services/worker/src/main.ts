// Training worker: a BullMQ consumer of the `training` queue. Run as many replicas as you like
// against the same Redis and Postgres; each takes one job at a time.
import Fastify from 'fastify'
import { UnrecoverableError } from 'bullmq'
import { createLogger, loadConfigOrExit } from '@iisan/config'
import { initBackend } from '@iisan/model/backend'
import { loadStatesFromCache, runTrainingJob, type JobProgress } from '@iisan/pipeline'
import { QUEUE_NAMES, createRedisConnection, createTrainingWorker, publishModelActivated } from '@iisan/queue'
import { createPrisma } from '@iisan/storage'
import { healthCheck, metrics } from '@iisan/http'
import { Counter, Gauge } from 'prom-client'
import { Type } from '@sinclair/typebox'
import { onShutdown } from '@iisan/config/shutdown'

const config = loadConfigOrExit()
const logger = createLogger('worker', config)
await initBackend({ logger, prefer: config.tfBackend })
const prisma = createPrisma(config.databaseUrl)
const connection = createRedisConnection(config.redisUrl)
const publisher = createRedisConnection(config.redisUrl)
let shuttingDown = false
// what /metrics reports about the job in hand (set from its progress)
let current: JobProgress | null = null
let finishedJobs: Counter | undefined

const worker = createTrainingWorker(
  connection,
  config.queuePrefix,
  async ({ trainingJobId }, job) => {
    const log = logger.child({ trainingJobId })
    log.info('training job started')
    const outcome = await runTrainingJob(prisma, trainingJobId, {
      onProgress: (p: JobProgress) => {
        current = p
        return job.updateProgress({ ...p })
      },
      isInterrupted: () => shuttingDown,
      // IISAN: the embedding cache builds (or resumes) the dataset's states, then streams them
      loadStates: (datasetId, data, report, shouldCancel, sideLayers) =>
        loadStatesFromCache(config.embeddingCacheUrl, datasetId, data, report, { isCancelled: shouldCancel, sideLayers }),
      onActivated: async (datasetId, modelVersionId) => {
        await publishModelActivated(publisher, config.queuePrefix, { datasetId, modelVersionId })
      },
      log: (message, fields) => log.info(fields ?? {}, message),
    })
    log.info({ outcome }, 'training job finished')
    current = null
    finishedJobs?.inc({ status: outcome.status })
    // Interrupted by shutdown: fail this attempt so BullMQ hands the job out again.
    if (outcome.status === 'interrupted') throw new Error('worker shut down during training; the job will be retried')
    // A real failure (bad data, bad config) would fail again: do not retry it.
    if (outcome.status === 'failed') throw new UnrecoverableError(outcome.error)
    return outcome
  },
  { lockDuration: 120_000 },
)
worker.on('failed', (job, err) => logger.warn({ jobId: job?.id, err: err.message }, 'training attempt failed'))

const health = Fastify({ loggerInstance: logger.child({ component: 'health' }) })
await health.register(
  metrics({
    service: 'worker',
    register: (registry) => {
      finishedJobs = new Counter({ name: 'iisan_training_jobs_finished_total', help: 'training jobs finished by this worker, by outcome', labelNames: ['status'], registers: [registry] })
      new Gauge({
        name: 'iisan_training_progress_ratio',
        help: 'progress of the job in hand (0..1; absent when idle)',
        registers: [registry],
        collect() {
          this.reset()
          if (current) this.set(current.fraction)
        },
      })
      new Gauge({
        name: 'iisan_training_steps_per_second',
        help: 'training throughput of the last finished epoch of the job in hand',
        registers: [registry],
        collect() {
          this.reset()
          if (current?.stepsPerSecond) this.set(current.stepsPerSecond)
        },
      })
    },
  }),
)
await health.register(
  healthCheck({
    prisma,
    redis: connection,
    summary: 'Liveness and dependencies: PostgreSQL, Redis, training worker',
    extra: {
      schema: { worker: Type.Object({ running: Type.Boolean() }) },
      check: () => {
        const running = worker.isRunning()
        return { ok: running, fields: { worker: { running } } }
      },
    },
  }),
)
await health.listen({ port: config.workerHealthPort, host: config.host })
logger.info({ queue: QUEUE_NAMES.training, healthPort: config.workerHealthPort }, 'training worker ready')

onShutdown(logger, async () => {
  shuttingDown = true
  await worker.close()
  await health.close()
  await Promise.all([connection.quit(), publisher.quit(), prisma.$disconnect()])
})

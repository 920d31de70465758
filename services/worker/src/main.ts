// Training worker: a BullMQ consumer of the `training` queue. Run as many replicas as you like
// against the same Redis and Postgres; each takes one job at a time.
import Fastify from 'fastify'
import { UnrecoverableError } from 'bullmq'
import { createLogger, loadConfigOrExit } from '@iisan/config'
import { initBackend } from '@iisan/model/backend'
import { datasetContentLoader, defaultWorkerId, loadStatesFromCache, reconcileTrainingJobs, runTrainingJob, withReconcileLock, type JobProgress } from '@iisan/pipeline'
import { resolveBackboneDirs } from '@iisan/embedding-cache/registry'
import {
  QUEUE_NAMES,
  TRAINING_WORKER_LEASE,
  TrainingRetry,
  createRedisConnection,
  createTrainingQueue,
  createTrainingWorker,
  publishModelActivated,
  trainingRetryDelayMs,
} from '@iisan/queue'
import { blobPartBytes, createPrisma } from '@iisan/storage'
import { dependencyFailure, errorHandling, healthCheck, metrics } from '@iisan/http'
import { Counter, Gauge } from 'prom-client'
import { Type } from '@sinclair/typebox'
import { onShutdown } from '@iisan/config/shutdown'
import { configuredDemoBackbones, demoBackboneWarning } from '@iisan/backbones/demo'

const config = loadConfigOrExit()
const logger = createLogger('worker', config)
try {
  // a part size the reader could not read back stops the worker now, not after a job's first epoch
  blobPartBytes(config.blobPartBytes)
} catch (e) {
  console.error(`BLOB_PART_BYTES (or CHECKPOINT_PART_BYTES, its older name): ${e instanceof Error ? e.message : String(e)}`)
  process.exit(1)
}
await initBackend({ logger, prefer: config.tfBackend })
const prisma = createPrisma(config.databaseUrl)
const connection = createRedisConnection(config.redisUrl)
const publisher = createRedisConnection(config.redisUrl)
let shuttingDown = false
// what /metrics reports about the job in hand (set from its progress)
let current: JobProgress | null = null
let finishedJobs: Counter | undefined

const workerId = defaultWorkerId()
// Methods that run the backbones in every step (fine-tuning baselines, uncached IISAN) read the
// same backbones the embedding cache is configured with (TEXT_BACKBONE / IMAGE_BACKBONE, else the demo pair).
const loadContent = datasetContentLoader(prisma, async () => {
  const dirs = await resolveBackboneDirs(config)
  if (!dirs.text) throw new Error('this method runs the text backbone, and TEXT_BACKBONE is disabled')
  return { text: dirs.text, image: dirs.image }
})
const trainingQueue = createTrainingQueue(connection, config.queuePrefix)

const worker = createTrainingWorker(
  connection,
  config.queuePrefix,
  async ({ trainingJobId }, job, token) => {
    const log = logger.child({ trainingJobId })
    log.info({ attempt: job.attemptsMade + 1, workerId }, 'training job started')
    const outcome = await runTrainingJob(prisma, trainingJobId, {
      workerId,
      onProgress: (p: JobProgress) => {
        current = p
        return job.updateProgress({ ...p })
      },
      renewLock: async () => {
        if (token) await job.extendLock(token, TRAINING_WORKER_LEASE.lockDuration)
      },
      isTransient: isInfrastructureError,
      blobPartBytes: config.blobPartBytes,
      retryDelayMs: () => trainingRetryDelayMs(job.attemptsMade + 1),
      isInterrupted: () => shuttingDown,
      // IISAN: the embedding cache builds (or resumes) the dataset's states, then streams them
      loadStates: (datasetId, data, report, shouldCancel, sideLayers) =>
        loadStatesFromCache({ url: config.embeddingCacheUrl, token: config.internalToken }, datasetId, data, report, { isCancelled: shouldCancel, sideLayers }),
      loadContent,
      onActivated: async (datasetId, modelVersionId) => {
        await publishModelActivated(publisher, config.queuePrefix, { datasetId, modelVersionId })
      },
      log: (message, fields) => log.info(fields ?? {}, message),
    })
    log.info({ outcome }, 'training job finished')
    current = null
    finishedJobs?.inc({ status: outcome.status })
    switch (outcome.status) {
      // hand the job back: BullMQ retries it (see trainingRetryDelayMs for when)
      case 'interrupted':
        throw new TrainingRetry('interrupted', 'worker shut down during training; the job will be retried')
      case 'retry':
        throw new TrainingRetry('infrastructure', outcome.error)
      case 'held':
        throw new TrainingRetry('held-elsewhere', 'another worker holds this job')
      // A real failure (bad data, bad config) would fail again: do not retry it.
      case 'failed':
        throw new UnrecoverableError(outcome.error)
      default:
        return outcome
    }
  },
)
worker.on('failed', (job, err) => {
  logger.warn({ jobId: job?.id, attemptsMade: job?.attemptsMade, err: err.message }, 'training attempt failed')
  // BullMQ gave up on it: the database learns at once, not at the next periodic pass
  if (job && job.attemptsMade >= (job.opts.attempts ?? 1)) void reconcile()
})
// Errors of the connection (Redis restarting) are retried by ioredis; log them instead of crashing.
worker.on('error', (err) => logger.warn({ err: err.message }, 'training worker error'))

/** One reconciler pass at a time across all workers; failures (Redis or the database down) wait for the next pass. */
async function reconcile(): Promise<void> {
  try {
    const report = await withReconcileLock(connection, config.queuePrefix, RECONCILE_EVERY_MS, () =>
      reconcileTrainingJobs(prisma, trainingQueue, (message, fields) => logger.info(fields ?? {}, message)),
    )
    if (report && (report.requeued.length || report.failed.length)) logger.info(report, 'training jobs reconciled')
  } catch (e) {
    logger.warn({ err: e instanceof Error ? e.message : String(e) }, 'reconciling training jobs failed; will try again')
  }
}
const RECONCILE_EVERY_MS = 15_000
const reconciler = setInterval(() => void reconcile(), RECONCILE_EVERY_MS)
await reconcile()

// Only /healthz and /metrics: nothing here needs the internal token.
const health = Fastify({ loggerInstance: logger.child({ component: 'health' }) })
await health.register(errorHandling, {})
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
const demoBackbones = configuredDemoBackbones(config)
if (demoBackbones.length) logger.warn({ demoBackbones }, demoBackboneWarning(demoBackbones))

onShutdown(logger, async () => {
  shuttingDown = true
  clearInterval(reconciler)
  await worker.close()
  await trainingQueue.close()
  await health.close()
  await Promise.all([connection.quit(), publisher.quit(), prisma.$disconnect()])
})

/** The database, Redis or the embedding cache out of reach: the job is retried later, not failed. */
function isInfrastructureError(e: unknown): boolean {
  return dependencyFailure(e) !== undefined
}

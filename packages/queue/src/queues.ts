import { Queue, Worker, type Job, type JobsOptions, type Processor, type WorkerOptions } from 'bullmq'
import type { Redis } from 'ioredis'
import type { EmbeddingCacheJobPayload, TrainingJobPayload } from './payloads.ts'
import { parseTrainingJobPayload, parseEmbeddingCacheJobPayload } from './payloads.ts'

export const QUEUE_NAMES = {
  training: 'training',
  embeddingCache: 'embedding-cache',
} as const
export type QueueName = (typeof QUEUE_NAMES)[keyof typeof QUEUE_NAMES]

/** Job names inside the queues (BullMQ requires one). */
export const JOB_NAMES = {
  train: 'train',
  encodeChunk: 'encode-chunk',
} as const

export type TrainingQueue = Queue<TrainingJobPayload, unknown, typeof JOB_NAMES.train>
export type EmbeddingCacheQueue = Queue<EmbeddingCacheJobPayload, unknown, typeof JOB_NAMES.encodeChunk>

/** Why a training attempt is handed back rather than failed; the worker throws these. */
export class TrainingRetry extends Error {
  constructor(
    readonly reason: 'infrastructure' | 'interrupted' | 'held-elsewhere',
    message: string,
  ) {
    super(message)
    this.name = 'TrainingRetry'
  }
}

/**
 * Attempts a training job gets for infrastructure errors (the database, Redis or the embedding
 * cache unreachable). With the backoff below they span about 2.5 hours before the job fails.
 */
export const TRAINING_ATTEMPTS = 12

/**
 * Delay before attempt `attemptsMade + 1`. An outage lasts minutes, so infrastructure errors back
 * off from 30 s doubling to 20 min; a job handed back by a worker that shuts down runs again at
 * once; one another live worker holds is looked at again once its lease would have lapsed.
 */
export function trainingRetryDelayMs(attemptsMade: number, err?: Error): number {
  if (err instanceof TrainingRetry && err.reason === 'interrupted') return 0
  if (err instanceof TrainingRetry && err.reason === 'held-elsewhere') return 20_000
  return Math.min(30_000 * 2 ** Math.max(0, attemptsMade - 1), 20 * 60_000)
}

/**
 * Training: processors throw bullmq's UnrecoverableError for real failures (bad data/config),
 * which are not retried, and TrainingRetry for the rest (see trainingRetryDelayMs).
 */
export const TRAINING_JOB_DEFAULTS: JobsOptions = {
  attempts: TRAINING_ATTEMPTS,
  backoff: { type: 'training' },
  removeOnComplete: { count: 1000 },
  removeOnFail: { count: 1000 },
}

/**
 * How quickly a crashed worker's job is handed to another: its lock lapses after `lockDuration`
 * (renewed every few seconds by the living), and stalled jobs are looked for every
 * `stalledInterval` — a crash costs at most ≈ 25 s of waiting. The lock must outlast the
 * heartbeat's staleness (JOB_LIVENESS.staleMs in @iisan/storage, 15 s), so that when a job is
 * handed out again its old holder already reads as gone. Stalls are counted by the database
 * (MAX_JOB_STARTS), so BullMQ's own count is generous.
 */
export const TRAINING_WORKER_LEASE = { lockDuration: 20_000, stalledInterval: 5_000, maxStalledCount: 20 } as const

/** Encoding chunks are idempotent (cache keyed by content hash): retry with backoff. */
export const EMBEDDING_CACHE_JOB_DEFAULTS: JobsOptions = {
  attempts: 3,
  backoff: { type: 'exponential', delay: 2000 },
  removeOnComplete: { count: 5000 },
  removeOnFail: { count: 5000 },
}

export function createTrainingQueue(connection: Redis, prefix: string): TrainingQueue {
  return new Queue<TrainingJobPayload, unknown, typeof JOB_NAMES.train>(QUEUE_NAMES.training, {
    connection,
    prefix,
    defaultJobOptions: TRAINING_JOB_DEFAULTS,
  })
}

export function createEmbeddingCacheQueue(connection: Redis, prefix: string): EmbeddingCacheQueue {
  return new Queue<EmbeddingCacheJobPayload, unknown, typeof JOB_NAMES.encodeChunk>(QUEUE_NAMES.embeddingCache, {
    connection,
    prefix,
    defaultJobOptions: EMBEDDING_CACHE_JOB_DEFAULTS,
  })
}

/**
 * Enqueue a training job. The BullMQ job id is the TrainingJob id, so enqueueing the same job
 * twice is a no-op (BullMQ keeps the existing job).
 */
export async function enqueueTrainingJob(
  queue: TrainingQueue,
  trainingJobId: string,
  options: JobsOptions = {},
): Promise<Job<TrainingJobPayload, unknown, typeof JOB_NAMES.train>> {
  const data = parseTrainingJobPayload({ trainingJobId })
  return queue.add(JOB_NAMES.train, data, { ...options, jobId: trainingJobId })
}

export type WorkerCreateOptions = Omit<WorkerOptions, 'connection' | 'prefix'>

/**
 * A worker for the training queue whose processor receives validated payloads (an invalid
 * payload fails the job with QueuePayloadError). Defaults: concurrency 1 (training saturates a
 * process), lock extended automatically while the processor runs.
 */
export function createTrainingWorker(
  connection: Redis,
  prefix: string,
  processor: (payload: TrainingJobPayload, job: Job<TrainingJobPayload>, token: string | undefined) => Promise<unknown>,
  options: WorkerCreateOptions = {},
): Worker<TrainingJobPayload> {
  const run: Processor<TrainingJobPayload> = (job, token) => processor(parseTrainingJobPayload(job.data), job, token)
  return new Worker<TrainingJobPayload>(QUEUE_NAMES.training, run, {
    concurrency: 1,
    ...TRAINING_WORKER_LEASE,
    settings: { backoffStrategy: (attemptsMade, _type, err) => trainingRetryDelayMs(attemptsMade, err) },
    ...options,
    connection,
    prefix,
  })
}

export function createEmbeddingCacheWorker(
  connection: Redis,
  prefix: string,
  processor: (payload: EmbeddingCacheJobPayload, job: Job<EmbeddingCacheJobPayload>) => Promise<unknown>,
  options: WorkerCreateOptions = {},
): Worker<EmbeddingCacheJobPayload> {
  const run: Processor<EmbeddingCacheJobPayload> = (job) => processor(parseEmbeddingCacheJobPayload(job.data), job)
  return new Worker<EmbeddingCacheJobPayload>(QUEUE_NAMES.embeddingCache, run, {
    concurrency: 1,
    lockDuration: 60_000,
    ...options,
    connection,
    prefix,
  })
}

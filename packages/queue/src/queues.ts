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

/**
 * Training: a few attempts so that a job interrupted by a worker shutdown/crash is handed out
 * again; processors throw bullmq's UnrecoverableError for real failures (bad data/config) so
 * those are not retried.
 */
export const TRAINING_JOB_DEFAULTS: JobsOptions = {
  attempts: 3,
  backoff: { type: 'fixed', delay: 5000 },
  removeOnComplete: { count: 1000 },
  removeOnFail: { count: 1000 },
}

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
  processor: (payload: TrainingJobPayload, job: Job<TrainingJobPayload>) => Promise<unknown>,
  options: WorkerCreateOptions = {},
): Worker<TrainingJobPayload> {
  const run: Processor<TrainingJobPayload> = (job) => processor(parseTrainingJobPayload(job.data), job)
  return new Worker<TrainingJobPayload>(QUEUE_NAMES.training, run, {
    concurrency: 1,
    lockDuration: 60_000,
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

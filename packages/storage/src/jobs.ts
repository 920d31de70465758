import { Prisma, type EpochMetric, type TrainingJob } from './generated/prisma/client.ts'
import { json, type Db, type JsonInput } from './client.ts'
import { StorageError } from './errors.ts'

export const TRAINING_JOB_STATUSES = ['queued', 'running', 'completed', 'failed', 'cancelled'] as const
export type TrainingJobStatus = (typeof TRAINING_JOB_STATUSES)[number]
export const TERMINAL_JOB_STATUSES: readonly TrainingJobStatus[] = ['completed', 'failed', 'cancelled']

/** Known training methods (the column accepts any string so new baselines need no migration). */
export const TRAINING_METHODS = ['sasrec-id', 'iisan', 'fft', 'adapter', 'lora', 'bitfit'] as const
export type TrainingMethod = (typeof TRAINING_METHODS)[number] | (string & {})

export interface CreateTrainingJobInput {
  datasetId: string
  method: TrainingMethod
  config: JsonInput
}

/** Create a queued training job. Throws NOT_FOUND when the dataset does not exist. */
export async function createTrainingJob(db: Db, input: CreateTrainingJobInput): Promise<TrainingJob> {
  try {
    return await db.trainingJob.create({
      data: { datasetId: input.datasetId, method: input.method, config: json(input.config), status: 'queued' },
    })
  } catch (e) {
    if (e instanceof Prisma.PrismaClientKnownRequestError && e.code === 'P2003') {
      throw new StorageError('NOT_FOUND', `dataset ${input.datasetId} not found`, { datasetId: input.datasetId })
    }
    throw e
  }
}

export async function getTrainingJob(db: Db, id: string): Promise<TrainingJob | null> {
  return db.trainingJob.findUnique({ where: { id } })
}

export async function listTrainingJobs(
  db: Db,
  options: { datasetId?: string; status?: TrainingJobStatus | TrainingJobStatus[]; limit?: number; offset?: number } = {},
): Promise<TrainingJob[]> {
  const status = options.status === undefined ? undefined : Array.isArray(options.status) ? { in: options.status } : options.status
  return db.trainingJob.findMany({
    where: { datasetId: options.datasetId, status },
    orderBy: { createdAt: 'desc' },
    take: options.limit ?? 100,
    skip: options.offset ?? 0,
  })
}

export interface UpdateTrainingJobStatusOptions {
  /** Only update when the current status is one of these (idempotent transitions). */
  from?: TrainingJobStatus[]
  error?: string | null
  progress?: JsonInput
}

/**
 * Set a job's status; `running` stamps startedAt, terminal statuses stamp finishedAt.
 * With `from`, the update is conditional (compare-and-set) and returns null when the job was not
 * in one of those statuses. Throws NOT_FOUND when the job does not exist.
 */
export async function updateTrainingJobStatus(
  db: Db,
  id: string,
  status: TrainingJobStatus,
  options: UpdateTrainingJobStatusOptions = {},
): Promise<TrainingJob | null> {
  const now = new Date()
  const data: Prisma.TrainingJobUpdateManyMutationInput = { status }
  if (status === 'running') {
    data.startedAt = now
    data.finishedAt = null
  }
  if (TERMINAL_JOB_STATUSES.includes(status)) data.finishedAt = now
  if (options.error !== undefined) data.error = options.error
  if (options.progress !== undefined) data.progress = json(options.progress)
  const { count } = await db.trainingJob.updateMany({
    where: { id, ...(options.from ? { status: { in: options.from } } : {}) },
    data,
  })
  if (count === 0) {
    const exists = await db.trainingJob.findUnique({ where: { id }, select: { id: true } })
    if (!exists) throw new StorageError('NOT_FOUND', `training job ${id} not found`, { jobId: id })
    return null
  }
  return db.trainingJob.findUnique({ where: { id } })
}

/** Store the latest progress snapshot (epoch, step, loss, throughput, ...). */
export async function updateTrainingJobProgress(db: Db, id: string, progress: JsonInput): Promise<void> {
  const { count } = await db.trainingJob.updateMany({ where: { id }, data: { progress: json(progress) } })
  if (count === 0) throw new StorageError('NOT_FOUND', `training job ${id} not found`, { jobId: id })
}

/**
 * Request cancellation: a queued job is cancelled at once; a running job gets
 * cancelRequested = true (the worker polls it between steps). Terminal jobs are returned as-is.
 */
export async function requestTrainingJobCancel(db: Db, id: string): Promise<TrainingJob> {
  const now = new Date()
  await db.trainingJob.updateMany({
    where: { id, status: 'queued' },
    data: { status: 'cancelled', cancelRequested: true, finishedAt: now },
  })
  await db.trainingJob.updateMany({ where: { id, status: 'running' }, data: { cancelRequested: true } })
  const job = await db.trainingJob.findUnique({ where: { id } })
  if (!job) throw new StorageError('NOT_FOUND', `training job ${id} not found`, { jobId: id })
  return job
}

/** Cheap check for workers between steps. */
export async function isTrainingJobCancelRequested(db: Db, id: string): Promise<boolean> {
  const job = await db.trainingJob.findUnique({ where: { id }, select: { cancelRequested: true } })
  return job?.cancelRequested ?? false
}

export interface EpochMetricInput {
  jobId: string
  epoch: number
  trainLoss: number
  valHr10: number
  valNdcg10: number
  seconds: number
  extra?: JsonInput
}

/** Record an epoch's metrics; re-recording the same epoch (a retried job) overwrites it. */
export async function appendEpochMetric(db: Db, m: EpochMetricInput): Promise<EpochMetric> {
  const values = {
    trainLoss: m.trainLoss,
    valHr10: m.valHr10,
    valNdcg10: m.valNdcg10,
    seconds: m.seconds,
    extra: m.extra === undefined ? Prisma.DbNull : json(m.extra),
  }
  return db.epochMetric.upsert({
    where: { jobId_epoch: { jobId: m.jobId, epoch: m.epoch } },
    create: { jobId: m.jobId, epoch: m.epoch, ...values },
    update: values,
  })
}

export async function listEpochMetrics(db: Db, jobId: string): Promise<EpochMetric[]> {
  return db.epochMetric.findMany({ where: { jobId }, orderBy: { epoch: 'asc' } })
}

import { Prisma, type EpochMetric, type PrismaClient, type TrainingJob } from './generated/prisma/client.ts'
import { deleteBlob, readBlob, sealBlob, writeBlob, type BlobTransportOptions, type WriteBlobOptions } from './blobs.ts'
import { inTransaction, json, type Db, type JsonInput } from './client.ts'
import { StorageError, isStorageError } from './errors.ts'

export const TRAINING_JOB_STATUSES = ['queued', 'running', 'completed', 'failed', 'cancelled'] as const
export type TrainingJobStatus = (typeof TRAINING_JOB_STATUSES)[number]
export const TERMINAL_JOB_STATUSES: readonly TrainingJobStatus[] = ['completed', 'failed', 'cancelled']

/** A registered method's name (@iisan/model's registry decides; the column takes any, so a new method needs no migration). */
export type TrainingMethod = string

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

/**
 * How a worker shows it still holds a running job: it renews `heartbeatAt` every `heartbeatMs`;
 * a running job whose heartbeat is older than `staleMs` has no live holder (the worker crashed,
 * hung or lost its database), so another worker may take it over and cancel ends it at once.
 * The database's clock decides, so workers on other hosts need no synchronised clocks.
 */
export const JOB_LIVENESS = { heartbeatMs: 3_000, staleMs: 15_000 } as const

/** Starts after which a job that never finishes (a worker crashing on it every time) is failed. */
export const MAX_JOB_STARTS = 10

export interface UpdateTrainingJobStatusOptions {
  /** Only update when the current status is one of these (idempotent transitions). */
  from?: TrainingJobStatus[]
  /** Only update while this worker holds the job: a worker that lost the job changes nothing. */
  heldBy?: string
  error?: string | null
  progress?: JsonInput
  /** when a job handed back for a retry may run again (null: now) */
  retryAt?: Date | null
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
  if (status !== 'running') data.workerId = null
  if (options.error !== undefined) data.error = options.error
  if (options.progress !== undefined) data.progress = json(options.progress)
  if (options.retryAt !== undefined) data.retryAt = options.retryAt
  const { count } = await db.trainingJob.updateMany({
    where: { id, ...(options.from ? { status: { in: options.from } } : {}), ...(options.heldBy ? { workerId: options.heldBy } : {}) },
    data,
  })
  if (count === 0) {
    const exists = await db.trainingJob.findUnique({ where: { id }, select: { id: true } })
    if (!exists) throw new StorageError('NOT_FOUND', `training job ${id} not found`, { jobId: id })
    return null
  }
  return db.trainingJob.findUnique({ where: { id } })
}

export type ClaimResult =
  | { claimed: TrainingJob }
  /** another worker holds it and its heartbeat is fresh */
  | { heldElsewhere: TrainingJob }
  /** completed, failed or cancelled: nothing to do */
  | { finished: TrainingJob }

/**
 * Take a job for `workerId`: a queued job, or a running one whose holder stopped beating (crashed)
 * or is this worker. Counts the start. Returns null when the job does not exist.
 */
export async function claimTrainingJob(db: Db, id: string, workerId: string, staleMs: number = JOB_LIVENESS.staleMs): Promise<ClaimResult | null> {
  const claimed = await db.$executeRaw`
    UPDATE training_jobs
       SET status = 'running', worker_id = ${workerId}, heartbeat_at = now(), attempts = attempts + 1,
           started_at = COALESCE(started_at, now()), finished_at = NULL, retry_at = NULL
     WHERE id = ${id}::uuid
       AND (status = 'queued'
            OR (status = 'running' AND (worker_id = ${workerId} OR heartbeat_at IS NULL OR heartbeat_at < now() - make_interval(secs => ${staleMs / 1000}))))`
  const job = await db.trainingJob.findUnique({ where: { id } })
  if (!job) return null
  if (claimed === 1) return { claimed: job }
  return job.status === 'running' || job.status === 'queued' ? { heldElsewhere: job } : { finished: job }
}

/** Renew the holder's heartbeat; false when this worker no longer holds the job (taken over, cancelled, deleted). */
export async function heartbeatTrainingJob(db: Db, id: string, workerId: string): Promise<boolean> {
  const count = await db.$executeRaw`
    UPDATE training_jobs SET heartbeat_at = now() WHERE id = ${id}::uuid AND status = 'running' AND worker_id = ${workerId}`
  return count === 1
}

export interface UnfinishedJob {
  id: string
  status: 'queued' | 'running'
  attempts: number
  retryAt: Date | null
  /** running without a fresh heartbeat: no worker holds it */
  stale: boolean
}

/** Jobs that are queued or running, with their liveness as the database's clock sees it. */
export async function listUnfinishedTrainingJobs(db: Db, staleMs: number = JOB_LIVENESS.staleMs): Promise<UnfinishedJob[]> {
  const rows = await db.$queryRaw<{ id: string; status: 'queued' | 'running'; attempts: number; retry_at: Date | null; stale: boolean }[]>`
    SELECT id::text AS id, status, attempts, retry_at,
           (status = 'running' AND (heartbeat_at IS NULL OR heartbeat_at < now() - make_interval(secs => ${staleMs / 1000}))) AS stale
      FROM training_jobs WHERE status IN ('queued', 'running') ORDER BY created_at`
  return rows.map((r) => ({ id: r.id, status: r.status, attempts: r.attempts, retryAt: r.retry_at, stale: r.stale }))
}

/** A running job nobody holds goes back to queued (for the reconciler); false when it is held or not running. */
export async function requeueAbandonedTrainingJob(db: Db, id: string, staleMs: number = JOB_LIVENESS.staleMs): Promise<boolean> {
  const count = await db.$executeRaw`
    UPDATE training_jobs SET status = 'queued', worker_id = NULL
     WHERE id = ${id}::uuid AND status = 'running'
       AND (heartbeat_at IS NULL OR heartbeat_at < now() - make_interval(secs => ${staleMs / 1000}))`
  return count === 1
}

/** Store the latest progress snapshot (epoch, step, loss, throughput, ...). */
export async function updateTrainingJobProgress(db: Db, id: string, progress: JsonInput): Promise<void> {
  const { count } = await db.trainingJob.updateMany({ where: { id }, data: { progress: json(progress) } })
  if (count === 0) throw new StorageError('NOT_FOUND', `training job ${id} not found`, { jobId: id })
}

/**
 * Request cancellation: a queued job, or a running one that no live worker holds (stale
 * heartbeat), is cancelled at once; a held running job gets cancelRequested = true (its worker
 * polls it between steps). Terminal jobs are returned as-is.
 */
export async function requestTrainingJobCancel(db: Db, id: string, staleMs: number = JOB_LIVENESS.staleMs): Promise<TrainingJob> {
  await db.$executeRaw`
    UPDATE training_jobs SET status = 'cancelled', cancel_requested = true, finished_at = now(), worker_id = NULL
     WHERE id = ${id}::uuid
       AND (status = 'queued'
            OR (status = 'running' AND (heartbeat_at IS NULL OR heartbeat_at < now() - make_interval(secs => ${staleMs / 1000}))))`
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

export interface TrainingCheckpointInput {
  jobId: string
  epoch: number
  state: Uint8Array
  meta: JsonInput
}

export type SaveTrainingCheckpointOptions = WriteBlobOptions

/**
 * Keep a job's latest resumable state (one checkpoint per job, replaced every epoch). The state is
 * written as a new blob; one short transaction then seals it and points the job's checkpoint row at
 * it, and the previous state is deleted after. A save that fails or dies midway leaves the previous
 * checkpoint whole (what it wrote is swept as dead later).
 */
export async function saveTrainingCheckpoint(db: PrismaClient, c: TrainingCheckpointInput, options: SaveTrainingCheckpointOptions = {}): Promise<void> {
  const blob = await writeBlob(db, c.state, options)
  const values = { epoch: c.epoch, stateBlobId: blob.id, meta: json(c.meta) }
  let previous: string | null = null
  try {
    previous = await inTransaction(db, async (tx) => {
      const before = await tx.trainingCheckpoint.findUnique({ where: { jobId: c.jobId }, select: { stateBlobId: true } })
      await sealBlob(tx, blob)
      await tx.trainingCheckpoint.upsert({ where: { jobId: c.jobId }, create: { jobId: c.jobId, ...values }, update: values })
      return before?.stateBlobId ?? null
    })
  } catch (e) {
    await deleteBlob(db, blob.id).catch(() => undefined)
    throw e
  }
  // after the flip, not in it: freeing gigabytes may take longer than a short transaction may
  // last, and nothing points at the old state any more (a crash here leaves it to a sweep)
  if (previous) await deleteBlob(db, previous)
}

/**
 * The job's checkpoint, its state read back from its blob. Throws StorageError CORRUPT when a part
 * is missing or the state's length or sha256 differs from what the save recorded.
 */
export async function loadTrainingCheckpoint(
  db: PrismaClient,
  jobId: string,
  options: BlobTransportOptions = {},
): Promise<{ epoch: number; state: Uint8Array; meta: unknown } | null> {
  const row = await db.trainingCheckpoint.findUnique({ where: { jobId } })
  if (!row) return null
  try {
    return { epoch: row.epoch, state: await readBlob(db, row.stateBlobId, options), meta: row.meta }
  } catch (e) {
    if (isStorageError(e, 'CORRUPT')) {
      throw new StorageError('CORRUPT', `the checkpoint of job ${jobId} (epoch ${row.epoch}) is unreadable: ${String(e.details?.why)}`, { jobId, epoch: row.epoch })
    }
    throw e
  }
}

/** Remove the job's checkpoint; its state goes with it (a trigger on the row). */
export async function deleteTrainingCheckpoint(db: Db, jobId: string): Promise<void> {
  await db.trainingCheckpoint.deleteMany({ where: { jobId } })
}

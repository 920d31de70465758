import { Prisma, type EpochMetric, type PrismaClient, type TrainingJob } from './generated/prisma/client.ts'
import { createHash, randomUUID } from 'node:crypto'
import { pipeline } from 'node:stream/promises'
import { to as copyTo } from 'pg-copy-streams'
import { inTransaction, json, pgPoolOf, toBytes, type Db, type JsonInput } from './client.ts'
import { CopyBinaryColumnSink, CopyFormatError } from './copy-binary.ts'
import { StorageError } from './errors.ts'

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

/**
 * Default size of one stored part of a checkpoint's state: FFT's 3.1 GB state at base shapes is
 * 93 rows of 32 MiB. A save sends a part from a view of the state, and what it holds on top is a
 * few parts' worth (bench:checkpoint: 335 MiB at 128 MiB parts). PostgreSQL caps one value at 1 GB,
 * but the 'prisma' transport is the tighter limit: it reads a bytea as one hex string (two
 * characters a byte), V8 caps a string at 2^29 − 24 characters, and a 256 MiB part overflows it
 * (ERR_STRING_TOO_LONG, thrown inside pg's socket handler: the process dies). Hence
 * CHECKPOINT_MAX_PART_BYTES.
 */
export const CHECKPOINT_PART_BYTES = 32 * 2 ** 20
export const CHECKPOINT_MAX_PART_BYTES = 192 * 2 ** 20

export interface CheckpointTransportOptions {
  /**
   * How the parts' bytes travel. 'binary' (the default): node-postgres sends each part as a binary
   * parameter from a view of the state, and one binary COPY streams every part back straight into
   * the state. 'prisma': the ORM's path, which carries a part as a base64 string on the way in and
   * a hex string on the way out; kept as bench:checkpoint's baseline (1 GiB state, EPYC: 4× the
   * save time and 9× the transient memory, 8× the load time and 15× its transient memory).
   */
  transport?: 'binary' | 'prisma'
}

export interface SaveTrainingCheckpointOptions extends CheckpointTransportOptions {
  /** Bytes per stored part (default CHECKPOINT_PART_BYTES, at most CHECKPOINT_MAX_PART_BYTES). */
  partBytes?: number
}

/** The part size to use: `partBytes`, or the default; INVALID_INPUT outside 1..CHECKPOINT_MAX_PART_BYTES. */
export function checkpointPartBytes(partBytes = CHECKPOINT_PART_BYTES): number {
  if (!Number.isInteger(partBytes) || partBytes <= 0 || partBytes > CHECKPOINT_MAX_PART_BYTES) {
    throw new StorageError('INVALID_INPUT', `a checkpoint part must be 1 to ${CHECKPOINT_MAX_PART_BYTES} bytes, got ${partBytes}`)
  }
  return partBytes
}

/**
 * Keep a job's latest resumable state (one checkpoint per job, replaced every epoch). The state is
 * written in parts (views of `state`, not copies) under a new generation; one short transaction
 * then checks the parts are all there and points the job's checkpoint row at them, and every other
 * generation is deleted. A save that fails or dies midway leaves the previous checkpoint whole (its
 * stray parts go with the next save or the job).
 */
export async function saveTrainingCheckpoint(db: PrismaClient, c: TrainingCheckpointInput, options: SaveTrainingCheckpointOptions = {}): Promise<void> {
  const partBytes = checkpointPartBytes(options.partBytes)
  const generation = randomUUID()
  const hash = createHash('sha256')
  // what a save that died before left behind: not the live generation, so nobody reads it
  await deleteOtherCheckpointParts(db, c.jobId, await liveCheckpointGeneration(db, c.jobId))
  const partCount = Math.max(1, Math.ceil(c.state.byteLength / partBytes))
  for (let part = 0; part < partCount; part++) {
    const bytes = c.state.subarray(part * partBytes, (part + 1) * partBytes)
    hash.update(bytes)
    await writeCheckpointPart(db, { jobId: c.jobId, generation, part, bytes }, options.transport)
  }
  const values = { epoch: c.epoch, state: null, generation, stateBytes: BigInt(c.state.byteLength), partCount, stateSha256: hash.digest('hex'), meta: json(c.meta) }
  await inTransaction(db, async (tx) => {
    const stored = await checkpointPartLengths(tx, c.jobId, generation)
    const complete = stored.length === partCount && stored.reduce((sum, p) => sum + p.length, 0) === c.state.byteLength
    if (!complete) throw new StorageError('CONFLICT', `checkpoint of job ${c.jobId}: ${stored.length} of ${partCount} parts were stored (another save deleted them?)`, { jobId: c.jobId })
    await tx.trainingCheckpoint.upsert({ where: { jobId: c.jobId }, create: { jobId: c.jobId, ...values }, update: values })
  })
  // after the flip, not in it: freeing gigabytes may take longer than a short transaction may
  // last, and nothing points at the old parts any more (a crash here leaves them to the next save)
  await deleteOtherCheckpointParts(db, c.jobId, generation)
}

/**
 * The job's checkpoint, its state reassembled from its parts (or the single column of a
 * checkpoint saved before parts). Throws StorageError CORRUPT when a part is missing or the
 * state's length or sha256 differs from what the save recorded.
 */
export async function loadTrainingCheckpoint(
  db: PrismaClient,
  jobId: string,
  options: CheckpointTransportOptions = {},
): Promise<{ epoch: number; state: Uint8Array; meta: unknown } | null> {
  const row = await db.trainingCheckpoint.findUnique({ where: { jobId }, omit: { state: true } })
  if (!row) return null
  if (row.generation === null) {
    const { state } = await db.trainingCheckpoint.findUniqueOrThrow({ where: { jobId }, select: { state: true } })
    if (!state) throw corrupt(jobId, row.epoch, 'it has neither parts nor a state')
    return { epoch: row.epoch, state: new Uint8Array(state), meta: row.meta }
  }
  const total = Number(row.stateBytes)
  const parts = await checkpointPartLengths(db, jobId, row.generation)
  if (parts.length !== row.partCount || parts.some((p, i) => p.part !== i)) {
    throw corrupt(jobId, row.epoch, `parts ${parts.map((p) => p.part).join(',') || 'none'} of ${row.partCount} are stored`)
  }
  const stored = parts.reduce((sum, p) => sum + p.length, 0)
  if (stored !== total) throw corrupt(jobId, row.epoch, `its parts hold ${stored} bytes, ${total} were saved`)
  // one allocation, the parts written into it as they arrive
  const state = new Uint8Array(total)
  const hash = createHash('sha256')
  if (options.transport === 'prisma') {
    let offset = 0
    for (const { part, length } of parts) {
      const found = await db.trainingCheckpointPart.findUnique({ where: { jobId_generation_part: { jobId, generation: row.generation, part } }, select: { bytes: true } })
      if (!found || found.bytes.byteLength !== length) throw corrupt(jobId, row.epoch, `part ${part} went or changed while it was read`)
      state.set(found.bytes, offset)
      hash.update(found.bytes)
      offset += length
    }
  } else {
    const lengths = await copyCheckpointParts(db, { jobId, generation: row.generation, epoch: row.epoch }, state, (bytes) => hash.update(bytes))
    const changed = lengths.findIndex((length, i) => length !== parts[i]?.length)
    if (lengths.length !== parts.length || changed >= 0) throw corrupt(jobId, row.epoch, `part ${changed >= 0 ? changed : lengths.length} went or changed while it was read`)
  }
  if (hash.digest('hex') !== row.stateSha256) throw corrupt(jobId, row.epoch, 'the sha256 of its parts differs from the saved one')
  return { epoch: row.epoch, state, meta: row.meta }
}

/**
 * Remove the job's checkpoint: its row first (then nothing can be read), then its parts, each on
 * its own rather than in one interactive transaction, which freeing gigabytes could outlast.
 */
export async function deleteTrainingCheckpoint(db: Db, jobId: string): Promise<void> {
  await db.trainingCheckpoint.deleteMany({ where: { jobId } })
  await deleteOtherCheckpointParts(db, jobId, null)
}

interface CheckpointPartKey {
  jobId: string
  generation: string
  part: number
}

async function writeCheckpointPart(db: PrismaClient, { bytes, ...key }: CheckpointPartKey & { bytes: Uint8Array }, transport: CheckpointTransportOptions['transport']): Promise<void> {
  if (transport === 'prisma') {
    await db.trainingCheckpointPart.create({ data: { ...key, bytes: toBytes(bytes) } })
    return
  }
  // a Buffer parameter goes out in binary, written from this view of the state
  await pgPoolOf(db).query({
    text: 'INSERT INTO training_checkpoint_parts (job_id, generation, part, bytes) VALUES ($1::uuid, $2::uuid, $3, $4)',
    values: [key.jobId, key.generation, key.part, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)],
  })
}

/**
 * Every part of one generation, in order, written into `state` by one binary COPY: the bytes as
 * they are, where a query would bring each part as a hex string twice its size. Returns each
 * part's length as read.
 */
async function copyCheckpointParts(db: PrismaClient, c: { jobId: string; generation: string; epoch: number }, state: Uint8Array, onBytes: (bytes: Uint8Array) => void): Promise<number[]> {
  const client = await pgPoolOf(db).connect()
  let failed: Error | undefined
  try {
    const sink = new CopyBinaryColumnSink(state, onBytes)
    // COPY takes no parameters: the two ids are uuids the store made, quoted all the same
    const sql = `COPY (SELECT bytes FROM training_checkpoint_parts WHERE job_id = ${client.escapeLiteral(c.jobId)}::uuid AND generation = ${client.escapeLiteral(c.generation)}::uuid ORDER BY part) TO STDOUT (FORMAT binary)`
    await pipeline(client.query(copyTo(sql)), sink)
    return sink.rowLengths
  } catch (e) {
    // a connection left in the middle of a COPY is not given back to the pool
    failed = e as Error
    if (e instanceof CopyFormatError) throw corrupt(c.jobId, c.epoch, e.message)
    throw e
  } finally {
    client.release(failed)
  }
}

function corrupt(jobId: string, epoch: number, why: string): StorageError {
  return new StorageError('CORRUPT', `the checkpoint of job ${jobId} (epoch ${epoch}) is unreadable: ${why}`, { jobId, epoch })
}

async function liveCheckpointGeneration(db: Db, jobId: string): Promise<string | null> {
  return (await db.trainingCheckpoint.findUnique({ where: { jobId }, select: { generation: true } }))?.generation ?? null
}

async function deleteOtherCheckpointParts(db: Db, jobId: string, keep: string | null): Promise<void> {
  await db.trainingCheckpointPart.deleteMany({ where: { jobId, ...(keep === null ? {} : { generation: { not: keep } }) } })
}

/** Index and length of each stored part of one generation, in order, without reading the bytes. */
async function checkpointPartLengths(db: Db, jobId: string, generation: string): Promise<{ part: number; length: number }[]> {
  return db.$queryRaw<{ part: number; length: number }[]>`
    SELECT part, octet_length(bytes) AS length FROM training_checkpoint_parts
    WHERE job_id = ${jobId}::uuid AND generation = ${generation}::uuid ORDER BY part`
}

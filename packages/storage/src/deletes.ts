// Deleting what a user created: a dataset with everything that belongs to it, a training job.
// (A model version's delete lives with the versions, in models.ts.) Each is one transaction, and
// answers what the caller must still tidy up outside PostgreSQL: queue entries, served models.
import type { TrainingJobStatus } from './jobs.ts'
import { LONG_TRANSACTION, inTransaction, type Db } from './client.ts'

export interface PurgedDataset {
  /** The dataset's model versions, gone with it: replicas holding one in memory drop it. */
  modelVersionIds: string[]
  /** Its jobs that were waiting to run: their queue entries can go too. */
  queuedJobIds: string[]
}

export type DatasetPurge = { purged: PurgedDataset } | { runningJobIds: string[] } | null

/**
 * Delete a dataset with its items, users, interactions, training jobs (epoch metrics,
 * checkpoints), model versions and cache builds, in one transaction. A dataset with a running
 * job is left alone (`runningJobIds`): its worker would write into rows that are gone, so the job
 * must be cancelled first. Cached hidden states stay: they are keyed by content, and other
 * datasets may share them (removeOrphanHiddenStates collects the unreferenced ones).
 * Null when there is no such dataset.
 */
export async function purgeDataset(db: Db, id: string): Promise<DatasetPurge> {
  return inTransaction(
    db,
    async (tx) => {
      const found = await tx.$queryRaw<unknown[]>`SELECT 1 FROM datasets WHERE id = ${id}::uuid FOR UPDATE`
      if (found.length === 0) return null
      // locked, so a worker claiming a queued job now waits for us and then finds it gone
      const jobs = await tx.$queryRaw<{ id: string; status: TrainingJobStatus }[]>`
        SELECT id::text, status FROM training_jobs WHERE dataset_id = ${id}::uuid FOR UPDATE`
      const running = jobs.filter((j) => j.status === 'running').map((j) => j.id)
      if (running.length) return { runningJobIds: running }
      const versions = await tx.modelVersion.findMany({ where: { datasetId: id }, select: { id: true } })
      // everything else goes by the foreign keys' cascades (≈ 1 s for Scientific's 85k interactions)
      await tx.$executeRaw`DELETE FROM datasets WHERE id = ${id}::uuid`
      return { purged: { modelVersionIds: versions.map((v) => v.id), queuedJobIds: jobs.filter((j) => j.status === 'queued').map((j) => j.id) } }
    },
    LONG_TRANSACTION,
  )
}

/** purgeDataset for callers that only care whether it went: false when it did not exist or has a running job. */
export async function deleteDataset(db: Db, id: string): Promise<boolean> {
  const purge = await purgeDataset(db, id)
  return purge !== null && 'purged' in purge
}

export type TrainingJobDeletion = { deleted: TrainingJobStatus } | { running: true } | null

/**
 * Delete a training job that is not running, with its epoch metrics and checkpoint; a model
 * version it produced stays (without its job). `deleted` is the status it had, so that a queued
 * job's queue entry can be removed too. Null when there is no such job.
 */
export async function deleteTrainingJob(db: Db, id: string): Promise<TrainingJobDeletion> {
  // one statement, so a worker cannot claim the job between a check and the delete
  const [deleted] = await db.$queryRaw<{ status: TrainingJobStatus }[]>`
    DELETE FROM training_jobs WHERE id = ${id}::uuid AND status <> 'running' RETURNING status`
  if (deleted) return { deleted: deleted.status }
  return (await db.trainingJob.findUnique({ where: { id }, select: { id: true } })) ? { running: true } : null
}

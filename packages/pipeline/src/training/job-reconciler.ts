// PostgreSQL is the record of training jobs; the queue only hands them to workers. The reconciler
// brings the two back together whenever they drift: Redis restarted without persistence and lost
// its jobs, BullMQ gave up on a job whose worker kept crashing, or a worker died between the
// queue's bookkeeping and the database's. It runs when a worker starts and then periodically.
import { TRAINING_ATTEMPTS, enqueueTrainingJob, type Redis, type TrainingQueue } from '@iisan/queue'
import { MAX_JOB_STARTS, listUnfinishedTrainingJobs, requeueAbandonedTrainingJob, updateTrainingJobStatus, type PrismaClient, type UnfinishedJob } from '@iisan/storage'

export interface ReconcileReport {
  examined: number
  requeued: string[]
  failed: string[]
}

/** One pass over the unfinished jobs. Safe to run from several workers at once, but `withReconcileLock` keeps it to one. */
export async function reconcileTrainingJobs(prisma: PrismaClient, queue: TrainingQueue, log: (message: string, fields?: object) => void = () => {}): Promise<ReconcileReport> {
  const report: ReconcileReport = { examined: 0, requeued: [], failed: [] }
  for (const job of await listUnfinishedTrainingJobs(prisma)) {
    report.examined++
    const action = await reconcileOne(prisma, queue, job)
    if (action.kind === 'left') continue
    log(action.kind === 'requeued' ? 'training job re-enqueued' : 'training job failed by the reconciler', { trainingJobId: job.id, reason: action.reason })
    report[action.kind].push(job.id)
  }
  return report
}

type Decision = { kind: 'left' } | { kind: 'requeued' | 'failed'; reason: string }

async function reconcileOne(prisma: PrismaClient, queue: TrainingQueue, job: UnfinishedJob): Promise<Decision> {
  const queued = await queue.getJob(job.id)
  const state = queued ? await queued.getState() : 'missing'
  // A live worker holds it: even if Redis forgot the job under it, the worker finishes and records it.
  if (job.status === 'running' && !job.stale) return { kind: 'left' }
  if (state === 'waiting' || state === 'delayed' || state === 'active' || state === 'prioritized' || state === 'waiting-children') return { kind: 'left' }

  if (state === 'failed' && queued && queued.attemptsMade >= (queued.opts.attempts ?? TRAINING_ATTEMPTS)) {
    return fail(prisma, job, `gave up after ${queued.attemptsMade} attempts: ${queued.failedReason ?? 'unknown error'}`)
  }
  if (job.attempts >= MAX_JOB_STARTS) return fail(prisma, job, `the job was started ${job.attempts} times without finishing (did its workers crash?)`)

  // missing (Redis lost it), failed by stalling (its workers crashed) or completed without the
  // database hearing of it: hand it out again; the checkpoint lets it carry on where it was.
  if (job.status === 'running' && !(await requeueAbandonedTrainingJob(prisma, job.id))) return { kind: 'left' }
  if (queued && state !== 'missing' && state !== 'unknown') await queued.remove()
  const delay = job.retryAt ? Math.max(0, job.retryAt.getTime() - Date.now()) : 0
  await enqueueTrainingJob(queue, job.id, { delay })
  return { kind: 'requeued', reason: state === 'missing' || state === 'unknown' ? 'the queue had no record of it' : `its queue entry was ${state}${queued?.failedReason ? ` (${queued.failedReason})` : ''}` }
}

async function fail(prisma: PrismaClient, job: UnfinishedJob, error: string): Promise<Decision> {
  const updated = await updateTrainingJobStatus(prisma, job.id, 'failed', { from: [job.status], error })
  return updated ? { kind: 'failed', reason: error } : { kind: 'left' }
}

/**
 * Run `pass` unless another process is already reconciling (a Redis lock that expires by itself,
 * so a crashed reconciler does not block the others).
 */
export async function withReconcileLock<T>(redis: Redis, prefix: string, ttlMs: number, pass: () => Promise<T>): Promise<T | undefined> {
  const key = `${prefix}:training:reconciler-lock`
  const token = `${process.pid}:${Date.now()}:${Math.random()}`
  if ((await redis.set(key, token, 'PX', ttlMs, 'NX')) !== 'OK') return undefined
  try {
    return await pass()
  } finally {
    // release only our own lock (compare-and-delete in one step)
    await redis.eval("if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end", 1, key, token).catch(() => {})
  }
}

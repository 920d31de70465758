import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { TrainingConfigSchema, TrainingMethodSchema, defaultTrainingConfig, trainingConfigProblems } from '@iisan/pipeline'
import { getMethod } from '@iisan/model/methods/registry'
import { JOB_LIVENESS, TERMINAL_JOB_STATUSES, type TrainingJobStatus, createTrainingJob, deleteTrainingJob, getDataset, getTrainingJob, listEpochMetrics, listTrainingJobs, requestTrainingJobCancel } from '@iisan/storage'
import { enqueueTrainingJob } from '@iisan/queue'
import { ApiError, errorResponses } from '@iisan/http'
import type { Deps } from '../deps.ts'

const JobSchema = Type.Object({
  id: Type.String({ format: 'uuid' }),
  datasetId: Type.String({ format: 'uuid' }),
  method: Type.String(),
  config: Type.Unknown(),
  status: Type.Union([Type.Literal('queued'), Type.Literal('running'), Type.Literal('completed'), Type.Literal('failed'), Type.Literal('cancelled')]),
  progress: Type.Unknown({ description: 'phase, epoch, step, loss, validation HR@10/NDCG@10, fraction 0..1' }),
  error: Type.Union([Type.String(), Type.Null()]),
  cancelRequested: Type.Boolean(),
  modelVersionId: Type.Union([Type.String(), Type.Null()]),
  createdAt: Type.String({ format: 'date-time' }),
  startedAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
  finishedAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
  heartbeatAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()], { description: 'last sign of life of the worker running the job' }),
  stale: Type.Boolean({ description: 'running, but no worker has shown signs of life for a while: it is being taken over, or can be cancelled at once' }),
  attempts: Type.Integer({ description: 'times a worker started the job (retries and takeovers after a crash included)' }),
  retryAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()], { description: 'queued again after an infrastructure error: runs again not before this time' }),
})

const EpochSchema = Type.Object({ epoch: Type.Integer(), trainLoss: Type.Number(), valHr10: Type.Number(), valNdcg10: Type.Number(), seconds: Type.Number(), extra: Type.Unknown() })

const IdParams = Type.Object({ id: Type.String({ format: 'uuid' }) })

export const trainingJobRoutes: FastifyPluginAsyncTypebox<Deps> = async (app, deps) => {
  app.post(
    '/training-jobs',
    {
      config: { idempotent: true },
      schema: {
        tags: ['training'],
        summary: 'Queue a training job; the worker trains and reports progress',
        body: Type.Object(
          { datasetId: Type.String({ format: 'uuid' }), method: TrainingMethodSchema, config: Type.Optional(Type.Partial(TrainingConfigSchema)) },
          { additionalProperties: false },
        ),
        response: { 202: JobSchema, ...errorResponses(400, 404, 415) },
      },
    },
    async (request, reply) => {
      const { datasetId, method, config } = request.body
      const full = defaultTrainingConfig(getMethod(method), config)
      const problems = trainingConfigProblems(full)
      if (problems.length) throw new ApiError(400, 'VALIDATION_FAILED', `invalid training config: ${problems.map((p) => p.message).join('; ')}`, problems.map((p) => ({ instancePath: `/config/${p.fields[0]}`, message: p.message, fields: p.fields })))
      if (!(await getDataset(deps.prisma, datasetId))) throw new ApiError(404, 'NOT_FOUND', `dataset ${datasetId} not found`)
      const job = await createTrainingJob(deps.prisma, { datasetId, method, config: full })
      // The job id doubles as BullMQ's job id (re-adding is a no-op). The row is the record: if
      // Redis is away now, the workers' reconciler enqueues the job when it is back.
      await enqueueTrainingJob(deps.trainingQueue, job.id).catch((err) => request.log.warn({ err, trainingJobId: job.id }, 'enqueue failed; the reconciler will enqueue the job'))
      return reply.status(202).send(serializeJob(job))
    },
  )

  app.get(
    '/training-jobs',
    { schema: { tags: ['training'], summary: 'List training jobs, newest first', querystring: Type.Object({ datasetId: Type.Optional(Type.String({ format: 'uuid' })) }), response: { 200: Type.Object({ jobs: Type.Array(JobSchema) }) } } },
    async (request) => ({ jobs: (await listTrainingJobs(deps.prisma, { datasetId: request.query.datasetId })).map(serializeJob) }),
  )

  app.get(
    '/training-jobs/:id',
    {
      schema: {
        tags: ['training'],
        summary: 'State, live progress and per-epoch metrics of a job',
        params: IdParams,
        response: { 200: Type.Composite([JobSchema, Type.Object({ epochs: Type.Array(EpochSchema) })]), ...errorResponses(400, 404) },
      },
    },
    async (request) => {
      const job = await getTrainingJob(deps.prisma, request.params.id)
      if (!job) throw new ApiError(404, 'NOT_FOUND', `training job ${request.params.id} not found`)
      const epochs = await listEpochMetrics(deps.prisma, job.id)
      return { ...serializeJob(job), epochs: epochs.map((e) => ({ epoch: e.epoch, trainLoss: e.trainLoss, valHr10: e.valHr10, valNdcg10: e.valNdcg10, seconds: e.seconds, extra: e.extra })) }
    },
  )

  app.post(
    '/training-jobs/:id/cancel',
    { schema: { tags: ['training'], summary: 'Cancel a queued or running job', params: IdParams, response: { 202: JobSchema, ...errorResponses(400, 404, 409) } } },
    async (request, reply) => {
      const job = await getTrainingJob(deps.prisma, request.params.id)
      if (!job) throw new ApiError(404, 'NOT_FOUND', `training job ${request.params.id} not found`)
      if (TERMINAL_JOB_STATUSES.includes(job.status as TrainingJobStatus)) {
        throw new ApiError(409, 'JOB_FINISHED', `training job is already ${job.status}`)
      }
      // A queued job, or a running one whose worker is gone, is cancelled at once (and leaves the
      // queue); a running one sees the flag between steps and stops within about a second.
      const updated = await requestTrainingJobCancel(deps.prisma, job.id)
      // Best effort: a queue entry left behind finds the job cancelled and ends there.
      await removeWaitingEntry(deps, job.id).catch((err) => request.log.warn({ err, trainingJobId: job.id }, 'could not remove the queue entry'))
      return reply.status(202).send(serializeJob(updated))
    },
  )

  app.delete(
    '/training-jobs/:id',
    {
      schema: {
        tags: ['training'],
        summary: 'Delete a training job that is not running, with its epoch metrics',
        description: 'A running job is not deleted: 409 JOB_RUNNING; cancel it first. A queued job leaves the queue too. A model version the job produced stays.',
        params: IdParams,
        response: { 204: Type.Null({ description: 'deleted' }), ...errorResponses(400, 404, 409) },
      },
    },
    async (request, reply) => {
      const { id } = request.params
      const outcome = await deleteTrainingJob(deps.prisma, id)
      if (!outcome) throw new ApiError(404, 'NOT_FOUND', `training job ${id} not found`)
      if ('running' in outcome) throw new ApiError(409, 'JOB_RUNNING', `training job ${id} is running: cancel it first (POST /v1/training-jobs/${id}/cancel)`, { trainingJobId: id })
      // Best effort: a queue entry left behind finds the job gone and ends there.
      if (outcome.deleted === 'queued') await removeWaitingEntry(deps, id).catch((err) => request.log.warn({ err, trainingJobId: id }, 'could not remove the queue entry'))
      return reply.status(204).send(null)
    },
  )
}

async function removeWaitingEntry(deps: Deps, id: string): Promise<void> {
  const queued = await deps.trainingQueue.getJob(id)
  if (queued && ((await queued.isWaiting()) || (await queued.isDelayed()))) await queued.remove()
}

type JobRow = NonNullable<Awaited<ReturnType<typeof getTrainingJob>>>

function serializeJob(j: JobRow) {
  return {
    id: j.id,
    datasetId: j.datasetId,
    method: j.method,
    config: j.config,
    status: j.status as TrainingJobStatus,
    progress: j.progress ?? null,
    error: j.error,
    cancelRequested: j.cancelRequested,
    modelVersionId: j.modelVersionId,
    createdAt: j.createdAt.toISOString(),
    startedAt: j.startedAt?.toISOString() ?? null,
    finishedAt: j.finishedAt?.toISOString() ?? null,
    heartbeatAt: j.heartbeatAt?.toISOString() ?? null,
    // the API's clock against the database's timestamps: close enough for a flag people read
    stale: j.status === 'running' && (!j.heartbeatAt || Date.now() - j.heartbeatAt.getTime() > JOB_LIVENESS.staleMs),
    attempts: j.attempts,
    retryAt: j.retryAt?.toISOString() ?? null,
  }
}

import type { FastifyBaseLogger } from 'fastify'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type, type TSchema } from '@sinclair/typebox'
import { MODEL_VERSION_SUMMARY_SELECT, activateModelVersion, deleteModelVersion, listModelVersions, type ModelVersionSummary } from '@iisan/storage'
import { PAPER_TPME_WEIGHTS, tpme } from '@iisan/model/tpme'
import { ApiError, errorResponses } from '@iisan/http'
import { demoBackboneWarning } from '@iisan/backbones/demo'
import type { Deps } from '../deps.ts'

const isUuid = (s: string) => /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(s)

const Nullable = <T extends TSchema>(t: T) => Type.Union([t, Type.Null()])

export const ModelVersionSchema = Type.Object({
  id: Type.String({ format: 'uuid' }),
  datasetId: Type.String({ format: 'uuid' }),
  jobId: Nullable(Type.String()),
  method: Type.String(),
  config: Type.Unknown(),
  embeddingDim: Type.Integer(),
  numItems: Type.Integer(),
  testHr10: Nullable(Type.Number()),
  testNdcg10: Nullable(Type.Number()),
  valHr10: Nullable(Type.Number()),
  valNdcg10: Nullable(Type.Number()),
  secondsPerEpoch: Nullable(Type.Number()),
  peakMemoryMb: Nullable(Type.Number()),
  trainableParams: Nullable(Type.Integer()),
  epochs: Nullable(Type.Integer()),
  metrics: Type.Unknown(),
  isActive: Type.Boolean(),
  activatedAt: Nullable(Type.String({ format: 'date-time' })),
  createdAt: Type.String({ format: 'date-time' }),
  demoBackbones: Type.Array(Type.Union([Type.Literal('text'), Type.Literal('image')]), {
    description: 'modalities whose frozen backbone was the generated demo pair (random weights) when it was trained: its quality says nothing about IISAN',
  }),
  warnings: Type.Array(Type.String(), { description: 'what limits this version whatever its metrics say, with how to fix it' }),
})

export const modelVersionRoutes: FastifyPluginAsyncTypebox<Deps> = async (app, deps) => {
  app.get(
    '/model-versions',
    {
      schema: {
        tags: ['models'],
        summary: 'List model versions (quality, efficiency, active flag), newest first',
        querystring: Type.Object({ datasetId: Type.Optional(Type.String({ format: 'uuid' })) }),
        response: { 200: Type.Object({ modelVersions: Type.Array(ModelVersionSchema) }) },
      },
    },
    async (request) => ({ modelVersions: (await listModelVersions(deps.prisma, { datasetId: request.query.datasetId })).map(serializeModelVersion) }),
  )

  app.get(
    '/model-versions/:id',
    { schema: { tags: ['models'], summary: 'One model version', params: Type.Object({ id: Type.String({ format: 'uuid' }) }), response: { 200: ModelVersionSchema, ...errorResponses(400, 404) } } },
    async (request) => {
      const mv = await deps.prisma.modelVersion.findUnique({ where: { id: request.params.id }, select: MODEL_VERSION_SUMMARY_SELECT })
      if (!mv) throw new ApiError(404, 'NOT_FOUND', `model version ${request.params.id} not found`)
      return serializeModelVersion(mv)
    },
  )

  app.get(
    '/model-versions/compare',
    {
      schema: {
        tags: ['models'],
        summary: 'Versions side by side with TPME (docs/METHOD.md §8) across them: quality, s/epoch, memory, parameters',
        querystring: Type.Object({ ids: Type.String({ maxLength: 2000, description: 'comma-separated model version ids (2–20)' }) }),
        response: {
          200: Type.Object({
            weights: Type.Object({ time: Type.Number(), params: Type.Number(), memory: Type.Number() }),
            versions: Type.Array(
              Type.Composite([
                ModelVersionSchema,
                Type.Object({
                  tpme: Nullable(Type.Number({ description: 'TPME across the compared versions that have all three figures (0 = the most efficient on every axis); null: this one lacks a figure and is left out' })),
                  timeNorm: Nullable(Type.Number({ description: 'seconds per epoch, min–max normalised across the compared versions' })),
                  paramsNorm: Nullable(Type.Number({ description: 'trainable parameters, min–max normalised' })),
                  memoryNorm: Nullable(Type.Number({ description: 'peak training memory, min–max normalised' })),
                }),
              ]),
              { description: 'in the order of `ids`' },
            ),
          }),
          ...errorResponses(400, 404),
        },
      },
    },
    async (request) => {
      const ids = [...new Set(request.query.ids.split(',').map((s) => s.trim()).filter(Boolean))]
      if (ids.length < 2 || ids.length > 20) throw new ApiError(400, 'VALIDATION_FAILED', 'give 2–20 distinct model version ids')
      const malformed = ids.filter((id) => !isUuid(id))
      if (malformed.length) throw new ApiError(400, 'VALIDATION_FAILED', `not a model version id (uuid): ${malformed.slice(0, 5).map((id) => JSON.stringify(id)).join(', ')}`, { malformed })
      const rows = await deps.prisma.modelVersion.findMany({ where: { id: { in: ids } }, select: MODEL_VERSION_SUMMARY_SELECT })
      const missing = ids.filter((id) => !rows.some((r) => r.id === id))
      if (missing.length) throw new ApiError(404, 'NOT_FOUND', `model version(s) not found: ${missing.join(', ')}`, { missing })
      const measured = rows.filter((r) => r.secondsPerEpoch !== null && r.trainableParams !== null && r.peakMemoryMb !== null)
      const scores = new Map(
        tpme(measured.map((r) => ({ id: r.id, secondsPerEpoch: r.secondsPerEpoch!, trainableParams: r.trainableParams!, peakMemoryMb: r.peakMemoryMb! }))).map((row) => [row.id, row]),
      )
      return {
        weights: PAPER_TPME_WEIGHTS,
        versions: ids.map((id) => {
          const r = rows.find((x) => x.id === id)!
          const s = scores.get(id)
          return { ...serializeModelVersion(r), tpme: s?.tpme ?? null, timeNorm: s?.timeNorm ?? null, paramsNorm: s?.paramsNorm ?? null, memoryNorm: s?.memoryNorm ?? null }
        }),
      }
    },
  )

  app.post(
    '/model-versions/:id/activate',
    {
      schema: {
        tags: ['models'],
        summary: 'Make this version its dataset’s active model (all API replicas switch without a restart)',
        params: Type.Object({ id: Type.String({ format: 'uuid' }) }),
        response: { 200: ModelVersionSchema, ...errorResponses(400, 404) },
      },
    },
    async (request) => {
      // Load before switching, so the first request after the switch does not pay for it.
      if (!(await deps.registry.get(request.params.id))) throw new ApiError(404, 'NOT_FOUND', `model version ${request.params.id} not found`)
      const mv = await activateModelVersion(deps.prisma, request.params.id)
      // This replica serves the new model from the next request on; the others hear the announcement.
      await deps.registry.refreshActive()
      await deps.announceActivation(mv.datasetId, mv.id)
      return serializeModelVersion(mv)
    },
  )

  app.delete(
    '/model-versions/:id',
    {
      schema: {
        tags: ['models'],
        summary: 'Delete a model version that is not active (every API replica drops it from memory)',
        description: 'The active version of its dataset is not deleted: 409 MODEL_ACTIVE; activate another version first (or delete the dataset). The training job that made it stays.',
        params: Type.Object({ id: Type.String({ format: 'uuid' }) }),
        response: { 204: Type.Null({ description: 'deleted' }), ...errorResponses(400, 404, 409) },
      },
    },
    async (request, reply) => {
      const { id } = request.params
      const outcome = await deleteModelVersion(deps.prisma, id)
      if (!outcome) throw new ApiError(404, 'NOT_FOUND', `model version ${id} not found`)
      if ('active' in outcome) throw new ApiError(409, 'MODEL_ACTIVE', `model version ${id} is its dataset’s active model: activate another version first`, { modelVersionId: id })
      await forgetModelVersions(deps, outcome.deleted.datasetId, [id], request.log)
      return reply.status(204).send(null)
    },
  )
}

/**
 * After versions were deleted: this replica drops them at once; the others hear of each as an
 * update, re-read it, find its row gone and drop it (ServingRegistry.reloadIfBehind).
 */
export async function forgetModelVersions(deps: Deps, datasetId: string, ids: string[], log: FastifyBaseLogger): Promise<void> {
  for (const id of ids) deps.registry.forget(id)
  // Best effort, the rows being gone already: a replica that misses it keeps its copy until it
  // is evicted, and serves the version only to requests that name it.
  await Promise.all(ids.map((id) => deps.announceUpdated(datasetId, id).catch((err) => log.warn({ err, modelVersionId: id }, 'could not announce the deletion'))))
}

export function serializeModelVersion(m: ModelVersionSummary) {
  // recorded by the training job from the backbones' demo marker
  const demoBackbones = ((m.config as { demoBackbones?: ('text' | 'image')[] } | null)?.demoBackbones ?? []).filter((x) => x === 'text' || x === 'image')
  const warnings = demoBackbones.length ? [demoBackboneWarning(demoBackbones)] : []
  return { ...m, createdAt: m.createdAt.toISOString(), activatedAt: m.activatedAt?.toISOString() ?? null, metrics: m.metrics ?? null, demoBackbones, warnings }
}

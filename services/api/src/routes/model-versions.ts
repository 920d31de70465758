import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { MODEL_VERSION_SUMMARY_SELECT, activateModelVersion, listModelVersions, type ModelVersionSummary } from '@iisan/storage'
import { ApiError, errorResponses } from '../errors.ts'
import type { Deps } from '../deps.ts'

const Nullable = <T extends import('@sinclair/typebox').TSchema>(t: T) => Type.Union([t, Type.Null()])

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
      await deps.announceActivation(mv.datasetId, mv.id)
      return serializeModelVersion(mv)
    },
  )
}

export function serializeModelVersion(m: ModelVersionSummary) {
  return { ...m, createdAt: m.createdAt.toISOString(), activatedAt: m.activatedAt?.toISOString() ?? null, metrics: m.metrics ?? null }
}

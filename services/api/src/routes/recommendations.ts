import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { toRecommendations } from '@iisan/pipeline'
import { getUserHistory } from '@iisan/storage'
import { ApiError, ID_PATTERN, errorResponses } from '@iisan/http'
import type { Deps } from '../deps.ts'
import { resolveModel } from '../resolve-model.ts'

const MAX_K = 1000

const RecommendationRequest = Type.Object(
  {
    modelId: Type.Optional(Type.String({ format: 'uuid', description: 'a model version; default: the active model of datasetId (or the only active model)' })),
    datasetId: Type.Optional(Type.String({ format: 'uuid' })),
    history: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 128, pattern: ID_PATTERN }), { minItems: 1, maxItems: 1000, description: 'item ids, oldest first' })),
    userId: Type.Optional(Type.String({ minLength: 1, maxLength: 128, pattern: ID_PATTERN, description: 'a user of the dataset; their stored history is used' })),
    k: Type.Integer({ minimum: 1, maximum: MAX_K, default: 10 }),
  },
  { additionalProperties: false },
)

const RecommendationResponse = Type.Object({
  modelId: Type.String(),
  method: Type.String(),
  items: Type.Array(Type.Object({ itemId: Type.String(), title: Type.String(), score: Type.Number() })),
})

export const recommendationRoutes: FastifyPluginAsyncTypebox<Deps> = async (app, deps) => {
  app.post(
    '/recommendations',
    {
      schema: {
        tags: ['recommendations'],
        summary: 'Top-k next items for a history or a known user, excluding what they already have',
        body: RecommendationRequest,
        response: { 200: RecommendationResponse, ...errorResponses(400, 404, 409, 415) },
      },
    },
    async (request) => {
      const body = request.body
      if ((body.history === undefined) === (body.userId === undefined)) {
        throw new ApiError(400, 'VALIDATION_FAILED', 'give exactly one of history or userId')
      }
      const model = await resolveModel(deps, body.modelId, body.datasetId)
      const externalHistory = body.history ?? (await userHistory(deps, model.datasetId, body.userId!))
      const unknown = externalHistory.filter((id) => !model.indexOfExternal.has(id))
      // A user's stored history may hold items the model never saw (added after training): skip
      // those; in an explicit history they are a client error.
      if (body.history && unknown.length) {
        throw new ApiError(400, 'UNKNOWN_ITEMS', `unknown item id(s) for this model: ${unknown.slice(0, 10).join(', ')}`, { unknownItemIds: unknown })
      }
      const indices = externalHistory.filter((id) => model.indexOfExternal.has(id)).map((id) => model.indexOfExternal.get(id)!)
      if (indices.length === 0) {
        // only a stored history can get here: every item of it is newer than the model
        const why = externalHistory.length
          ? `none of the ${externalHistory.length} item(s) in the history of user ${body.userId} is known to model ${model.id} (they were added after it was trained)`
          : `user ${body.userId} has no interactions yet`
        throw new ApiError(409, 'NO_KNOWN_HISTORY', `${why}: give a history instead, or train a new model`, {
          userId: body.userId,
          modelId: model.id,
          unknownItemIds: unknown.slice(0, 100),
        })
      }
      const scored = model.serving.recommend(indices, Math.min(body.k, model.serving.numItems))
      return { modelId: model.id, method: model.method, items: toRecommendations(model, scored) }
    },
  )
}

async function userHistory(deps: Deps, datasetId: string, userId: string): Promise<string[]> {
  const history = await getUserHistory(deps.prisma, datasetId, userId)
  if (!history) throw new ApiError(404, 'USER_NOT_FOUND', `user ${userId} not found in dataset ${datasetId}`)
  return history.itemExternalIds
}

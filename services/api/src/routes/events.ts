import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import type { FastifyBaseLogger } from 'fastify'
import { rowsFor } from '@iisan/pipeline'
import { appendInteraction } from '@iisan/storage'
import { ApiError, ID_PATTERN, errorResponses } from '@iisan/http'
import type { Deps } from '../deps.ts'
import { activeModelOf } from '../resolve-model.ts'

export const eventRoutes: FastifyPluginAsyncTypebox<Deps> = async (app, deps) => {
  app.post(
    '/events',
    {
      config: { idempotent: true },
      schema: {
        tags: ['events'],
        summary: 'Append an interaction to a user’s history (the user is created on first sight); userId recommendations use it at once',
        body: Type.Object(
          {
            datasetId: Type.String({ format: 'uuid' }),
            userId: Type.String({ minLength: 1, maxLength: 128, pattern: ID_PATTERN, description: 'no whitespace or control characters' }),
            itemId: Type.String({ minLength: 1, maxLength: 128, pattern: ID_PATTERN, description: 'the item’s external id' }),
          },
          { additionalProperties: false },
        ),
        response: {
          201: Type.Object({
            userId: Type.String(),
            itemId: Type.String(),
            position: Type.Integer(),
            userCreated: Type.Boolean(),
            activeModel: Type.Union([Type.Object({ modelId: Type.String(), skipsItem: Type.Boolean() }), Type.Null()], {
              description:
                'the dataset’s active model, and whether it has no embedding for the item (the event is recorded all the same; userId recommendations list the item in skippedItemIds until a model that has it serves). null: no active model, or it could not be loaded just now',
            }),
          }),
          ...errorResponses(400, 404, 415),
        },
      },
    },
    async (request, reply) => {
      const { datasetId, userId, itemId } = request.body
      const item = await deps.prisma.item.findUnique({ where: { datasetId_externalId: { datasetId, externalId: itemId } }, select: { id: true } })
      if (!item) {
        const dataset = await deps.prisma.dataset.findUnique({ where: { id: datasetId }, select: { id: true } })
        if (!dataset) throw new ApiError(404, 'NOT_FOUND', `dataset ${datasetId} not found`)
        throw new ApiError(400, 'UNKNOWN_ITEMS', `unknown item id ${itemId}`, { unknownItemIds: [itemId] })
      }
      const appended = await appendInteraction(deps.prisma, datasetId, userId, item.id)
      return reply.status(201).send({ userId, itemId, position: appended.position, userCreated: appended.userCreated, activeModel: await skippedBy(deps, datasetId, itemId, request.log) })
    },
  )
}

/**
 * Best effort: the event is stored by now, and failing its response would have the client send
 * it again (a duplicate), so a model that cannot be loaded only costs the answer.
 */
async function skippedBy(deps: Deps, datasetId: string, itemId: string, log: FastifyBaseLogger) {
  try {
    const model = await activeModelOf(deps, datasetId)
    return model && { modelId: model.id, skipsItem: rowsFor(model, [itemId]).indices.length === 0 }
  } catch (e) {
    log.warn({ err: e, datasetId }, 'event recorded; could not tell whether the active model has its item')
    return null
  }
}

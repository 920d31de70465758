import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { appendInteraction } from '@iisan/storage'
import { ApiError, ID_PATTERN, errorResponses } from '@iisan/http'
import type { Deps } from '../deps.ts'

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
          201: Type.Object({ userId: Type.String(), itemId: Type.String(), position: Type.Integer(), userCreated: Type.Boolean() }),
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
      return reply.status(201).send({ userId, itemId, position: appended.position, userCreated: appended.userCreated })
    },
  )
}

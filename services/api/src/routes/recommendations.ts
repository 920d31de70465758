import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { rowsFor, toRecommendations, type LoadedModel } from '@iisan/pipeline'
import { itemDescriptionLoader, listItems, userHistoryLoader, type ItemDescription, type UserHistory, type UserHistoryKey } from '@iisan/storage'
import type DataLoader from 'dataloader'
import { ApiError, errorResponses } from '@iisan/http'
import type { Deps } from '../deps.ts'
import { resolveModel } from '../resolve-model.ts'
import { MAX_HISTORY, RecommendationRequest, RecommendationResponse } from './recommendation-schemas.ts'

export const recommendationRoutes: FastifyPluginAsyncTypebox<Deps> = async (app, deps) => {
  // concurrent userId requests read their histories in one query (exact: nothing is cached), and
  // the items the model does not know, unless its load described them, in another
  const histories = userHistoryLoader(deps.prisma, { maxItems: MAX_HISTORY })
  const descriptions = itemDescriptionLoader(deps.prisma)
  app.post(
    '/recommendations',
    {
      schema: {
        tags: ['recommendations'],
        summary: 'Top-k next items for a history or a known user, excluding what they already have',
        description: [
          'Any item of the dataset may be in the history. Items the model has no embedding for are skipped and listed in `skippedItemIds`; the answer is the one for the history without them.',
          'Only ids the dataset does not know are an error: `400 UNKNOWN_ITEMS` with `details.unknownItemIds`.',
          'When every item is skipped there is nothing to recommend from: `NO_KNOWN_HISTORY` with `details.skippedItemIds` — 400 for a history given in the request, 409 for a user’s stored history. Give other items or another model (an IISAN version embeds every item with cached states), or train a new one.',
          'There is no popularity fallback: an answer that looks personal while ignoring the whole history would hide that this model cannot use it; a client that wants one can fall back knowingly.',
        ].join('\n\n'),
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
      const stored = body.userId === undefined ? undefined : await storedItems(descriptions, model, await userHistory(histories, model.datasetId, body.userId))
      const history = body.history ?? stored!.externalIds
      const { indices, missing } = rowsFor(model, history)
      // a stored history references items by foreign key: it names nothing unknown
      if (!stored) await rejectUnknownItems(deps, model, missing)
      if (indices.length === 0) throw noKnownHistory(model, history.length, missing, body.userId)
      const scored = await model.recommend({ history: indices, k: Math.min(body.k, model.serving.numItems) })
      return {
        modelId: model.id,
        method: model.method,
        items: toRecommendations(model, scored),
        skippedItemIds: missing,
        history: stored ? storedHistory(model, history, stored.titleOf) : undefined,
      }
    },
  )
}

async function userHistory(histories: DataLoader<UserHistoryKey, UserHistory | null>, datasetId: string, userId: string): Promise<UserHistory> {
  const history = await histories.load({ datasetId, userExternalId: userId })
  if (!history) throw new ApiError(404, 'USER_NOT_FOUND', `user ${userId} not found in dataset ${datasetId}`)
  return history
}

/**
 * A stored history's external ids, from the model's arrays for the items it knows and from the
 * items outside it that its load described; the catalogue is asked only for the rest (their
 * titles too, for the response's history).
 */
async function storedItems(
  descriptions: DataLoader<number, ItemDescription | null>,
  model: LoadedModel,
  stored: UserHistory,
): Promise<{ externalIds: string[]; titleOf: Map<string, string> }> {
  const described = new Map<number, ItemDescription>()
  const undescribed = new Set<number>()
  for (const id of stored.itemIds) {
    if (model.indexOfItemId.has(id)) continue
    const outside = model.outsideItems.get(id)
    if (outside) described.set(id, outside)
    else undescribed.add(id)
  }
  const unknown = [...undescribed]
  for (const [i, found] of (await descriptions.loadMany(unknown)).entries()) {
    if (found instanceof Error) throw found
    if (found) described.set(unknown[i]!, found)
  }
  const externalIds: string[] = []
  for (const id of stored.itemIds) {
    const index = model.indexOfItemId.get(id)
    // an item deleted since the history was read has left the history with it (the foreign key cascades)
    const externalId = index === undefined ? described.get(id)?.externalId : model.externalIds[index]
    if (externalId !== undefined) externalIds.push(externalId)
  }
  return { externalIds, titleOf: new Map([...described.values()].map((i) => [i.externalId, i.title])) }
}

/**
 * Only the catalogue tells an item the model cannot use from an id that names nothing. The items
 * outside the version that its load described are known; the catalogue is asked for the rest.
 */
async function rejectUnknownItems(deps: Deps, model: LoadedModel, missing: readonly string[]): Promise<void> {
  const unlisted = missing.filter((id) => !model.outsideExternalIds.has(id))
  if (unlisted.length === 0) return
  const listed = new Set((await listItems(deps.prisma, model.datasetId, { externalIds: unlisted })).map((i) => i.externalId))
  const unknown = unlisted.filter((id) => !listed.has(id))
  if (unknown.length) {
    throw new ApiError(400, 'UNKNOWN_ITEMS', `item id(s) not in dataset ${model.datasetId}: ${unknown.slice(0, 10).join(', ')}`, { unknownItemIds: unknown })
  }
}

/**
 * Nothing of the history can be used. A history in the request is the client's to change (400);
 * a stored one is the state of the user and the model (409).
 */
function noKnownHistory(model: LoadedModel, length: number, skipped: string[], userId: string | undefined): ApiError {
  const advice = 'give other items, use a model that has them (an IISAN version embeds every item with cached states), or train a new model'
  if (userId === undefined) {
    return new ApiError(400, 'NO_KNOWN_HISTORY', `model ${model.id} has no embedding for any of the ${length} item(s) of the history: ${advice}`, { modelId: model.id, skippedItemIds: skipped })
  }
  const why = length ? `model ${model.id} has no embedding for any of the ${length} item(s) in the history of user ${userId}` : `user ${userId} has no interactions yet`
  // unknownItemIds: this list's name before such items were skipped; kept for the clients that read it
  return new ApiError(409, 'NO_KNOWN_HISTORY', `${why}: ${advice}`, { userId, modelId: model.id, skippedItemIds: skipped, unknownItemIds: skipped })
}

function storedHistory(model: LoadedModel, history: string[], titleOf: Map<string, string>) {
  return history.slice(-MAX_HISTORY).map((itemId) => {
    const index = model.indexOfExternal.get(itemId)
    return index === undefined ? { itemId, title: titleOf.get(itemId) ?? '', skipped: true } : { itemId, title: model.titles[index], skipped: false }
  })
}

import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type, type Static } from '@sinclair/typebox'
import { addItemsWithColdStart, toRecommendations } from '@iisan/pipeline'
import { fetchCoverage, EmbeddingCacheClientError } from '@iisan/embedding-cache/client'
import { ApiError, errorResponses } from '@iisan/http'
import type { Deps } from '../deps.ts'
import { resolveModel } from '../resolve-model.ts'

const IMAGE_TYPES = new Set(['image/jpeg', 'image/png', 'image/webp', 'image/gif', 'image/avif', 'image/tiff'])
const MAX_IMAGE_BYTES = 20 * 2 ** 20

const NewItem = Type.Object(
  {
    datasetId: Type.String({ format: 'uuid' }),
    id: Type.String({ minLength: 1, maxLength: 128, pattern: '^\\S+$', description: 'the item’s external id' }),
    title: Type.String({ minLength: 1, maxLength: 2000 }),
    imageUrl: Type.Optional(Type.String({ minLength: 1, maxLength: 2000, description: 'path or http(s)/file URL the embedding cache can read' })),
  },
  { additionalProperties: false },
)

const ColdStartResponse = Type.Object({
  item: Type.Object({ id: Type.String(), title: Type.String(), hasImage: Type.Boolean() }),
  states: Type.Object({ text: Type.String(), image: Type.String() }, { description: 'done | failed | absent | disabled per modality' }),
  models: Type.Array(Type.Object({ modelVersionId: Type.String(), appended: Type.Integer(), isActive: Type.Boolean() }), {
    description: 'IISAN model versions that can now recommend the item (ID-based versions cannot)',
  }),
  seconds: Type.Number(),
})

export const itemRoutes: FastifyPluginAsyncTypebox<Deps> = async (app, deps) => {
  app.post(
    '/items',
    {
      schema: {
        tags: ['items'],
        summary: 'Add an item; IISAN models can recommend it within seconds, without retraining (cold start)',
        description:
          'JSON { datasetId, id, title, imageUrl? } or multipart/form-data with the same fields and an optional `image` file (JPEG, PNG, WebP…). The embedding cache computes its backbone states, then every IISAN model version of the dataset appends its SAN embedding.',
        body: { content: { 'application/json': { schema: NewItem } } },
        response: { 201: ColdStartResponse, ...errorResponses(400, 404, 413, 502) },
      },
    },
    async (request, reply) => {
      const input = request.isMultipart() ? await readMultipartItem(request) : { ...(request.body as Static<typeof NewItem>), image: undefined }
      let result
      try {
        result = await addItemsWithColdStart(deps, input.datasetId, [
          { externalId: input.id, title: input.title, imageRef: input.imageUrl ?? null, imageBlob: input.image?.bytes ?? null, imageMime: input.image?.mime ?? null },
        ])
      } catch (e) {
        if (e instanceof EmbeddingCacheClientError || (e as Error).name === 'TypeError') {
          throw new ApiError(502, 'EMBEDDING_CACHE_UNAVAILABLE', `the item was stored but the embedding cache could not encode it: ${(e as Error).message}`)
        }
        throw e
      }
      const item = result.items[0]
      const states = result.states[0] ?? { text: 'pending', image: 'pending' }
      return reply.status(201).send({
        item: { id: item.externalId, title: item.title, hasImage: item.imageHash !== null },
        states: { text: states.text, image: states.image },
        models: result.models,
        seconds: result.seconds,
      })
    },
  )

  app.get(
    '/items/:id/similar',
    {
      schema: {
        tags: ['items'],
        summary: 'Items most similar to this one by embedding (cosine), from the active or a given model',
        params: Type.Object({ id: Type.String({ minLength: 1, maxLength: 128 }) }),
        querystring: Type.Object({ datasetId: Type.Optional(Type.String({ format: 'uuid' })), modelId: Type.Optional(Type.String({ format: 'uuid' })), k: Type.Integer({ minimum: 1, maximum: 1000, default: 10 }) }),
        response: { 200: Type.Object({ modelId: Type.String(), items: Type.Array(Type.Object({ itemId: Type.String(), title: Type.String(), score: Type.Number() })) }), ...errorResponses(400, 404, 409) },
      },
    },
    async (request) => {
      const model = await resolveModel(deps, request.query.modelId, request.query.datasetId)
      const index = model.indexOfExternal.get(request.params.id)
      if (index === undefined) throw new ApiError(404, 'ITEM_NOT_IN_MODEL', `item ${request.params.id} has no embedding in model ${model.id}`)
      return { modelId: model.id, items: toRecommendations(model, model.serving.similar(index, Math.min(request.query.k, model.serving.numItems - 1))) }
    },
  )

  app.get(
    '/datasets/:id/coverage',
    {
      schema: {
        tags: ['datasets'],
        summary: 'Embedding-cache coverage of a dataset per backbone (items done / total, failed, throughput)',
        params: Type.Object({ id: Type.String({ format: 'uuid' }) }),
        response: { 200: Type.Unknown(), ...errorResponses(400, 404, 502) },
      },
    },
    async (request) => {
      try {
        return await fetchCoverage(deps.embeddingCacheUrl, request.params.id)
      } catch (e) {
        if (e instanceof EmbeddingCacheClientError && e.status === 404) throw new ApiError(404, 'NOT_FOUND', e.message)
        throw new ApiError(502, 'EMBEDDING_CACHE_UNAVAILABLE', `embedding cache: ${(e as Error).message}`)
      }
    },
  )
}

async function readMultipartItem(request: import('fastify').FastifyRequest) {
  const fields: Record<string, string> = {}
  let image: { bytes: Uint8Array; mime: string } | undefined
  for await (const part of request.parts()) {
    if (part.type === 'file') {
      if (part.fieldname !== 'image') throw new ApiError(400, 'VALIDATION_FAILED', `unexpected file field ${part.fieldname} (only "image")`)
      if (!IMAGE_TYPES.has(part.mimetype)) throw new ApiError(400, 'UNSUPPORTED_IMAGE', `image type ${part.mimetype} is not supported`)
      const bytes = await part.toBuffer()
      if (bytes.length > MAX_IMAGE_BYTES) throw new ApiError(413, 'IMAGE_TOO_LARGE', `image exceeds ${MAX_IMAGE_BYTES} bytes`)
      image = { bytes, mime: part.mimetype }
    } else fields[part.fieldname] = String(part.value)
  }
  const missing = ['datasetId', 'id', 'title'].filter((k) => !fields[k])
  if (missing.length) throw new ApiError(400, 'VALIDATION_FAILED', `missing field(s): ${missing.join(', ')}`, { missing })
  if (!/^[0-9a-f-]{36}$/i.test(fields.datasetId)) throw new ApiError(400, 'VALIDATION_FAILED', 'datasetId must be a uuid')
  return { datasetId: fields.datasetId, id: fields.id, title: fields.title, imageUrl: fields.imageUrl, image }
}

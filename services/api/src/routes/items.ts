import type { FastifyReply } from 'fastify'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type, type Static } from '@sinclair/typebox'
import { addItemsWithColdStart, toRecommendations } from '@iisan/pipeline'
import { fetchCoverage, EmbeddingCacheClientError, EmbeddingCacheRejected } from '@iisan/embedding-cache/client'
import { ApiError, DEFAULT_RETRY_AFTER_SECONDS, ID_PATTERN, SINGLE_LINE_PATTERN, bodyValidator, errorResponses } from '@iisan/http'
import { replayIdempotent } from '@iisan/http/idempotency'
import { ImageSourceError, checkImageRef } from '@iisan/embedding-cache/images'
import { MAX_TITLE_LENGTH, listItems, sanitizeTitle, titleProblem } from '@iisan/storage'
import type { Deps } from '../deps.ts'
import { FileField, documentMultipart, readMultipartFields } from '../multipart.ts'
import { resolveModel } from '../resolve-model.ts'

const IMAGE_TYPES = new Set(['image/jpeg', 'image/png', 'image/webp', 'image/gif', 'image/avif', 'image/tiff'])
const MAX_IMAGE_BYTES = 20 * 2 ** 20
/** A JSON item is a few KB at most (title and imageUrl ≤ 2000 characters); the image comes as multipart. */
const MAX_JSON_ITEM_BYTES = 64 * 2 ** 10

const NewItem = Type.Object(
  {
    datasetId: Type.String({ format: 'uuid' }),
    id: Type.String({ minLength: 1, maxLength: 128, pattern: ID_PATTERN, description: 'the item’s external id: no whitespace or control characters' }),
    title: Type.String({ minLength: 1, maxLength: MAX_TITLE_LENGTH, description: 'control characters are removed (tab, line break and CR between words become a space), as the dataset import does, and reported in `warnings`' }),
    imageUrl: Type.Optional(Type.String({ minLength: 1, maxLength: 2000, pattern: SINGLE_LINE_PATTERN, description: 'path under IMAGE_ROOT (or a file:// URL there), or an http(s) URL of a public host' })),
  },
  { additionalProperties: false },
)
const validateNewItem = bodyValidator(NewItem)
/** The multipart body, for the OpenAPI document (readMultipartItem checks its fields with NewItem). */
const MultipartItem = Type.Composite([NewItem, Type.Object({ image: Type.Optional(FileField('the item’s image: JPEG, PNG, WebP, GIF, AVIF or TIFF, at most 20 MB')) })], { additionalProperties: false })

const ColdStartResponse = Type.Object({
  item: Type.Object({ id: Type.String(), title: Type.String(), hasImage: Type.Boolean() }),
  states: Type.Object({ text: Type.String(), image: Type.String() }, { description: 'done | failed | absent | disabled per modality' }),
  models: Type.Array(Type.Object({ modelVersionId: Type.String(), appended: Type.Integer(), isActive: Type.Boolean() }), {
    description: 'IISAN model versions that can now recommend the item (ID-based versions cannot)',
  }),
  seconds: Type.Number(),
  warnings: Type.Array(Type.Object({ field: Type.String(), code: Type.String({ description: 'CONTROL_CHARACTERS_REMOVED' }), message: Type.String() }), { description: 'what was changed to make the item fit' }),
})

export const itemRoutes: FastifyPluginAsyncTypebox<Deps> = async (app, deps) => {
  app.post(
    '/items',
    {
      bodyLimit: MAX_JSON_ITEM_BYTES,
      config: { mediaTypes: ['application/json', 'multipart/form-data'], idempotent: true, swaggerTransform: documentMultipart(MultipartItem) },
      schema: {
        tags: ['items'],
        summary: 'Add an item; IISAN models can recommend it within seconds, without retraining (cold start)',
        description:
          'JSON { datasetId, id, title, imageUrl? } or multipart/form-data with the same fields and an optional `image` file (JPEG, PNG, WebP…). The embedding cache computes its backbone states, then every IISAN model version of the dataset appends its SAN embedding.',
        body: { content: { 'application/json': { schema: NewItem } } },
        response: { 201: ColdStartResponse, ...errorResponses(400, 404, 413, 415, 502) },
      },
    },
    async (request, reply) => {
      const input = request.isMultipart() ? await readMultipartItem(request) : { ...(request.body as Static<typeof NewItem>), image: undefined }
      if (await replayIdempotent(request, reply, input)) return reply
      assertImageUrlAllowed(input.imageUrl)
      const { title, warning } = sanitizeTitle(input.title)
      const problem = titleProblem(title)
      if (problem) throw new ApiError(400, 'VALIDATION_FAILED', `body/title ${problem}`, [{ instancePath: '/title', message: problem }])
      let result
      try {
        result = await addItemsWithColdStart(deps, input.datasetId, [
          { externalId: input.id, title, imageRef: input.imageUrl ?? null, imageBlob: input.image?.bytes ?? null, imageMime: input.image?.mime ?? null },
        ])
      } catch (e) {
        // addItemsWithColdStart takes the item back out when the cache fails: nothing was added
        if (isEmbeddingCacheFailure(e)) throw cacheFailure(reply, e, 'the item was NOT added: the embedding cache could not encode it')
        throw e
      }
      const item = result.items[0]
      const states = result.states[0] ?? { text: 'pending', image: 'pending' }
      return reply.status(201).send({
        item: { id: item.externalId, title: item.title, hasImage: item.imageHash !== null },
        states: { text: states.text, image: states.image },
        models: result.models,
        seconds: result.seconds,
        warnings: warning ? [{ field: 'title', ...warning }] : [],
      })
    },
  )

  app.get(
    '/items/:id/similar',
    {
      schema: {
        tags: ['items'],
        summary: 'Items most similar to this one by embedding (cosine), from the active or a given model',
        description: 'An item the model has no embedding for answers `404 ITEM_NOT_IN_MODEL`; `details.inDataset` tells a catalogue item the model cannot use (an ID-based version only has the items its training kept) from an id the dataset does not know.',
        params: Type.Object({ id: Type.String({ minLength: 1, maxLength: 128, pattern: ID_PATTERN }) }),
        querystring: Type.Object({ datasetId: Type.Optional(Type.String({ format: 'uuid' })), modelId: Type.Optional(Type.String({ format: 'uuid' })), k: Type.Integer({ minimum: 1, maximum: 1000, default: 10 }) }),
        response: { 200: Type.Object({ modelId: Type.String(), items: Type.Array(Type.Object({ itemId: Type.String(), title: Type.String(), score: Type.Number() })) }), ...errorResponses(400, 404, 409) },
      },
    },
    async (request) => {
      const model = await resolveModel(deps, request.query.modelId, request.query.datasetId)
      const itemId = request.params.id
      const index = model.indexOfExternal.get(itemId)
      if (index === undefined) {
        // the same answer either way (this model has nothing to compare), told apart for the client
        const inDataset = (await listItems(deps.prisma, model.datasetId, { externalIds: [itemId] })).length > 0
        const why = inDataset
          ? `item ${itemId} is in the catalogue, but model ${model.id} has no embedding for it (not kept by its training, or added since and not embeddable by it)`
          : `item ${itemId} is not in dataset ${model.datasetId}`
        throw new ApiError(404, 'ITEM_NOT_IN_MODEL', why, { itemId, modelId: model.id, inDataset })
      }
      return { modelId: model.id, items: toRecommendations(model, await model.similar({ index, k: Math.min(request.query.k, model.serving.numItems - 1) })) }
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
    async (request, reply) => {
      try {
        return await fetchCoverage({ url: deps.embeddingCacheUrl, token: deps.internalToken }, request.params.id)
      } catch (e) {
        if (e instanceof EmbeddingCacheClientError && e.status === 404) throw new ApiError(404, 'NOT_FOUND', e.message)
        throw cacheFailure(reply, e, 'the embedding cache could not report the coverage')
      }
    },
  )
}

/** The embedding cache's own checks of a reference (checkImageRef), so it is refused now rather than when the item is encoded. */
function assertImageUrlAllowed(imageUrl: string | undefined): void {
  try {
    checkImageRef(imageUrl)
  } catch (e) {
    if (!(e instanceof ImageSourceError)) throw e
    throw new ApiError(400, 'VALIDATION_FAILED', `body/imageUrl ${e.message}`, [{ instancePath: '/imageUrl', message: e.message }])
  }
}

/** The JSON body's fields (checked with the same schema) and an optional `image` file. */
async function readMultipartItem(request: import('fastify').FastifyRequest) {
  let images = 0
  const { fields, files } = await readMultipartFields(request, {
    limits: { fileSize: MAX_IMAGE_BYTES, files: 2, fields: 8, fieldSize: 16 * 2 ** 10, parts: 10 },
    onFile: async (part) => {
      if (part.fieldname !== 'image') throw new ApiError(400, 'VALIDATION_FAILED', `unexpected file field ${part.fieldname} (only "image")`)
      if (++images > 1) throw new ApiError(400, 'VALIDATION_FAILED', 'only one image per item')
      if (!IMAGE_TYPES.has(part.mimetype)) throw new ApiError(400, 'UNSUPPORTED_IMAGE', `image type ${part.mimetype} is not supported`)
      try {
        return { bytes: await part.toBuffer(), mime: part.mimetype }
      } catch (e) {
        if ((e as { code?: string }).code === 'FST_REQ_FILE_TOO_LARGE') throw new ApiError(413, 'IMAGE_TOO_LARGE', `image exceeds ${MAX_IMAGE_BYTES} bytes`, { limitBytes: MAX_IMAGE_BYTES })
        throw e
      }
    },
  })
  const missing = ['datasetId', 'id', 'title'].filter((k) => !fields[k])
  if (missing.length) throw new ApiError(400, 'VALIDATION_FAILED', `missing field(s): ${missing.join(', ')}`, { missing })
  return { ...validateNewItem(fields), image: files.image }
}

// Error codes of a connection that failed (Node's net/dns, undici's socket layer).
const NETWORK_ERROR_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EPIPE',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
])

/** The network error under a failed fetch (`TypeError: fetch failed`, cause → code), if any. */
function networkCause(e: unknown, depth = 0): { code: string; message: string } | undefined {
  if (depth > 4 || e === null || typeof e !== 'object') return undefined
  const { code, message, cause, errors } = e as { code?: unknown; message?: unknown; cause?: unknown; errors?: unknown }
  if (typeof code === 'string' && NETWORK_ERROR_CODES.has(code)) return { code, message: typeof message === 'string' ? message : code }
  for (const inner of [cause, ...(Array.isArray(errors) ? errors : [])]) {
    const found = networkCause(inner, depth + 1)
    if (found) return found
  }
  return undefined
}

/**
 * The embedding cache answered with an error, or could not be reached at all. Any other error
 * (a TypeError from a bug included) is not the cache's and stays a 500.
 */
export function isEmbeddingCacheFailure(e: unknown): boolean {
  if (e instanceof EmbeddingCacheClientError) return true
  return e instanceof TypeError && networkCause(e.cause) !== undefined
}

function describeFailure(e: unknown): string {
  if (e instanceof EmbeddingCacheClientError) return [e.status, e.code].filter((part) => part !== null && part !== undefined).join(' ') + `: ${e.message}`
  const cause = networkCause((e as Error).cause)
  return cause ? `${cause.code}: ${cause.message}` : (e as Error).message
}

/**
 * The cache down or failing (unreachable, 5xx): 503 with Retry-After, like every dependency that
 * is down. The cache refusing us (a 4xx: a wrong INTERNAL_TOKEN, say) is our misconfiguration
 * behind the gateway: 502.
 */
function cacheFailure(reply: FastifyReply, e: unknown, what: string): ApiError {
  if (e instanceof EmbeddingCacheRejected) return new ApiError(502, 'EMBEDDING_CACHE_REFUSED', `${what} (${describeFailure(e)})`)
  // the error code only: where the cache lives is for the log, not for clients
  reply.log.warn({ err: e }, 'embedding cache unavailable')
  const code = e instanceof EmbeddingCacheClientError ? (e.code ?? `HTTP ${e.status}`) : (networkCause((e as Error).cause)?.code ?? 'unreachable')
  reply.header('retry-after', String(DEFAULT_RETRY_AFTER_SECONDS))
  return new ApiError(503, 'DEPENDENCY_UNAVAILABLE', `${what} (${code}); try again later`, { dependency: 'embedding-cache' })
}

import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type, type Static } from '@sinclair/typebox'
import { importDatasetFromTsv } from '@iisan/pipeline'
import { getDataset, listDatasets } from '@iisan/storage'
import { ApiError, MULTI_LINE_PATTERN, SINGLE_LINE_PATTERN, bodyValidator, errorResponses } from '@iisan/http'
import { replayIdempotent } from '@iisan/http/idempotency'
import type { Deps } from '../deps.ts'
import { readMultipartFields } from '../multipart.ts'

/** items.tsv + users.tsv of a dataset, as a JSON body or as multipart files. */
const MAX_UPLOAD_BYTES = 256 * 2 ** 20

export const DatasetSchema = Type.Object({
  id: Type.String({ format: 'uuid' }),
  name: Type.String(),
  description: Type.Union([Type.String(), Type.Null()]),
  createdAt: Type.String({ format: 'date-time' }),
  numItems: Type.Integer(),
  numUsers: Type.Integer(),
  numInteractions: Type.Integer(),
  stats: Type.Unknown(),
})

const JsonImport = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: 200, pattern: SINGLE_LINE_PATTERN, description: 'no control characters' }),
    description: Type.Optional(Type.String({ maxLength: 2000, pattern: MULTI_LINE_PATTERN, description: 'no control characters but tab and newline' })),
    // control characters in the files are reported as MALFORMED_FILE with the line (import-dataset.ts)
    itemsTsv: Type.String({ minLength: 1, description: 'items.tsv content: item_id<TAB>title per line' }),
    usersTsv: Type.String({ minLength: 1, description: 'users.tsv content: user_id<TAB>item_id item_id … (oldest first)' }),
  },
  { additionalProperties: false },
)
const validateImport = bodyValidator(JsonImport)

export const datasetRoutes: FastifyPluginAsyncTypebox<Deps> = async (app, deps) => {
  app.post(
    '/datasets',
    {
      bodyLimit: MAX_UPLOAD_BYTES,
      config: { mediaTypes: ['application/json', 'multipart/form-data'], idempotent: true },
      schema: {
        tags: ['datasets'],
        summary: 'Import items.tsv + users.tsv as a new dataset (one transaction)',
        description:
          'Either a JSON body { name, itemsTsv, usersTsv } or multipart/form-data with a `name` field and files `items` and `users`. A malformed line → 400 MALFORMED_FILE naming the file and line.',
        // JSON bodies are validated by Fastify with this schema; multipart ones in readMultipart with the same schema
        body: { content: { 'application/json': { schema: JsonImport } } },
        response: { 201: DatasetSchema, ...errorResponses(400, 413, 415) },
      },
    },
    async (request, reply) => {
      const input = request.isMultipart() ? await readMultipart(request) : (request.body as Static<typeof JsonImport>)
      // the multipart upload's key is claimed with the parsed input: the same request as that JSON body
      if (await replayIdempotent(request, reply, input)) return reply
      const dataset = await importDatasetFromTsv(deps.prisma, input)
      return reply.status(201).send(serializeDataset(dataset))
    },
  )

  app.get('/datasets', { schema: { tags: ['datasets'], summary: 'List datasets', response: { 200: Type.Object({ datasets: Type.Array(DatasetSchema) }) } } }, async () => ({
    datasets: (await listDatasets(deps.prisma)).map(serializeDataset),
  }))

  app.get(
    '/datasets/:id',
    { schema: { tags: ['datasets'], summary: 'One dataset', params: Type.Object({ id: Type.String({ format: 'uuid' }) }), response: { 200: DatasetSchema, ...errorResponses(400, 404) } } },
    async (request) => {
      const dataset = await getDataset(deps.prisma, request.params.id)
      if (!dataset) throw new ApiError(404, 'NOT_FOUND', `dataset ${request.params.id} not found`)
      return serializeDataset(dataset)
    },
  )
}

/** The `name` (and `description`) fields and the `items`, `users` files (or fields), checked as the JSON body is. */
async function readMultipart(request: import('fastify').FastifyRequest) {
  const read = await readMultipartFields(request, {
    limits: { fileSize: MAX_UPLOAD_BYTES, fieldSize: MAX_UPLOAD_BYTES, files: 2, fields: 8, parts: 10 },
    onFile: async (part) => (await part.toBuffer()).toString('utf8'),
  })
  const all = { ...read.fields, ...read.files }
  const { items, users, ...fields } = all
  const missing = ['name', 'items', 'users'].filter((k) => !all[k])
  if (missing.length) throw new ApiError(400, 'VALIDATION_FAILED', `multipart body needs a name field and files items, users; missing: ${missing.join(', ')}`, { missing })
  return validateImport({ ...fields, itemsTsv: items, usersTsv: users })
}

export const ItemSchema = Type.Object({ id: Type.String({ description: 'external item id' }), title: Type.String(), hasImage: Type.Boolean(), createdAt: Type.String({ format: 'date-time' }) })

export const datasetItemRoutes: FastifyPluginAsyncTypebox<Deps> = async (app, deps) => {
  app.get(
    '/datasets/:id/items',
    {
      schema: {
        tags: ['datasets'],
        summary: 'Items of a dataset, optionally filtered by a title search',
        params: Type.Object({ id: Type.String({ format: 'uuid' }) }),
        querystring: Type.Object({
          q: Type.Optional(Type.String({ maxLength: 200, pattern: SINGLE_LINE_PATTERN, description: 'case-insensitive substring of the title or the item id' })),
          limit: Type.Integer({ minimum: 1, maximum: 500, default: 50 }),
          offset: Type.Integer({ minimum: 0, maximum: 2 ** 31 - 1, default: 0 }),
        }),
        response: { 200: Type.Object({ items: Type.Array(ItemSchema), total: Type.Integer() }), ...errorResponses(400, 404) },
      },
    },
    async (request) => {
      const { id } = request.params
      if (!(await getDataset(deps.prisma, id))) throw new ApiError(404, 'NOT_FOUND', `dataset ${id} not found`)
      const { q, limit, offset } = request.query
      const where = {
        datasetId: id,
        ...(q ? { OR: [{ title: { contains: q, mode: 'insensitive' as const } }, { externalId: q }] } : {}),
      }
      const [rows, total] = await Promise.all([
        deps.prisma.item.findMany({ where, orderBy: { id: 'asc' }, take: limit, skip: offset, select: { externalId: true, title: true, imageRef: true, imageHash: true, createdAt: true } }),
        deps.prisma.item.count({ where }),
      ])
      return { items: rows.map((r) => ({ id: r.externalId, title: r.title, hasImage: r.imageHash !== null, createdAt: r.createdAt.toISOString() })), total }
    },
  )
}

function serializeDataset(d: { id: string; name: string; description: string | null; createdAt: Date; numItems: number; numUsers: number; numInteractions: number; stats: unknown }) {
  return { ...d, createdAt: d.createdAt.toISOString(), stats: d.stats ?? null }
}

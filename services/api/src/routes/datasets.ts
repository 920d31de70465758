import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type, type Static } from '@sinclair/typebox'
import { PAPER_PROTOCOL } from '@iisan/model/data'
import { DatasetFilesError, MAX_REPORTED_PROBLEMS, importDatasetFromTsv } from '@iisan/pipeline'
import { getDataset, listDatasets, purgeDataset, searchItems, withCurrentStats, type Dataset } from '@iisan/storage'
import { ApiError, MULTI_LINE_PATTERN, SINGLE_LINE_PATTERN, bodyValidator, errorResponses } from '@iisan/http'
import { replayIdempotent } from '@iisan/http/idempotency'
import type { Deps } from '../deps.ts'
import { FileField, documentMultipart, readMultipartFields } from '../multipart.ts'
import { forgetModelVersions } from './model-versions.ts'

/** items.tsv + users.tsv of a dataset, as a JSON body or as multipart files. */
const MAX_UPLOAD_BYTES = 256 * 2 ** 20

const IdParams = Type.Object({ id: Type.String({ format: 'uuid' }) })

const StatsSchema = Type.Object(
  {
    minSequenceLength: Type.Integer(),
    maxSequenceLength: Type.Integer(),
    meanSequenceLength: Type.Number(),
    medianSequenceLength: Type.Number(),
    density: Type.Number({ description: 'distinct user–item pairs / (users × items); repeated interactions count once' }),
    distinctPairs: Type.Integer(),
    coldItems: Type.Integer({ description: 'items in no user’s history' }),
    protocol: Type.Optional(
      Type.Object(
        { minInteractions: Type.Integer(), maxSeqLen: Type.Integer(), usersKept: Type.Integer(), itemsKept: Type.Integer(), interactionsKept: Type.Integer() },
        { description: 'what training keeps (docs/METHOD.md §6): users with ≥ minInteractions, each user’s last maxSeqLen + 3 items, the items that then occur' },
      ),
    ),
    asOf: Type.Object({ numItems: Type.Integer(), numInteractions: Type.Integer() }, { description: 'the counts these figures were computed at; they are recomputed when read after items or events were added' }),
  },
  { additionalProperties: true },
)

export const DatasetSchema = Type.Object({
  id: Type.String({ format: 'uuid' }),
  name: Type.String(),
  description: Type.Union([Type.String(), Type.Null()]),
  createdAt: Type.String({ format: 'date-time' }),
  numItems: Type.Integer(),
  numUsers: Type.Integer(),
  numInteractions: Type.Integer(),
  stats: Type.Union([StatsSchema, Type.Null()]),
})

const ImportedSchema = Type.Composite([
  DatasetSchema,
  Type.Object({
    warnings: Type.Array(
      Type.Object({ file: Type.String(), line: Type.Integer(), code: Type.String({ description: 'CONTROL_CHARACTERS_REMOVED' }), message: Type.String() }),
      { description: `what the import changed to make the files fit, the first ${MAX_REPORTED_PROBLEMS}` },
    ),
    totalWarnings: Type.Integer(),
  }),
])

// in backticks: the /docs page renders descriptions as Markdown, where <TAB> would be a tag
const ITEMS_TSV = 'items.tsv: `item_id<TAB>title[<TAB>image path or URL]` per line'
const USERS_TSV = 'users.tsv: `user_id<TAB>item_id item_id …` (oldest first) per line'

const JsonImport = Type.Object(
  {
    // examples: the /docs page's form would otherwise start from strings made up from the patterns
    name: Type.String({ minLength: 1, maxLength: 200, pattern: SINGLE_LINE_PATTERN, description: 'no control characters', examples: ['scientific'] }),
    description: Type.Optional(Type.String({ maxLength: 2000, pattern: MULTI_LINE_PATTERN, description: 'no control characters but tab and newline', examples: ['Amazon Industrial & Scientific'] })),
    // control characters in the files are removed from titles (warnings) or reported as MALFORMED_FILE with the line (import-dataset.ts)
    itemsTsv: Type.String({ minLength: 1, description: ITEMS_TSV }),
    usersTsv: Type.String({ minLength: 1, description: USERS_TSV }),
  },
  { additionalProperties: false },
)
const validateImport = bodyValidator(JsonImport)

/** The multipart upload, for the OpenAPI document (readMultipart checks it with JsonImport). */
const MultipartImport = Type.Object(
  { name: JsonImport.properties.name, description: JsonImport.properties.description, items: FileField(ITEMS_TSV), users: FileField(USERS_TSV) },
  { additionalProperties: false },
)

export const datasetRoutes: FastifyPluginAsyncTypebox<Deps> = async (app, deps) => {
  app.post(
    '/datasets',
    {
      bodyLimit: MAX_UPLOAD_BYTES,
      config: { mediaTypes: ['application/json', 'multipart/form-data'], idempotent: true, swaggerTransform: documentMultipart(MultipartImport) },
      schema: {
        tags: ['datasets'],
        summary: 'Import items.tsv + users.tsv as a new dataset (one transaction)',
        description: [
          'Either a JSON body { name, itemsTsv, usersTsv } or multipart/form-data with a `name` field and files `items` and `users`.',
          `Every line is checked first: malformed lines → 400 MALFORMED_FILE with details.errors [{ file, line, message }] (the first ${MAX_REPORTED_PROBLEMS}) and details.total, and nothing is written.`,
          'Control characters in titles are removed (tab, line break and CR between words become a space) and listed in `warnings` with their lines.',
        ].join(' '),
        // JSON bodies are validated by Fastify with this schema; multipart ones in readMultipart with the same schema
        body: { content: { 'application/json': { schema: JsonImport } } },
        response: { 201: ImportedSchema, ...errorResponses(400, 413, 415) },
      },
    },
    async (request, reply) => {
      const input = request.isMultipart() ? await readMultipart(request) : (request.body as Static<typeof JsonImport>)
      // the multipart upload's key is claimed with the parsed input: the same request as that JSON body
      if (await replayIdempotent(request, reply, input)) return reply
      let imported
      try {
        imported = await importDatasetFromTsv(deps.prisma, input)
      } catch (e) {
        if (!(e instanceof DatasetFilesError)) throw e
        // the first error as every MALFORMED_FILE names it, then all of them
        throw new ApiError(400, 'MALFORMED_FILE', e.message, { file: `${e.file}.tsv`, line: e.line, reason: e.reason, errors: e.errors, total: e.total })
      }
      return reply.status(201).send({ ...serializeDataset(imported.dataset), warnings: imported.warnings, totalWarnings: imported.totalWarnings })
    },
  )

  app.get('/datasets', { schema: { tags: ['datasets'], summary: 'List datasets', response: { 200: Type.Object({ datasets: Type.Array(DatasetSchema) }) } } }, async () => ({
    datasets: (await withCurrentStats(deps.prisma, await listDatasets(deps.prisma), PAPER_PROTOCOL)).map(serializeDataset),
  }))

  app.get(
    '/datasets/:id',
    { schema: { tags: ['datasets'], summary: 'One dataset, with its statistics as they are now', params: IdParams, response: { 200: DatasetSchema, ...errorResponses(400, 404) } } },
    async (request) => {
      const dataset = await getDataset(deps.prisma, request.params.id)
      if (!dataset) throw new ApiError(404, 'NOT_FOUND', `dataset ${request.params.id} not found`)
      const [current] = await withCurrentStats(deps.prisma, [dataset], PAPER_PROTOCOL)
      return serializeDataset(current!)
    },
  )

  app.delete(
    '/datasets/:id',
    {
      schema: {
        tags: ['datasets'],
        summary: 'Delete a dataset with its items, users, interactions, training jobs and model versions (one transaction)',
        description:
          'A dataset with a running training job is not deleted: 409 JOB_RUNNING names the jobs; cancel them first. Queued jobs go with it (and leave the queue). Every API replica drops the dataset’s models from memory. Cached backbone states stay (other datasets may share them): `npm run cache:gc` removes those no item references.',
        params: IdParams,
        response: { 204: Type.Null({ description: 'deleted' }), ...errorResponses(400, 404, 409) },
      },
    },
    async (request, reply) => {
      const { id } = request.params
      const outcome = await purgeDataset(deps.prisma, id)
      if (!outcome) throw new ApiError(404, 'NOT_FOUND', `dataset ${id} not found`)
      if ('runningJobIds' in outcome) {
        const jobs = outcome.runningJobIds.join(', ')
        throw new ApiError(409, 'JOB_RUNNING', `dataset ${id} has a running training job (${jobs}): cancel it (POST /v1/training-jobs/:id/cancel), then delete the dataset`, { runningJobIds: outcome.runningJobIds })
      }
      const { modelVersionIds, queuedJobIds } = outcome.purged
      await forgetModelVersions(deps, id, modelVersionIds, request.log)
      // best effort: an entry left behind finds its job gone and ends there
      await Promise.all(queuedJobIds.map((jobId) => deps.trainingQueue.remove(jobId).catch((err) => request.log.warn({ err, trainingJobId: jobId }, 'could not remove the queue entry'))))
      return reply.status(204).send(null)
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
        summary: 'Items of a dataset in catalogue order, optionally filtered by a search term',
        params: IdParams,
        querystring: Type.Object({
          q: Type.Optional(
            Type.String({ maxLength: 200, pattern: SINGLE_LINE_PATTERN, description: 'case-insensitive substring of the title or of the item id (% and _ match themselves); trigram-indexed from three characters on' }),
          ),
          limit: Type.Integer({ minimum: 1, maximum: 500, default: 50 }),
          offset: Type.Integer({ minimum: 0, maximum: 2 ** 31 - 1, default: 0 }),
        }),
        response: { 200: Type.Object({ items: Type.Array(ItemSchema), total: Type.Integer() }), ...errorResponses(400, 404) },
      },
    },
    async (request) => {
      const { id } = request.params
      if (!(await getDataset(deps.prisma, id))) throw new ApiError(404, 'NOT_FOUND', `dataset ${id} not found`)
      const { items, total } = await searchItems(deps.prisma, id, request.query)
      return { items: items.map((r) => ({ id: r.externalId, title: r.title, hasImage: r.imageHash !== null, createdAt: r.createdAt.toISOString() })), total }
    },
  )
}

function serializeDataset(d: Dataset) {
  return { ...d, createdAt: d.createdAt.toISOString(), stats: (d.stats as Static<typeof StatsSchema> | null) ?? null }
}

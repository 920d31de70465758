// Builds the API: plugins and routes only; connections come in through `deps`.
import Fastify, { type FastifyServerOptions } from 'fastify'
import multipart from '@fastify/multipart'
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { Gauge } from 'prom-client'
import { apiKeyAuth, errorHandling, healthCheck, mediaTypeGuard, metrics, storageErrors } from '@iisan/http'
import { idempotency } from '@iisan/http/idempotency'
import { AJV_OPTIONS, requestValidation } from '@iisan/http/validation'
import { dataFormatErrors } from './errors.ts'
import type { Deps } from './deps.ts'
import { datasetItemRoutes, datasetRoutes } from './routes/datasets.ts'
import { eventRoutes } from './routes/events.ts'
import { itemRoutes } from './routes/items.ts'
import { methodRoutes } from './routes/methods.ts'
import { trainingJobRoutes } from './routes/training-jobs.ts'
import { modelVersionRoutes } from './routes/model-versions.ts'
import { recommendationRoutes } from './routes/recommendations.ts'
import { adminRoutes } from './routes/admin.ts'

/** Every JSON body but a dataset upload's is small; the two upload routes set their own limits. */
const BODY_LIMIT_BYTES = 2 ** 20

export async function buildApp(deps: Deps, options: { logger?: FastifyServerOptions['loggerInstance']; apiKeys?: string[] } = {}) {
  const app = Fastify({
    loggerInstance: options.logger,
    bodyLimit: BODY_LIMIT_BYTES,
    ajv: { customOptions: AJV_OPTIONS },
  }).withTypeProvider<TypeBoxTypeProvider>()

  await app.register(errorHandling, { codeExamples: ['VALIDATION_FAILED', 'UNKNOWN_ITEMS'], mappings: [dataFormatErrors, storageErrors] })
  // Defaults for any multipart body; POST /v1/datasets and POST /v1/items pass their own limits.
  await app.register(multipart, { limits: { fileSize: BODY_LIMIT_BYTES, files: 1, fields: 10, fieldSize: 64 * 2 ** 10, parts: 20 } })
  // 415 for a body in a media type its route does not take (registered before any route)
  await app.register(mediaTypeGuard)
  await app.register(idempotency({ prisma: deps.prisma }))
  // validation messages in words, fields with defaults documented as optional (before any route)
  await app.register(requestValidation)
  await app.register(swagger, {
    openapi: {
      info: { title: 'IISAN recommendation platform', version: '0.1.0', description: 'Multimodal sequential recommendations trained with IISAN.' },
      // with API_KEYS set, every /v1 route needs `Authorization: Bearer <key>`
      components: { securitySchemes: { apiKey: { type: 'http', scheme: 'bearer' } } },
      ...(options.apiKeys?.length ? { security: [{ apiKey: [] }] } : {}),
      tags: [
        { name: 'datasets' },
        { name: 'training' },
        { name: 'models' },
        { name: 'recommendations' },
        { name: 'events' },
        { name: 'items' },
        { name: 'operations' },
      ],
    },
  })
  await app.register(swaggerUi, { routePrefix: '/docs' })

  await app.register(
    metrics({
      service: 'api',
      register: (registry) => {
        new Gauge({
          name: 'iisan_active_models',
          // every replica sees the same datasets: the cluster-wide figure is any one replica's, not their sum
          aggregator: 'max',
          help: 'datasets with an active model, as this replica sees them',
          registers: [registry],
          collect() {
            this.set(deps.registry.activeModelIds().size)
          },
        })
        // requests per batch = the ratio of the two; near 1 means the load gives nothing to batch
        // summed over replicas: a version is served from its index everywhere once this reaches replicas × versions
        new Gauge({
          name: 'iisan_serving_indexed_models',
          help: 'model versions this replica answers from its approximate indexes, recommendations and similar items alike (the others, building or small, scan exactly)',
          registers: [registry],
          collect() {
            this.set(deps.registry.indexedModelIds().length)
          },
        })
        new Gauge({
          name: 'iisan_serving_batches',
          help: 'batches the recommendation and similar-items hot path has run in this replica',
          registers: [registry],
          collect() {
            this.set(deps.registry.batchingStats().batches)
          },
        })
        new Gauge({
          name: 'iisan_serving_batched_requests',
          help: 'requests those batches answered',
          registers: [registry],
          collect() {
            this.set(deps.registry.batchingStats().requests)
          },
        })
      },
    }),
  )
  await app.register(healthCheck({ prisma: deps.prisma, redis: deps.redis, summary: 'Liveness and dependencies: PostgreSQL and Redis' }))
  await app.register(
    async (v1) => {
      // First in this scope, so its hook covers every route below, however the URL is spelled
      await v1.register(apiKeyAuth({ keys: options.apiKeys ?? [] }))
      await v1.register(datasetRoutes, deps)
      await v1.register(datasetItemRoutes, deps)
      await v1.register(eventRoutes, deps)
      await v1.register(itemRoutes, deps)
      await v1.register(methodRoutes, deps)
      await v1.register(trainingJobRoutes, deps)
      await v1.register(modelVersionRoutes, deps)
      await v1.register(recommendationRoutes, deps)
    },
    { prefix: '/v1' },
  )
  await app.register(adminRoutes)
  return app
}

// What the route plugins receive: the service's connections, created once in main.ts.
import type { Redis, TrainingQueue } from '@iisan/queue'
import type { ServingRegistry } from '@iisan/pipeline'
import type { PrismaClient } from '@iisan/storage'

export interface Deps {
  prisma: PrismaClient
  redis: Redis
  trainingQueue: TrainingQueue
  registry: ServingRegistry
  /** Base URL of the embedding-cache service (cold start, cache coverage). */
  embeddingCacheUrl: string
  /** INTERNAL_TOKEN: the embedding cache's service token (unset: a cache without one). */
  internalToken?: string
  /** Tells every API replica that a dataset's active model changed. */
  announceActivation(datasetId: string, modelVersionId: string): Promise<void>
  /** Tells every API replica that a model version grew (cold-start items appended). */
  announceUpdated(datasetId: string, modelVersionId: string): Promise<void>
}

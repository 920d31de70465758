/** @iisan/queue — queue names, job payload schemas, Redis connections, pub/sub events. */
export { createRedisConnection, type Redis, type RedisOptions } from './connection.ts'
export {
  QUEUE_NAMES,
  JOB_NAMES,
  TRAINING_JOB_DEFAULTS,
  EMBEDDING_CACHE_JOB_DEFAULTS,
  createTrainingQueue,
  createEmbeddingCacheQueue,
  enqueueTrainingJob,
  enqueueEmbeddingChunk,
  createTrainingWorker,
  createEmbeddingCacheWorker,
  type QueueName,
  type TrainingQueue,
  type EmbeddingCacheQueue,
  type WorkerCreateOptions,
} from './queues.ts'
export {
  TrainingJobPayloadSchema,
  EmbeddingCacheJobPayloadSchema,
  TrainingProgressSchema,
  ModelActivatedEventSchema,
  parseTrainingJobPayload,
  parseEmbeddingCacheJobPayload,
  parseModelActivatedEvent,
  QueuePayloadError,
  type TrainingJobPayload,
  type EmbeddingCacheJobPayload,
  type TrainingProgress,
  type ModelActivatedEvent,
} from './payloads.ts'
export {
  MODEL_ACTIVATED,
  modelActivatedChannel,
  publishModelActivated,
  subscribeModelActivated,
  type Subscription,
} from './events.ts'

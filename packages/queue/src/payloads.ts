import { Type, type Static, type TSchema } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'

const UUID_PATTERN = '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
const Uuid = (description: string) => Type.String({ pattern: UUID_PATTERN, description })

/** `training` queue: the full job (method, config) lives in Postgres (TrainingJob). */
export const TrainingJobPayloadSchema = Type.Object(
  { trainingJobId: Uuid('TrainingJob.id; also used as the BullMQ job id (idempotent enqueue)') },
  { $id: 'TrainingJobPayload', additionalProperties: false },
)
export type TrainingJobPayload = Static<typeof TrainingJobPayloadSchema>

/** `embedding-cache` queue: one chunk of items of a cache build to encode with one backbone. */
export const EmbeddingCacheJobPayloadSchema = Type.Object(
  {
    cacheBuildId: Uuid('CacheBuild.id'),
    datasetId: Uuid('Dataset.id'),
    backboneId: Type.Integer({ minimum: 1, description: 'Backbone.id' }),
    itemIds: Type.Array(Type.Integer({ minimum: 1 }), { minItems: 1, description: 'Item.id of the chunk' }),
  },
  { $id: 'EmbeddingCacheJobPayload', additionalProperties: false },
)
export type EmbeddingCacheJobPayload = Static<typeof EmbeddingCacheJobPayloadSchema>

/** Suggested shape of a training job's progress (BullMQ job progress and TrainingJob.progress). */
export const TrainingProgressSchema = Type.Object(
  {
    phase: Type.Union([
      Type.Literal('loading'),
      Type.Literal('training'),
      Type.Literal('evaluating'),
      Type.Literal('saving'),
      Type.Literal('done'),
    ]),
    epoch: Type.Optional(Type.Integer({ minimum: 0 })),
    totalEpochs: Type.Optional(Type.Integer({ minimum: 0 })),
    step: Type.Optional(Type.Integer({ minimum: 0 })),
    totalSteps: Type.Optional(Type.Integer({ minimum: 0 })),
    trainLoss: Type.Optional(Type.Number()),
    valHr10: Type.Optional(Type.Number()),
    valNdcg10: Type.Optional(Type.Number()),
    sequencesPerSecond: Type.Optional(Type.Number({ minimum: 0 })),
    message: Type.Optional(Type.String()),
  },
  { $id: 'TrainingProgress', additionalProperties: true },
)
export type TrainingProgress = Static<typeof TrainingProgressSchema>

/** Published on `<prefix>:model-activated` when a model version becomes the active one. */
export const ModelActivatedEventSchema = Type.Object(
  {
    datasetId: Uuid('Dataset.id'),
    modelVersionId: Uuid('ModelVersion.id'),
    activatedAt: Type.String({ description: 'ISO-8601 timestamp' }),
  },
  { $id: 'ModelActivatedEvent', additionalProperties: false },
)
export type ModelActivatedEvent = Static<typeof ModelActivatedEventSchema>

/** A served model changed in place (e.g. cold-start items appended): replicas reload it. */
export const ModelUpdatedEventSchema = Type.Object(
  {
    datasetId: Uuid('Dataset.id'),
    modelVersionId: Uuid('ModelVersion.id'),
    reason: Type.Union([Type.Literal('items-appended')]),
  },
  { $id: 'ModelUpdatedEvent', additionalProperties: false },
)
export type ModelUpdatedEvent = Static<typeof ModelUpdatedEventSchema>

export class QueuePayloadError extends Error {
  readonly code = 'INVALID_PAYLOAD'
  constructor(
    readonly schema: string,
    readonly errors: { path: string; message: string }[],
  ) {
    super(`invalid ${schema}: ${errors.map((e) => `${e.path || '/'} ${e.message}`).join('; ')}`)
    this.name = 'QueuePayloadError'
  }
}

function parser<T extends TSchema>(schema: T): (data: unknown) => Static<T> {
  return (data) => {
    if (Value.Check(schema, data)) return data
    const errors = [...Value.Errors(schema, data)].slice(0, 10).map((e) => ({ path: e.path, message: e.message }))
    throw new QueuePayloadError(String(schema.$id ?? 'payload'), errors)
  }
}

/** Validate a job's data (throws QueuePayloadError). */
export const parseTrainingJobPayload = parser(TrainingJobPayloadSchema)
export const parseEmbeddingCacheJobPayload = parser(EmbeddingCacheJobPayloadSchema)
export const parseModelActivatedEvent = parser(ModelActivatedEventSchema)
export const parseModelUpdatedEvent = parser(ModelUpdatedEventSchema)

// The JSON schemas of POST /v1/recommendations: the route validates and serialises through them,
// and bench/serve.ts's HTTP-exchange reference serves the same exchange without a model.
import { Type } from '@sinclair/typebox'
import { ID_PATTERN } from '@iisan/http/patterns'

const MAX_K = 1000
/** Longest explicit history, and how much of a stored one a response shows. */
export const MAX_HISTORY = 1000

export const RecommendationRequest = Type.Object(
  {
    modelId: Type.Optional(Type.String({ format: 'uuid', description: 'a model version; default: the active model of datasetId (or the only active model)' })),
    datasetId: Type.Optional(Type.String({ format: 'uuid' })),
    history: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 128, pattern: ID_PATTERN }), { minItems: 1, maxItems: MAX_HISTORY, description: 'item ids, oldest first' })),
    userId: Type.Optional(Type.String({ minLength: 1, maxLength: 128, pattern: ID_PATTERN, description: 'a user of the dataset; their stored history is used' })),
    k: Type.Integer({ minimum: 1, maximum: MAX_K, default: 10 }),
  },
  { additionalProperties: false },
)

export const RecommendationResponse = Type.Object({
  modelId: Type.String(),
  method: Type.String(),
  items: Type.Array(Type.Object({ itemId: Type.String(), title: Type.String(), score: Type.Number() })),
  skippedItemIds: Type.Array(Type.String(), {
    description:
      'catalogue items of the history that this model has no embedding for (an ID-based version only has the items its training protocol kept; any version lacks items added since that it could not embed): left out of the user state. Distinct, in order of first occurrence.',
  }),
  history: Type.Optional(
    Type.Array(Type.Object({ itemId: Type.String(), title: Type.String(), skipped: Type.Boolean({ description: 'listed in skippedItemIds' }) }), {
      description: `userId requests only: the stored history, oldest first (its last ${MAX_HISTORY} interactions)`,
    }),
  ),
})

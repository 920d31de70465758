// The training methods this deployment can train, read from the registry: what each reads, its
// learning-rate groups, whether it can cold-start, and its complete default config. Clients (the
// dashboard's new-job form among them) build their choices from here instead of keeping a copy.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type, type SchemaOptions } from '@sinclair/typebox'
import { PARAM_GROUPS, type ParamGroup } from '@iisan/model/params'
import { RATE_OF_GROUP } from '@iisan/model/trainer'
import { ITEM_SOURCES, type AnyTrainingMethod } from '@iisan/model/methods/method'
import { METHODS, METHOD_NAMES, findMethod } from '@iisan/model/methods/registry'
import { TrainingConfigSchema, configKeysOf, defaultTrainingConfig } from '@iisan/model/methods/settings'
import { ApiError, errorResponses } from '@iisan/http'
import type { Deps } from '../deps.ts'

/** A union of string literals, typed as the union of `values` (a mapped array loses the tuple type). */
const oneOf = <T extends string>(values: readonly T[], options: SchemaOptions = {}) => Type.Unsafe<T>(Type.Union(values.map((v) => Type.Literal(v)), options))

const MethodSchema = Type.Object({
  name: Type.String({ description: 'what POST /v1/training-jobs takes as `method`' }),
  summary: Type.String(),
  reads: oneOf(ITEM_SOURCES, {
    description: "what the method reads per item: its id only; the frozen backbones' states from the embedding cache; or the title and image themselves, run through the backbones in every step",
  }),
  capabilities: Type.Object({
    coldStart: Type.Boolean({ description: 'can embed an item added after training (POST /v1/items) without training again' }),
  }),
  paramGroups: Type.Array(
    Type.Object({
      group: oneOf(PARAM_GROUPS),
      holds: Type.String({ description: "the method's parameters in this group" }),
      rateKey: oneOf([...new Set(Object.values(RATE_OF_GROUP))], { description: "the config key of this group's learning rate" }),
    }),
    { description: 'the learning-rate groups its trainable parameters fall in' },
  ),
  defaults: Type.Partial(TrainingConfigSchema, { description: "the complete config a job of this method trains with when given none: the shared defaults and the method's paper values" }),
  configKeys: Type.Array(Type.String(), { description: "the config keys the method reads: the shared ones and its own; another method's keys are accepted by POST /v1/training-jobs and ignored" }),
})

function describeMethod(method: AnyTrainingMethod) {
  return {
    name: method.name,
    summary: method.summary,
    reads: method.reads,
    capabilities: { coldStart: method.capabilities.coldStart },
    paramGroups: (Object.entries(method.paramGroups) as [ParamGroup, string][]).map(([group, holds]) => ({ group, holds, rateKey: RATE_OF_GROUP[group] })),
    defaults: defaultTrainingConfig(method),
    configKeys: configKeysOf(method),
  }
}

export const methodRoutes: FastifyPluginAsyncTypebox<Deps> = async (app) => {
  app.get(
    '/methods',
    {
      schema: {
        tags: ['training'],
        summary: 'The training methods, in the order the paper compares them, with their parameter groups and default configs',
        response: { 200: Type.Object({ methods: Type.Array(MethodSchema) }) },
      },
    },
    async () => ({ methods: METHODS.map(describeMethod) }),
  )

  app.get(
    '/methods/:name',
    {
      schema: {
        tags: ['training'],
        summary: 'One training method',
        params: Type.Object({ name: Type.String({ minLength: 1, maxLength: 100 }) }),
        response: { 200: MethodSchema, ...errorResponses(400, 404) },
      },
    },
    async (request) => {
      const method = findMethod(request.params.name)
      if (!method) throw new ApiError(404, 'NOT_FOUND', `training method ${JSON.stringify(request.params.name)} not found (available: ${METHOD_NAMES.join(', ')})`, { available: METHOD_NAMES })
      return describeMethod(method)
    },
  )
}

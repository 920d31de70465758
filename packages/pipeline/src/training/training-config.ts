// The training-job request as the API, the worker and the CLI see it: the method (from the
// registry) and the settings (one schema, @iisan/model's methods/settings.ts).
import { Type } from '@sinclair/typebox'
import { METHODS } from '@iisan/model/methods/registry'

export { TrainingConfigSchema, defaultTrainingConfig, trainingConfigProblems, trainOptionsOf, type TrainingConfig, type TrainingConfigProblem } from '@iisan/model/methods/settings'

export const TrainingMethodSchema = Type.Union(
  METHODS.map((m) => Type.Literal(m.name)),
  { description: METHODS.map((m) => `${m.name}: ${m.summary}`).join('; ') },
)

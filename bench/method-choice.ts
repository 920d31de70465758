// The method a step bench runs, from the registry, and the inputs it reads at base shapes: random
// cached states for `cached-states` methods (a step's cost does not depend on their values),
// nothing for ID methods. Methods that run the backbones are measured by bench:methods.
import { METHODS, getMethod, type AnyTrainingMethod, type MethodInputs } from '@iisan/model'
import { fail } from '@iisan/pipeline/cli/args'
import { randomBaseStates, type StatesPlace } from './random-states.ts'

const STEP_BENCH_READS = new Set(['item-ids', 'cached-states'])

export const STEP_BENCH_METHODS = METHODS.filter((m) => STEP_BENCH_READS.has(m.reads)).map((m) => m.name)

export function stepBenchMethod(name: string | undefined): AnyTrainingMethod {
  const method = METHODS.find((m) => m.name === name)
  if (!method || !STEP_BENCH_READS.has(method.reads)) fail(`--method must be one of ${STEP_BENCH_METHODS.join(', ')} (got ${JSON.stringify(name)}; bench:methods runs the others)`)
  return getMethod(method.name)
}

export function randomBaseInputs(method: AnyTrainingMethod, numItems: number, place?: StatesPlace): MethodInputs {
  return method.reads === 'cached-states' ? { states: { text: randomBaseStates(numItems, 1, { place }), image: randomBaseStates(numItems, 2, { place }) } } : {}
}

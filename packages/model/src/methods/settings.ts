// A training job's settings: one schema for the API's validation, the OpenAPI document, the CLI
// and the worker, and one function that completes a job's settings with its method's defaults.
// Keys every method reads carry their default in the schema; a method's own keys (and the rates
// and batch size, whose paper values differ per method) get theirs from the method's descriptor,
// so the schema states them per method in the description instead.
import { Type, type Static, type TProperties } from '@sinclair/typebox'
import { PAPER_TRAINING, type LearningRates } from '../trainer.ts'
import { PAPER_USER_ENCODER } from '../user-encoder.ts'
import type { AnyTrainingMethod } from './method.ts'
import { METHODS } from './registry.ts'

const RATE_GROUPS: Record<keyof LearningRates, string> = {
  lrItem: "sasrec-id's item-ID table",
  lrUser: '"recsys": the user encoder, the fusion and the projections into D',
  lrTextEncoder: 'the text backbone side: IISAN\'s text F; the trained BERT weights of fft and bitfit',
  lrImageEncoder: 'the image backbone side: IISAN\'s image F and gates; the trained ViT weights of fft and bitfit',
  lrTextAdapters: "the text adapters: IISAN's text SANBs; adapter's and lora's BERT adapters",
  lrImageAdapters: "the image adapters: IISAN's image and inter SANBs; adapter's and lora's ViT adapters",
}

/** "iisan 64, fft 32, …": the paper's value of a per-method key, for its description. */
function perMethodDefaults(key: string): string {
  const values = METHODS.flatMap((m) => (m.defaults[key] === undefined ? [] : [`${m.name} ${JSON.stringify(m.defaults[key])}`]))
  return values.length ? ` Default per method: ${values.join(', ')}.` : ''
}

function methodsReading(key: string): string[] {
  return METHODS.filter((m) => key in m.configProperties).map((m) => m.name)
}

const SHARED_PROPERTIES = {
  maxEpochs: Type.Integer({ minimum: 1, maximum: 1000, default: PAPER_TRAINING.maxEpochs }),
  batchSize: Type.Integer({ minimum: 2, maximum: 4096, description: `users per step.${perMethodDefaults('batchSize')}` }),
  ...(Object.fromEntries(
    Object.entries(RATE_GROUPS).map(([key, holds]) => [key, Type.Number({ exclusiveMinimum: 0, maximum: 1, description: `learning rate of ${holds}.${perMethodDefaults(key)}` })]),
  ) as Record<keyof LearningRates, ReturnType<typeof Type.Number>>),
  patience: Type.Integer({ minimum: 1, maximum: 1000, default: PAPER_TRAINING.patience, description: 'epochs in a row without a better validation `selectBy` before training stops' }),
  selectBy: Type.Union([Type.Literal('hr10'), Type.Literal('ndcg10')], {
    default: PAPER_TRAINING.selectBy,
    description: "the validation metric that picks the kept epoch and drives early stopping: hr10 (the authors' choice) or ndcg10",
  }),
  embeddingDim: Type.Integer({ minimum: 2, maximum: 1024, default: PAPER_USER_ENCODER.embeddingDim }),
  numBlocks: Type.Integer({ minimum: 1, maximum: 12, default: PAPER_USER_ENCODER.numBlocks }),
  numHeads: Type.Integer({ minimum: 1, maximum: 16, default: PAPER_USER_ENCODER.numHeads, description: 'attention heads; embeddingDim must be divisible by it' }),
  maxSeqLen: Type.Integer({ minimum: 2, maximum: 200, default: PAPER_USER_ENCODER.maxSeqLen }),
  dropout: Type.Number({ minimum: 0, maximum: 0.9, default: PAPER_USER_ENCODER.dropout }),
  seed: Type.Integer({ minimum: 0, maximum: 2 ** 32 - 1, default: PAPER_TRAINING.seed, description: 'an unsigned 32-bit integer' }),
}

/** Every method's own keys, each saying which methods read it (the others ignore it). */
function methodProperties(): TProperties {
  const out: TProperties = {}
  for (const method of METHODS) {
    for (const [key, schema] of Object.entries(method.configProperties)) {
      if (key in out) continue
      out[key] = { ...schema, description: `${schema.description ?? key} (read by ${methodsReading(key).join(', ')}).${perMethodDefaults(key)}` }
    }
  }
  return out
}

export const TrainingConfigSchema = Type.Object({ ...SHARED_PROPERTIES, ...methodProperties() }, { additionalProperties: false })

type SharedSettings = Static<ReturnType<typeof Type.Object<typeof SHARED_PROPERTIES>>>

/** A job's complete settings: the shared keys, the rates, and whatever the method's own keys are. */
export type TrainingConfig = SharedSettings & Record<string, unknown>

/** Keys only some methods read (their `configProperties`); every other key is shared. */
const METHOD_OWN_KEYS: ReadonlySet<string> = new Set(METHODS.flatMap((m) => Object.keys(m.configProperties)))

/** Whether `method` reads `key`: a shared key, or one of its own — not a key only other methods read. */
function reads(method: AnyTrainingMethod, key: string): boolean {
  return !METHOD_OWN_KEYS.has(key) || key in method.configProperties
}

/** The schema's keys `method` reads, in the schema's order: the shared ones and its own. */
export function configKeysOf(method: AnyTrainingMethod): string[] {
  return Object.keys(TrainingConfigSchema.properties).filter((key) => reads(method, key))
}

/**
 * A job's complete settings: anything not given is the method's paper value, else the shared
 * default. Keys only other methods read are accepted and dropped, so the config says what the
 * job actually trains with (the API stores it so; the CLI and the worker train with it).
 */
export function defaultTrainingConfig(method: AnyTrainingMethod, given: Partial<TrainingConfig> = {}): TrainingConfig {
  const full = { ...PAPER_TRAINING, ...PAPER_USER_ENCODER, ...method.defaults, ...stripUndefined(given) }
  return Object.fromEntries(Object.entries(full).filter(([key]) => reads(method, key))) as TrainingConfig
}

function stripUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>
}

/** A rule the schema alone cannot express, broken by a (complete) training config. */
export interface TrainingConfigProblem {
  fields: string[]
  message: string
}

/** Cross-field rules, checked when a job is submitted rather than found out by a failing job. */
export function trainingConfigProblems(config: TrainingConfig): TrainingConfigProblem[] {
  const problems: TrainingConfigProblem[] = []
  if (config.embeddingDim % config.numHeads !== 0) {
    problems.push({ fields: ['embeddingDim', 'numHeads'], message: `embeddingDim (${config.embeddingDim}) must be divisible by numHeads (${config.numHeads})` })
  }
  return problems
}

/** The training options a complete config carries (what `train` reads). */
export function trainOptionsOf(config: TrainingConfig) {
  const { maxEpochs, batchSize, patience, selectBy, seed } = config
  const rates = Object.fromEntries(Object.keys(RATE_GROUPS).map((k) => [k, config[k as keyof LearningRates]])) as unknown as LearningRates
  return { maxEpochs, batchSize, patience, selectBy, seed, ...rates }
}

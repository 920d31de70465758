// The training-job request: one schema for API validation, the OpenAPI document and the worker.
import { Type, type Static } from '@sinclair/typebox'
import { PAPER_TRAINING, type LearningRates } from '@iisan/model/trainer'
import { PAPER_USER_ENCODER } from '@iisan/model/user-encoder'
import { PAPER_IISAN } from '@iisan/model/recommender'

export const TrainingMethodSchema = Type.Union([Type.Literal('iisan'), Type.Literal('sasrec-id')], {
  description: 'iisan: side adapted network over cached text and image backbone states; sasrec-id: the ID-based SASRec baseline',
})

export const TrainingConfigSchema = Type.Object(
  {
    maxEpochs: Type.Integer({ minimum: 1, maximum: 1000, default: PAPER_TRAINING.maxEpochs }),
    batchSize: Type.Integer({ minimum: 2, maximum: 4096, default: PAPER_TRAINING.batchSize }),
    lrItem: learningRate('lrItem', "sasrec-id's item-ID table"),
    lrUser: learningRate('lrUser', '"recsys": the user encoder, the fusion and, for IISAN, the P projections, the inter tower\'s F and the text and inter gates'),
    lrTextEncoder: learningRate('lrTextEncoder', "IISAN: the text tower's F"),
    lrImageEncoder: learningRate('lrImageEncoder', "IISAN: the image tower's F and gates"),
    lrTextAdapters: learningRate('lrTextAdapters', "IISAN: the text tower's SANBs"),
    lrImageAdapters: learningRate('lrImageAdapters', "IISAN: the image and inter towers' SANBs"),
    patience: Type.Integer({ minimum: 1, maximum: 1000, default: PAPER_TRAINING.patience, description: 'epochs in a row without a better validation `selectBy` before training stops' }),
    selectBy: Type.Union([Type.Literal('hr10'), Type.Literal('ndcg10')], {
      default: PAPER_TRAINING.selectBy,
      description: 'the validation metric that picks the kept epoch and drives early stopping: hr10 (the authors\' choice) or ndcg10',
    }),
    embeddingDim: Type.Integer({ minimum: 2, maximum: 1024, default: PAPER_USER_ENCODER.embeddingDim }),
    numBlocks: Type.Integer({ minimum: 1, maximum: 12, default: PAPER_USER_ENCODER.numBlocks }),
    numHeads: Type.Integer({ minimum: 1, maximum: 16, default: PAPER_USER_ENCODER.numHeads, description: 'attention heads; embeddingDim must be divisible by it' }),
    maxSeqLen: Type.Integer({ minimum: 2, maximum: 200, default: PAPER_USER_ENCODER.maxSeqLen }),
    dropout: Type.Number({ minimum: 0, maximum: 0.9, default: PAPER_USER_ENCODER.dropout }),
    seed: Type.Integer({ minimum: 0, maximum: 2 ** 32 - 1, default: PAPER_TRAINING.seed, description: 'an unsigned 32-bit integer' }),
    // IISAN switches (docs/METHOD.md §3); ignored by sasrec-id
    modality: Type.Union([Type.Literal('intra_inter'), Type.Literal('intra'), Type.Literal('inter')], { default: PAPER_IISAN.modality, description: 'IISAN towers: intra-modal, inter-modal or both' }),
    sideLayers: Type.Optional(
      Type.Array(Type.Integer({ minimum: 0, maximum: 128 }), { minItems: 1, maxItems: 129, uniqueItems: true, description: 'text-backbone layers feeding the SAN; default layer 0 and every other layer' }),
    ),
    reduction: Type.Integer({ minimum: 1, maximum: 4096, default: PAPER_IISAN.reduction, description: 'r, the SANB bottleneck width' }),
    activation: Type.Union([Type.Literal('relu'), Type.Literal('gelu')], { default: PAPER_IISAN.activation }),
  },
  { additionalProperties: false },
)

export type TrainingConfig = Static<typeof TrainingConfigSchema>

function learningRate(name: keyof LearningRates, description: string) {
  return Type.Number({ exclusiveMinimum: 0, maximum: 1, default: PAPER_TRAINING[name], description: `learning rate of ${description}` })
}

export function defaultTrainingConfig(overrides: Partial<TrainingConfig> = {}): TrainingConfig {
  return {
    maxEpochs: PAPER_TRAINING.maxEpochs,
    batchSize: PAPER_TRAINING.batchSize,
    lrItem: PAPER_TRAINING.lrItem,
    lrUser: PAPER_TRAINING.lrUser,
    lrTextEncoder: PAPER_TRAINING.lrTextEncoder,
    lrImageEncoder: PAPER_TRAINING.lrImageEncoder,
    lrTextAdapters: PAPER_TRAINING.lrTextAdapters,
    lrImageAdapters: PAPER_TRAINING.lrImageAdapters,
    patience: PAPER_TRAINING.patience,
    selectBy: PAPER_TRAINING.selectBy,
    seed: PAPER_TRAINING.seed,
    ...PAPER_USER_ENCODER,
    ...PAPER_IISAN,
    ...overrides,
  }
}

/** A rule the schema alone cannot express, broken by a (complete) training config. */
export interface TrainingConfigProblem {
  fields: (keyof TrainingConfig)[]
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

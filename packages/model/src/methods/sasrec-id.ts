// ID-SASRec (docs/METHOD.md §7, the ID baseline): one learned D-vector per item id.
import { IdEmbedding } from '../id-embedding.ts'
import { PAPER_USER_ENCODER } from '../user-encoder.ts'
import { userEncoderSettings, type ModelConfigBase, type TrainingMethod } from './method.ts'

export type SasRecIdConfig = ModelConfigBase

export function sasRecIdConfig(numItems: number, overrides: Partial<SasRecIdConfig> = {}): SasRecIdConfig {
  return { ...PAPER_USER_ENCODER, method: sasRecId.name, numItems, seed: 42, ...overrides }
}

export const sasRecId: TrainingMethod<SasRecIdConfig> = {
  name: 'sasrec-id',
  label: 'ID-SASRec',
  summary: 'SASRec over learned item-ID embeddings: the ID baseline; cannot recommend items it was not trained on',
  reads: 'item-ids',
  configProperties: {},
  defaults: { batchSize: 64, lrItem: 1e-4, lrUser: 2e-4 },
  paramGroups: { itemIds: 'the item-ID table', recsys: 'the user encoder' },
  capabilities: { coldStart: false },
  modelConfig: (numItems, settings) => sasRecIdConfig(numItems, userEncoderSettings(settings, PAPER_USER_ENCODER)),
  createItemEncoder: (config, params) => new IdEmbedding(config.numItems, config.embeddingDim, params),
}

// The paper's fine-tuning baselines (docs/METHOD.md §7; Code_Uncached/run.py): the backbones run
// inside every training step and some of their weights train — all of them (FFT), adapters
// (Houlsby), low-rank updates of the query and value projections (LoRA) or only the biases
// (BitFit). They share the authors' "intra" item tower (backbone-towers.ts); each method file
// only says which weights train, its own settings and its rates.
import type { BackboneTuning } from '@iisan/backbones/trainable'
import { TrainableBert, TrainableVit } from '@iisan/backbones/trainable'
import type { TProperties } from '@sinclair/typebox'
import { BackboneItemEncoder } from '../backbone-towers.ts'
import type { BackboneShape } from '../iisan.ts'
import type { ItemEncoder } from '../item-encoder.ts'
import type { ParamGroup } from '../params.ts'
import type { TrainOptions } from '../trainer.ts'
import { PAPER_USER_ENCODER } from '../user-encoder.ts'
import { userEncoderSettings, type JobSettings, type ModelConfigBase, type OptimizerSlotPlace, type TrainingMethod } from './method.ts'

export interface FineTuningConfig extends ModelConfigBase {
  text: BackboneShape
  /** null: trained without images (the catalogue has none) */
  image: BackboneShape | null
  tuning: BackboneTuning
  /** tokens per backbone forward in a training step (BackboneItemEncoderOptions.stepTokens; default by tuning) */
  stepTokens?: number
}

export interface FineTuningSpec {
  name: string
  label: string
  summary: string
  configProperties?: TProperties
  /** its own settings' defaults and the rates it trains at (Code_Uncached/scripts/run_<name>.py) */
  defaults: Record<string, unknown> & Partial<TrainOptions>
  paramGroups: Partial<Record<ParamGroup, string>>
  tuning(settings: JobSettings): BackboneTuning
  /** absent: 'heap' (TrainingMethod.optimizerSlots) */
  optimizerSlots?: OptimizerSlotPlace
}

/** The baselines' batch size and the authors' rates for the backbones themselves. */
export const FINE_TUNING_DEFAULTS = { batchSize: 32, lrTextEncoder: 5e-5, lrImageEncoder: 1e-4 } as const

/** Serving needs only the user encoder and the precomputed item matrix: no backbone is loaded. */
class ServedFromMatrix implements ItemEncoder {
  constructor(
    readonly numItems: number,
    readonly embeddingDim: number,
  ) {}

  embed(): never {
    throw new Error('this model serves from its item matrix; embedding items needs its backbones (train again)')
  }

  embedAll(): never {
    return this.embed()
  }
}

export function fineTuningMethod(spec: FineTuningSpec): TrainingMethod<FineTuningConfig> {
  return {
    name: spec.name,
    label: spec.label,
    summary: spec.summary,
    reads: 'item-content',
    configProperties: spec.configProperties ?? {},
    defaults: spec.defaults,
    paramGroups: { ...spec.paramGroups, recsys: 'the user encoder, the text fc, the image classifier, the fusion (com_dense) and the learned missing-image vector' },
    // a new item needs a forward pass through the fine-tuned backbones, which serving does not hold
    capabilities: { coldStart: false },
    ...(spec.optimizerSlots ? { optimizerSlots: spec.optimizerSlots } : {}),
    modelConfig(numItems, settings, { backbones }) {
      if (!backbones) throw new Error(`${spec.name} needs the text and image backbones`)
      const shape = (c: { numLayers: number; hiddenSize: number }) => ({ numLayers: c.numLayers, width: c.hiddenSize })
      return {
        ...PAPER_USER_ENCODER,
        seed: 42,
        ...userEncoderSettings(settings, PAPER_USER_ENCODER),
        method: spec.name,
        numItems,
        text: shape(backbones.text.config),
        image: backbones.image ? shape(backbones.image.config) : null,
        tuning: spec.tuning(settings),
      }
    },
    createItemEncoder(config, params, inputs) {
      if (!inputs?.backbones || !inputs.content) return new ServedFromMatrix(config.numItems, config.embeddingDim)
      const { backbones, content } = inputs
      const text = TrainableBert.load(backbones.text.config, backbones.text.checkpoint, config.tuning, config.seed)
      const image = backbones.image ? TrainableVit.load(backbones.image.config, backbones.image.checkpoint, config.tuning, config.seed + 1) : null
      return new BackboneItemEncoder({ params, text, image, content, embeddingDim: config.embeddingDim, stepTokens: config.stepTokens })
    },
  }
}

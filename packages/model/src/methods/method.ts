// The one contract every training method implements (docs/ADDING_A_METHOD.md). A method decides
// only the item side of the sequential recommender — what it reads, how it turns that into item
// embeddings, which of its parameters train at which rate — while the SASRec user encoder, the
// in-batch loss, training, evaluation and serving are shared. Trainer, worker, CLI, API, benches
// and dashboard read these descriptors from the registry and never test a method's name.
import type { TProperties } from '@sinclair/typebox'
import type { BertConfig, Checkpoint, VitConfig } from '@iisan/backbones'
import type { CachedStates } from '../cached-states.ts'
import type { ItemContent } from '../item-content.ts'
import type { ItemEncoder } from '../item-encoder.ts'
import type { ParamGroup, Params } from '../params.ts'
import type { TrainOptions } from '../trainer.ts'
import type { UserEncoderConfig } from '../user-encoder.ts'

/**
 * What a method reads for each item:
 * - `item-ids`: nothing but its index (ID-SASRec);
 * - `cached-states`: the frozen backbones' per-layer [CLS] states, built once by the embedding cache;
 * - `item-content`: the title (and image) itself, run through the backbones in every training step.
 */
export const ITEM_SOURCES = ['item-ids', 'cached-states', 'item-content'] as const

export type ItemSource = (typeof ITEM_SOURCES)[number]

/** What every method's model config holds: the user encoder, the catalogue size and the seed. */
export interface ModelConfigBase extends UserEncoderConfig {
  method: string
  numItems: number
  seed: number
}

/** The backbones the `item-content` methods run: a parsed config and a checkpoint reader per modality. */
export interface BackboneSources {
  text: { config: BertConfig; checkpoint: Checkpoint }
  /** null: the catalogue has no images, so no image backbone is needed */
  image: { config: VitConfig; checkpoint: Checkpoint } | null
}

/**
 * Everything a method may read, filled in by whoever trains (worker, CLI, bench) according to
 * `reads`; serving passes none of it (the item matrix is precomputed).
 */
export interface MethodInputs {
  states?: CachedStates
  content?: ItemContent
  backbones?: BackboneSources
}

/** A training job's settings as far as a method is concerned: anything it does not know is ignored. */
export type JobSettings = Record<string, unknown> & Partial<UserEncoderConfig> & { seed?: number }

/**
 * Where Adam keeps its two moment slots (m and v, each the size of the trainable weights):
 * - `heap`: tf variables on the backend (StepwiseAdam), fastest; every method whose trainable
 *   weights are small next to the 4 GB wasm32 heap;
 * - `host`: Float32Arrays in host memory (HostAdam), for a method whose weights, gradients and
 *   slots together would not fit the heap (FFT: 196 M weights, 3.1 GB with both slots).
 * The two give the same numbers (test/host-adam.test.ts) and save the same training state.
 */
export type OptimizerSlotPlace = 'heap' | 'host'

export interface MethodCapabilities {
  /** Can embed an item that was not in training without retraining (cold start). */
  coldStart: boolean
}

export interface TrainingMethod<C extends ModelConfigBase = ModelConfigBase> {
  readonly name: string
  /** the method's name as the paper writes it ("ID-SASRec", "LoRA"), for tables and charts */
  readonly label: string
  /** one sentence for the API's method list, the CLI's help and the dashboard */
  readonly summary: string
  readonly reads: ItemSource
  /** JSON-schema properties of the job config keys only this method (or its family) reads */
  readonly configProperties: TProperties
  /** The paper's settings for this method: its own keys, and the training options it changes (rates, batch size). */
  readonly defaults: Record<string, unknown> & Partial<TrainOptions>
  /** The learning-rate groups its parameters fall in, with what each holds (docs/ARCHITECTURE.md). */
  readonly paramGroups: Partial<Record<ParamGroup, string>>
  readonly capabilities: MethodCapabilities
  /** Where its Adam keeps the moment slots; absent: 'heap' (see OptimizerSlotPlace). */
  readonly optimizerSlots?: OptimizerSlotPlace
  /**
   * The model config for a job: the user encoder and seed from `settings`, this method's own
   * keys, and what only the inputs know (backbone depths and widths). Throws a plain Error with
   * a message for the user when the settings do not fit the inputs.
   */
  modelConfig(numItems: number, settings: JobSettings, inputs: MethodInputs): C
  /** The item encoder; without inputs (serving), one that only has to restore the checkpoint. */
  createItemEncoder(config: C, params: Params, inputs?: MethodInputs): ItemEncoder
}

/** Type-erased, as the registry holds them. */
export type AnyTrainingMethod = TrainingMethod<ModelConfigBase>

/** The user-encoder part and the seed of a job's settings (defaults: the paper's). */
export function userEncoderSettings(settings: JobSettings, defaults: UserEncoderConfig): UserEncoderConfig & { seed?: number } {
  const pick = <K extends keyof UserEncoderConfig>(k: K) => (settings[k] ?? defaults[k]) as UserEncoderConfig[K]
  return {
    embeddingDim: pick('embeddingDim'),
    numBlocks: pick('numBlocks'),
    numHeads: pick('numHeads'),
    maxSeqLen: pick('maxSeqLen'),
    dropout: pick('dropout'),
    ...(settings.seed !== undefined ? { seed: settings.seed } : {}),
  }
}

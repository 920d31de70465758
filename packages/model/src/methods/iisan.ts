// IISAN (docs/METHOD.md §2–§5): the side adapted network over the frozen backbones' per-layer
// [CLS] states. Cached IISAN reads the states the embedding cache built once; uncached IISAN runs
// the frozen backbones inside every training step. Same model, same numbers, different cost.
import { Type } from '@sinclair/typebox'
import { emptyModality, type CachedStates } from '../cached-states.ts'
import { IisanItemEncoder, type BackboneShape, type IisanConfig } from '../iisan.ts'
import { defaultSideLayers } from '../san.ts'
import { BackboneStates } from '../uncached-states.ts'
import { PAPER_USER_ENCODER } from '../user-encoder.ts'
import { userEncoderSettings, type JobSettings, type TrainingMethod } from './method.ts'

/** The paper's SAN switches (docs/METHOD.md §3): both towers, r = 64, ReLU. Side layers depend on L. */
export const PAPER_IISAN: Pick<IisanConfig, 'modality' | 'reduction' | 'activation'> = { modality: 'intra_inter', reduction: 64, activation: 'relu' }

/** IISAN with the paper's defaults for the given backbones (docs/METHOD.md §3–§5). */
export function iisanConfig(numItems: number, text: BackboneShape, image: BackboneShape, overrides: Partial<IisanConfig> = {}): IisanConfig {
  return {
    ...PAPER_USER_ENCODER,
    method: iisan.name,
    numItems,
    seed: 42,
    ...PAPER_IISAN,
    sideLayers: defaultSideLayers(text.numLayers),
    text,
    image,
    ...overrides,
  }
}

const SAN_PROPERTIES = {
  modality: Type.Union([Type.Literal('intra_inter'), Type.Literal('intra'), Type.Literal('inter')], { description: 'IISAN towers: intra-modal, inter-modal or both' }),
  sideLayers: Type.Array(Type.Integer({ minimum: 0, maximum: 128 }), {
    minItems: 1,
    maxItems: 129,
    uniqueItems: true,
    description: 'text-backbone layers feeding the SAN; default layer 0 and every other layer',
  }),
  reduction: Type.Integer({ minimum: 1, maximum: 4096, description: 'r, the SANB bottleneck width' }),
  activation: Type.Union([Type.Literal('relu'), Type.Literal('gelu')], { description: 'the SANB activation' }),
}

/** The authors' five groups (Code_Cached/run.py), at IISAN's rates. */
const IISAN_DEFAULTS = {
  ...PAPER_IISAN,
  batchSize: 64,
  lrUser: 2e-4,
  lrTextEncoder: 5e-5,
  lrImageEncoder: 1e-4,
  lrTextAdapters: 1e-4,
  lrImageAdapters: 1e-4,
}

const IISAN_GROUPS = {
  textEncoder: "the text tower's F",
  imageEncoder: "the image tower's F and gates",
  textAdapters: "the text tower's SANBs and the learned missing-text states",
  imageAdapters: "the image and inter towers' SANBs and the learned missing-image states",
  recsys: "the user encoder, the P projections, the inter tower's F, the text and inter gates, the fusion",
}

/** The SAN's settings from a job, checked against the backbones' depth. */
function sanConfig(numItems: number, settings: JobSettings, text: BackboneShape, image: BackboneShape, method: string): IisanConfig {
  const sideLayers = settings.sideLayers as number[] | undefined
  const bad = sideLayers?.filter((l) => l > text.numLayers)
  if (bad?.length) throw new Error(`side layers ${bad.join(', ')} exceed the text backbone's ${text.numLayers} layers`)
  return iisanConfig(numItems, text, image, {
    ...userEncoderSettings(settings, PAPER_USER_ENCODER),
    method,
    modality: (settings.modality as IisanConfig['modality'] | undefined) ?? PAPER_IISAN.modality,
    reduction: (settings.reduction as number | undefined) ?? PAPER_IISAN.reduction,
    activation: (settings.activation as IisanConfig['activation'] | undefined) ?? PAPER_IISAN.activation,
    ...(sideLayers ? { sideLayers: [...sideLayers].sort((a, b) => a - b) } : {}),
  })
}

/** Serving (no inputs) starts with empty stores; cold-start items are appended to them. */
function emptyStates(config: IisanConfig): CachedStates {
  return {
    text: emptyModality(config.numItems, config.text.numLayers, config.text.width),
    image: emptyModality(config.numItems, config.image.numLayers, config.image.width),
  }
}

/**
 * What cached and uncached IISAN share: the SAN's settings, the paper's values and groups, and
 * cold start (the trained SAN reads the same states the embedding cache builds for new items).
 */
const SAN_FAMILY = {
  configProperties: SAN_PROPERTIES,
  defaults: IISAN_DEFAULTS,
  paramGroups: IISAN_GROUPS,
  capabilities: { coldStart: true },
}

/**
 * Threads a cached training step runs its SAN on; 0: automatic, every core when the SAN trains on
 * ONNX Runtime (the default wherever it loads), one on tfjs, where extra SAN threads (san-threads.ts)
 * paid only on a free core. docs/ARCHITECTURE.md, "The training step on ONNX Runtime", has the figures.
 */
const TRAIN_THREADS = 0

export const iisan: TrainingMethod<IisanConfig> = {
  ...SAN_FAMILY,
  configProperties: {
    ...SAN_PROPERTIES,
    trainThreads: Type.Integer({
      minimum: 0,
      maximum: 16,
      description:
        "threads a training step's side network runs on, 0 = automatic (every core on ONNX Runtime, one on tfjs); the loss and its gradients are the same for any count",
    }),
  },
  defaults: { ...IISAN_DEFAULTS, trainThreads: TRAIN_THREADS },
  name: 'iisan',
  label: 'IISAN',
  summary: 'IISAN: a side adapted network over cached text and image backbone states (the frozen backbones run once per item, not per step)',
  reads: 'cached-states',
  modelConfig(numItems, settings, { states }) {
    if (!states) throw new Error('IISAN needs cached backbone states')
    const shape = (m: 'text' | 'image') => ({ numLayers: states[m].numLayers, width: states[m].width })
    return { ...sanConfig(numItems, settings, shape('text'), shape('image'), iisan.name), trainThreads: (settings.trainThreads as number | undefined) ?? TRAIN_THREADS }
  },
  // serving (no inputs) trains nothing: one thread
  createItemEncoder: (config, params, inputs) =>
    inputs?.states ? new IisanItemEncoder(config, params, inputs.states, config.trainThreads ?? TRAIN_THREADS) : new IisanItemEncoder(config, params, emptyStates(config)),
}

export const iisanUncached: TrainingMethod<IisanConfig> = {
  ...SAN_FAMILY,
  name: 'iisan-uncached',
  label: 'IISAN (uncached)',
  summary: 'IISAN with the frozen backbones run inside every training step instead of read from the cache: the same model and losses as iisan, at the cost the cache saves',
  reads: 'item-content',
  modelConfig(numItems, settings, { backbones }) {
    if (!backbones) throw new Error('uncached IISAN needs the text and image backbones')
    const text = { numLayers: backbones.text.config.numLayers, width: backbones.text.config.hiddenSize }
    // without an image backbone the image side is all learned missing states; give it the text's shape
    const image = backbones.image ? { numLayers: backbones.image.config.numLayers, width: backbones.image.config.hiddenSize } : text
    return sanConfig(numItems, settings, text, image, iisanUncached.name)
  },
  createItemEncoder(config, params, inputs) {
    if (!inputs?.backbones || !inputs.content) return new IisanItemEncoder(config, params, emptyStates(config))
    return new IisanItemEncoder(config, params, new BackboneStates(inputs.backbones, inputs.content))
  },
}

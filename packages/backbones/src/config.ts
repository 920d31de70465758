// Reads the Hugging Face `config.json` / `preprocessor_config.json` of a checkpoint folder into
// the few numbers the forward passes need. Anything our implementation would silently compute
// differently from transformers (another activation, relative position embeddings, a resize
// filter we do not reproduce) is rejected here with a message, rather than producing numbers
// that look plausible and are wrong.
import fs from 'node:fs'
import path from 'node:path'
import { DEMO_CONFIG_KEY } from './demo.ts'
import { hubRefOfDir, isDownloaded, notDownloadedMessage } from './hub-cache.ts'

export class BackboneConfigError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'BackboneConfigError'
  }
}

interface CommonConfig {
  /** Number of transformer layers L; hidden states come back as L + 1 (embeddings first). */
  numLayers: number
  /** Width d of every hidden state. */
  hiddenSize: number
  numHeads: number
  intermediateSize: number
  layerNormEps: number
  hiddenAct: 'gelu' | 'relu'
  /** The generated demo pair (config.json `"iisan_demo": true`, see demo.ts); absent on real checkpoints. */
  demo?: true
}

export interface BertConfig extends CommonConfig {
  modelType: 'bert'
  vocabSize: number
  maxPositions: number
  typeVocabSize: number
  padTokenId: number
}

export interface VitConfig extends CommonConfig {
  modelType: 'vit'
  imageSize: number
  patchSize: number
  numChannels: number
  qkvBias: boolean
  /** (imageSize / patchSize)²; the sequence is numPatches + 1 with [CLS] first. */
  numPatches: number
}

export type ModelConfig = BertConfig | VitConfig

export function readJsonFile(file: string, what: string): Record<string, unknown> {
  let text: string
  try {
    text = fs.readFileSync(file, 'utf8')
  } catch (err) {
    throw new BackboneConfigError(`cannot read ${what} ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`)
  }
  try {
    const value: unknown = JSON.parse(text)
    if (!value || typeof value !== 'object' || Array.isArray(value)) throw new Error('not an object')
    return value as Record<string, unknown>
  } catch (err) {
    throw new BackboneConfigError(`${what} ${file} is not a JSON object: ${(err as Error).message}`)
  }
}

export function assertModelDir(dir: string): void {
  // A hub model's folder in the download cache: say how to download it rather than "no such folder".
  const hub = hubRefOfDir(dir)
  if (hub && !isDownloaded(dir)) throw new BackboneConfigError(notDownloadedMessage(hub, dir))
  let stat: fs.Stats
  try {
    stat = fs.statSync(dir)
  } catch {
    throw new BackboneConfigError(`backbone folder ${dir} does not exist`)
  }
  if (!stat.isDirectory()) throw new BackboneConfigError(`backbone path ${dir} is not a folder`)
  if (!fs.existsSync(path.join(dir, 'config.json'))) {
    throw new BackboneConfigError(`backbone folder ${dir} has no config.json (expected a Hugging Face checkpoint folder)`)
  }
}

export function readModelConfig(dir: string): ModelConfig {
  assertModelDir(dir)
  const file = path.join(dir, 'config.json')
  return parseModelConfig(readJsonFile(file, 'config'), file)
}

/** A config.json object (`file` names it in errors). */
export function parseModelConfig(raw: Record<string, unknown>, file: string): ModelConfig {
  const modelType = raw.model_type
  if (modelType === 'bert') return parseBertConfig(raw, file)
  if (modelType === 'vit') return parseVitConfig(raw, file)
  throw new BackboneConfigError(`${file}: model_type ${JSON.stringify(modelType)} is not supported (expected "bert" or "vit")`)
}

function num(raw: Record<string, unknown>, key: string, file: string, fallback?: number): number {
  const value = raw[key] ?? fallback
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw new BackboneConfigError(`${file}: "${key}" must be a number${fallback === undefined ? ' (required)' : ''}`)
  }
  return value
}

function positiveInt(raw: Record<string, unknown>, key: string, file: string, fallback?: number): number {
  const value = num(raw, key, file, fallback)
  if (!Number.isInteger(value) || value <= 0) throw new BackboneConfigError(`${file}: "${key}" must be a positive integer, got ${value}`)
  return value
}

function common(raw: Record<string, unknown>, file: string): CommonConfig {
  const hiddenSize = positiveInt(raw, 'hidden_size', file)
  const numHeads = positiveInt(raw, 'num_attention_heads', file)
  if (hiddenSize % numHeads !== 0) {
    throw new BackboneConfigError(`${file}: hidden_size ${hiddenSize} is not divisible by num_attention_heads ${numHeads}`)
  }
  const act = raw.hidden_act ?? 'gelu'
  // transformers' "gelu" is the exact erf form; the tanh approximations ("gelu_new",
  // "gelu_pytorch_tanh") would need another code path, so they are refused rather than guessed.
  if (act !== 'gelu' && act !== 'relu') {
    throw new BackboneConfigError(`${file}: hidden_act ${JSON.stringify(act)} is not supported (expected "gelu" or "relu")`)
  }
  return {
    numLayers: positiveInt(raw, 'num_hidden_layers', file),
    hiddenSize,
    numHeads,
    intermediateSize: positiveInt(raw, 'intermediate_size', file),
    layerNormEps: num(raw, 'layer_norm_eps', file, 1e-12),
    hiddenAct: act,
    // only when set: real checkpoints keep the fingerprints they had before the marker existed
    ...(raw[DEMO_CONFIG_KEY] === true ? { demo: true as const } : {}),
  }
}

function parseBertConfig(raw: Record<string, unknown>, file: string): BertConfig {
  const posType = raw.position_embedding_type ?? 'absolute'
  if (posType !== 'absolute') {
    throw new BackboneConfigError(`${file}: position_embedding_type ${JSON.stringify(posType)} is not supported (only "absolute")`)
  }
  return {
    modelType: 'bert',
    ...common(raw, file),
    vocabSize: positiveInt(raw, 'vocab_size', file),
    maxPositions: positiveInt(raw, 'max_position_embeddings', file, 512),
    typeVocabSize: positiveInt(raw, 'type_vocab_size', file, 2),
    padTokenId: num(raw, 'pad_token_id', file, 0),
  }
}

function parseVitConfig(raw: Record<string, unknown>, file: string): VitConfig {
  const imageSize = positiveInt(raw, 'image_size', file, 224)
  const patchSize = positiveInt(raw, 'patch_size', file, 16)
  if (imageSize % patchSize !== 0) {
    throw new BackboneConfigError(`${file}: image_size ${imageSize} is not a multiple of patch_size ${patchSize}`)
  }
  const numChannels = positiveInt(raw, 'num_channels', file, 3)
  if (numChannels !== 3) throw new BackboneConfigError(`${file}: num_channels ${numChannels} is not supported (RGB only)`)
  return {
    modelType: 'vit',
    ...common(raw, file),
    imageSize,
    patchSize,
    numChannels,
    qkvBias: raw.qkv_bias === undefined ? true : raw.qkv_bias === true,
    numPatches: (imageSize / patchSize) ** 2,
  }
}

/** Pillow resample codes as stored in preprocessor_config.json ("resample": 2 = BILINEAR). */
export type ResampleFilter = 'bilinear' | 'bicubic' | 'lanczos' | 'box' | 'hamming'

const PIL_RESAMPLE: Record<number, ResampleFilter> = { 1: 'lanczos', 2: 'bilinear', 3: 'bicubic', 4: 'box', 5: 'hamming' }

/** What ViTImageProcessor does to a decoded RGB image; part of the backbone fingerprint. */
export interface ImagePreprocessConfig {
  width: number
  height: number
  resample: ResampleFilter
  rescaleFactor: number
  imageMean: [number, number, number]
  imageStd: [number, number, number]
  doNormalize: boolean
}

export function readImagePreprocessConfig(dir: string, config: VitConfig): ImagePreprocessConfig {
  const file = path.join(dir, 'preprocessor_config.json')
  const raw = fs.existsSync(file) ? readJsonFile(file, 'preprocessor config') : {}
  let width = config.imageSize
  let height = config.imageSize
  if (raw.do_resize === false) {
    throw new BackboneConfigError(`${file}: do_resize false is not supported (inputs of any size are resized to the model's image size)`)
  }
  const size = raw.size
  if (typeof size === 'number') {
    width = height = size
  } else if (size && typeof size === 'object') {
    const s = size as Record<string, unknown>
    if (typeof s.height === 'number' && typeof s.width === 'number') {
      height = s.height
      width = s.width
    } else if (typeof s.shortest_edge === 'number') {
      throw new BackboneConfigError(`${file}: size.shortest_edge (resize + crop) is not supported; expected {height, width}`)
    }
  }
  if (width !== config.imageSize || height !== config.imageSize) {
    // ViT's position embeddings are learned for one grid; transformers would also fail here
    // unless interpolate_pos_encoding is requested.
    throw new BackboneConfigError(`${file}: resize to ${height}x${width} does not match config image_size ${config.imageSize}`)
  }
  const resampleCode = raw.resample ?? 2
  const resample = typeof resampleCode === 'number' ? PIL_RESAMPLE[resampleCode] : undefined
  if (!resample) throw new BackboneConfigError(`${file}: resample ${JSON.stringify(resampleCode)} is not supported (expected 1-5)`)
  const doRescale = raw.do_rescale !== false
  const rescaleFactor = doRescale ? num(raw, 'rescale_factor', file, 1 / 255) : 1
  const doNormalize = raw.do_normalize !== false
  const triple = (key: string): [number, number, number] => {
    const v = raw[key] ?? [0.5, 0.5, 0.5]
    const arr = typeof v === 'number' ? [v, v, v] : v
    if (!Array.isArray(arr) || arr.length !== 3 || !arr.every((x) => typeof x === 'number')) {
      throw new BackboneConfigError(`${file}: "${key}" must be a number or three numbers`)
    }
    return arr as [number, number, number]
  }
  return { width, height, resample, rescaleFactor, imageMean: triple('image_mean'), imageStd: triple('image_std'), doNormalize }
}

// The backbone fingerprint is the key of the hidden-state cache: two folders share cached states
// only if they would produce the same numbers. So it covers the parsed architecture, the
// preprocessing (tokenizer vocabulary and settings / resize and normalisation), and the bytes of
// every tensor the forward pass reads — but not key spelling, unused heads, dropout settings or
// other config.json fields that cannot change a hidden state.
import { createHash } from 'node:crypto'
import { Checkpoint, type CheckpointOptions, type TensorSpec } from './checkpoint.ts'
import { readImagePreprocessConfig, readModelConfig, type ModelConfig } from './config.ts'
import { BertTokenizer } from './tokenizer.ts'
import { bertTensorSpecs } from './bert.ts'
import { vitTensorSpecs } from './vit.ts'

const VERSION = 'iisan-backbone-fingerprint/v1'

/** JSON with sorted keys, so the hash does not depend on property order. */
export function stableStringify(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(stableStringify).join(',')}]`
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${stableStringify(v)}`).join(',')}}`
  }
  return JSON.stringify(value)
}

export function computeFingerprint(config: ModelConfig, preprocessing: unknown, ckpt: Checkpoint, specs: TensorSpec[]): string {
  const hash = createHash('sha256')
  hash.update(`${VERSION}\n${stableStringify(config)}\n${stableStringify(preprocessing)}\n`)
  ckpt.hashTensors(hash, specs)
  return hash.digest('hex')
}

export interface BackboneParts {
  config: ModelConfig
  preprocessing: unknown
  specs: TensorSpec[]
}

/** Config, preprocessing and tensor list of a folder, validated — without building tensors. */
export function describeBackbone(dir: string, maxLength?: number): BackboneParts {
  const config = readModelConfig(dir)
  if (config.modelType === 'bert') {
    return { config, preprocessing: BertTokenizer.fromDir(dir, maxLength).descriptor, specs: bertTensorSpecs(config) }
  }
  return { config, preprocessing: readImagePreprocessConfig(dir, config), specs: vitTensorSpecs(config) }
}

/** sha256 hex of a checkpoint folder as it would be loaded (see the module comment). */
export function fingerprintBackbone(dir: string, options: CheckpointOptions & { maxLength?: number } = {}): string {
  const parts = describeBackbone(dir, options.maxLength)
  const ckpt = Checkpoint.open(dir, parts.config.modelType, options)
  ckpt.validate(parts.specs)
  return computeFingerprint(parts.config, parts.preprocessing, ckpt, parts.specs)
}

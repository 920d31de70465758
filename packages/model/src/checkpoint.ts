// Checkpoints in safetensors: every parameter under its short name, the model config in the
// metadata, so a file alone rebuilds the model.
import { parseSafetensors, serializeSafetensors, toFloat32, type TensorToWrite } from '@iisan/safetensors'
import type { Params } from './params.ts'

export const CHECKPOINT_FORMAT = 'iisan-platform/checkpoint-v1'

export function saveCheckpoint(params: Params, config: object): Uint8Array {
  const tensors: Record<string, TensorToWrite> = {}
  for (const [name, { shape, values }] of params.snapshot()) tensors[name] = { dtype: 'F32', shape, data: values }
  return serializeSafetensors(tensors, { format: CHECKPOINT_FORMAT, config: JSON.stringify(config) })
}

/** The config and every parameter of a checkpoint, parsed once. */
export function readCheckpoint<C>(bytes: Uint8Array): { config: C; values: Map<string, { shape: number[]; values: Float32Array }> } {
  const { metadata, tensors } = parseSafetensors(bytes)
  if (metadata.format !== CHECKPOINT_FORMAT) throw new Error(`not a platform checkpoint (format ${metadata.format ?? 'missing'})`)
  const values = new Map<string, { shape: number[]; values: Float32Array }>()
  for (const [name, entry] of tensors) values.set(name, { shape: entry.shape, values: toFloat32(entry) })
  return { config: JSON.parse(metadata.config) as C, values }
}

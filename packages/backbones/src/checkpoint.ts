// Hugging Face checkpoint folders: `model.safetensors`, or shards listed in
// `model.safetensors.index.json`. Tensor names are canonicalised so both layouts in the wild load:
//   - `save_pretrained` of BertModel / ViTModel: `embeddings.…`, `encoder.layer.N.…`
//   - hub files of the task models (bert-base-uncased, google/vit-base-patch16-224): a `bert.` /
//     `vit.` prefix, TF-era `LayerNorm.gamma/beta`, plus heads (`cls.*`, `classifier.*`) we ignore.
import fs from 'node:fs'
import path from 'node:path'
import type { Hash } from 'node:crypto'
import { parseSafetensors, toFloat32, type TensorEntry } from '@iisan/safetensors'

export class CheckpointError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'CheckpointError'
  }
}

export interface TensorSpec {
  /** Canonical (save_pretrained) name. */
  name: string
  shape: number[]
}

interface StoredTensor extends TensorEntry {
  storedName: string
  file: string
}

export interface CheckpointOptions {
  /** Weights file inside the folder to use instead of model.safetensors (e.g. a hub-style copy). */
  weightsFile?: string
}

/** Prefixes the task-model wrappers put in front of the base model's names. */
const MODEL_PREFIXES: Record<string, string> = { bert: 'bert.', vit: 'vit.' }

export function canonicalName(stored: string, modelType: string): string {
  let name = stored
  const prefix = MODEL_PREFIXES[modelType]
  if (prefix && name.startsWith(prefix)) name = name.slice(prefix.length)
  if (/(LayerNorm|layernorm)[^.]*\.gamma$/.test(name)) name = name.replace(/\.gamma$/, '.weight')
  else if (/(LayerNorm|layernorm)[^.]*\.beta$/.test(name)) name = name.replace(/\.beta$/, '.bias')
  return name
}

export class Checkpoint {
  private constructor(
    readonly dir: string,
    readonly files: string[],
    private readonly tensors: Map<string, StoredTensor>,
  ) {}

  static open(dir: string, modelType: string, options: CheckpointOptions = {}): Checkpoint {
    const files = weightFiles(dir, options)
    const tensors = new Map<string, StoredTensor>()
    for (const file of files) {
      let bytes: Uint8Array
      try {
        bytes = fs.readFileSync(file)
      } catch (err) {
        throw new CheckpointError(`cannot read weights file ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`)
      }
      let parsed
      try {
        parsed = parseSafetensors(bytes)
      } catch (err) {
        throw new CheckpointError(`weights file ${file} is not a valid safetensors file: ${(err as Error).message}`)
      }
      for (const [storedName, entry] of parsed.tensors) {
        const name = canonicalName(storedName, modelType)
        const existing = tensors.get(name)
        // When a file holds both spellings, the exact save_pretrained name wins.
        if (existing && existing.storedName === name) continue
        tensors.set(name, { ...entry, storedName, file })
      }
    }
    return new Checkpoint(dir, files, tensors)
  }

  has(name: string): boolean {
    return this.tensors.has(name)
  }

  /** Throws, naming the first tensor that is missing or has the wrong shape or dtype. */
  validate(specs: TensorSpec[]): void {
    for (const spec of specs) this.entry(spec)
  }

  /** The tensor as float32 (F16/BF16 widened), checked against the shape the config implies. */
  read(spec: TensorSpec): Float32Array {
    return toFloat32(this.entry(spec))
  }

  /**
   * Feeds the tensors a model uses, in spec order, into a hash: canonical name, dtype, shape and
   * raw bytes. Heads the backbone ignores and the key spelling do not change the fingerprint.
   */
  hashTensors(hash: Hash, specs: TensorSpec[]): void {
    for (const spec of specs) {
      const e = this.entry(spec)
      hash.update(`${spec.name}\0${e.dtype}\0${e.shape.join(',')}\0`)
      hash.update(e.bytes)
    }
  }

  private entry(spec: TensorSpec): StoredTensor {
    const t = this.tensors.get(spec.name)
    if (!t) {
      throw new CheckpointError(
        `checkpoint ${this.dir}: missing tensor "${spec.name}" (expected shape [${spec.shape.join(', ')}]); ` +
          `the weights do not fit config.json`,
      )
    }
    const same = t.shape.length === spec.shape.length && t.shape.every((v, i) => v === spec.shape[i])
    if (!same) {
      throw new CheckpointError(
        `checkpoint ${this.dir}: tensor "${t.storedName}" has shape [${t.shape.join(', ')}] but config.json implies ` +
          `[${spec.shape.join(', ')}]`,
      )
    }
    if (t.dtype !== 'F32' && t.dtype !== 'F16' && t.dtype !== 'BF16') {
      throw new CheckpointError(`checkpoint ${this.dir}: tensor "${t.storedName}" has dtype ${t.dtype}, expected F32, F16 or BF16`)
    }
    return t
  }
}

function weightFiles(dir: string, options: CheckpointOptions): string[] {
  if (options.weightsFile) {
    const file = path.resolve(dir, options.weightsFile)
    if (!fs.existsSync(file)) throw new CheckpointError(`weights file ${file} does not exist`)
    return [file]
  }
  const single = path.join(dir, 'model.safetensors')
  if (fs.existsSync(single)) return [single]
  const indexFile = path.join(dir, 'model.safetensors.index.json')
  if (fs.existsSync(indexFile)) {
    let index: { weight_map?: Record<string, string> }
    try {
      index = JSON.parse(fs.readFileSync(indexFile, 'utf8'))
    } catch (err) {
      throw new CheckpointError(`${indexFile} is not valid JSON: ${(err as Error).message}`)
    }
    if (!index.weight_map || typeof index.weight_map !== 'object') throw new CheckpointError(`${indexFile} has no weight_map`)
    const shards = [...new Set(Object.values(index.weight_map))].sort()
    for (const shard of shards) {
      if (!fs.existsSync(path.join(dir, shard))) throw new CheckpointError(`${indexFile} lists shard ${shard}, which is missing`)
    }
    return shards.map((s) => path.join(dir, s))
  }
  const hint = fs.existsSync(path.join(dir, 'pytorch_model.bin'))
    ? ' (pytorch_model.bin is not supported: download model.safetensors, or convert with save_pretrained(safe_serialization=True))'
    : ''
  throw new CheckpointError(`backbone folder ${dir} has no model.safetensors or model.safetensors.index.json${hint}`)
}

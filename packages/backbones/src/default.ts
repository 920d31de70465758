// The demo backbone pair: a small BERT and ViT with seeded random weights, written in the exact
// Hugging Face layout real checkpoints use, so quick start and tests run on machines without
// downloaded weights (and without network). Random transformers still map different titles and
// images to different, deterministic features — enough to exercise the whole platform — but they
// carry no pretrained knowledge: use real checkpoints (README) for meaningful recommendations.
// Both configs carry the demo marker (demo.ts), so every place that uses them can say so.
//
// The BERT uses the full bert-base-uncased WordPiece vocabulary (assets/), not one built from a
// catalogue: a vocabulary of one catalogue's words sends another catalogue's words to [UNK], and
// titles that differ only in those words get identical states.
//
// Weights come from a counter-based PRNG and uniform distributions (no Math.log/cos), so every
// machine and Node version writes bit-identical files and therefore the same fingerprint — the
// hidden-state cache stays valid across machines.
import fs from 'node:fs'
import path from 'node:path'
import { createHash, randomBytes } from 'node:crypto'
import { serializeSafetensors, type TensorToWrite } from '@iisan/safetensors'
import { fingerprintBackbone } from './fingerprint.ts'
import { DEMO_CONFIG_KEY, REAL_BACKBONES } from './demo.ts'

export const DEFAULT_BACKBONE_DIR = 'artifacts/backbones'

export interface DefaultBackbonePaths {
  /** BERT folder (config.json, model.safetensors, vocab.txt, tokenizer_config.json). */
  text: string
  /** ViT folder (config.json, model.safetensors, preprocessor_config.json). */
  image: string
}

const GENERATOR = 'iisan-demo-backbones'
// 2: the bert-base-uncased vocabulary and the demo marker in config.json
const GENERATOR_VERSION = 2
const SEED = 'iisan-demo-2024'
const MARKER = 'iisan-demo.json'

const DEMO_SHAPE = { hidden_size: 64, num_hidden_layers: 4, num_attention_heads: 4, intermediate_size: 256 }

/** bert-base-uncased's vocab.txt (30,522 tokens), byte for byte. */
export function demoVocabText(): string {
  return fs.readFileSync(path.resolve(import.meta.dirname, '../assets/bert-base-uncased-vocab.txt'), 'utf8')
}

export function bertHfConfig(overrides: Record<string, unknown>): Record<string, unknown> {
  return {
    architectures: ['BertModel'],
    model_type: 'bert',
    vocab_size: 30522,
    hidden_size: 768,
    num_hidden_layers: 12,
    num_attention_heads: 12,
    intermediate_size: 3072,
    hidden_act: 'gelu',
    hidden_dropout_prob: 0.1,
    attention_probs_dropout_prob: 0.1,
    max_position_embeddings: 512,
    type_vocab_size: 2,
    initializer_range: 0.02,
    layer_norm_eps: 1e-12,
    pad_token_id: 0,
    position_embedding_type: 'absolute',
    torch_dtype: 'float32',
    ...overrides,
  }
}

export function vitHfConfig(overrides: Record<string, unknown>): Record<string, unknown> {
  return {
    architectures: ['ViTModel'],
    model_type: 'vit',
    image_size: 224,
    patch_size: 16,
    num_channels: 3,
    hidden_size: 768,
    num_hidden_layers: 12,
    num_attention_heads: 12,
    intermediate_size: 3072,
    hidden_act: 'gelu',
    hidden_dropout_prob: 0,
    attention_probs_dropout_prob: 0,
    initializer_range: 0.02,
    layer_norm_eps: 1e-12,
    qkv_bias: true,
    encoder_stride: 16,
    torch_dtype: 'float32',
    ...overrides,
  }
}

/** mulberry32 seeded from sha256(seed/name): one independent stream per tensor. */
function uniformStream(seed: string, name: string): () => number {
  let state = createHash('sha256').update(`${seed}/${name}`).digest().readUInt32LE(0)
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

type Init = { kind: 'uniform'; std: number } | { kind: 'const'; value: number }

function makeTensor(seed: string, name: string, shape: number[], init: Init): TensorToWrite {
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1))
  if (init.kind === 'const') data.fill(init.value)
  else {
    // U(−a, a) has std a/√3.
    const a = init.std * Math.sqrt(3)
    const next = uniformStream(seed, name)
    for (let i = 0; i < data.length; i++) data[i] = (2 * next() - 1) * a
  }
  return { dtype: 'F32', shape, data }
}

/**
 * Random weights scaled so the [CLS] state depends on the input: HF's std-0.02 init (or std-1
 * position/[CLS] embeddings) leaves it nearly identical for every title or image, which makes a
 * useless demo. So: token embeddings std 1; position, token-type and [CLS] embeddings std 0.2
 * (present, but not dominating the content); Linear weights std gain/√fan_in with gain 2 on the
 * attention value/output projections (attention output visibly moves the residual stream) and 1
 * elsewhere; biases 0; LayerNorm identity. Measured on 40 Scientific titles, mean pairwise cosine
 * of the last-layer [CLS] is ≈ 0.5 (vs 0.95 with std-1 position embeddings and gain 1).
 */
const ATTENTION_VALUE_GAIN = 2
const POSITION_STD = 0.2

function linear(seed: string, out: Record<string, TensorToWrite>, prefix: string, inDim: number, outDim: number, gain = 1): void {
  out[`${prefix}.weight`] = makeTensor(seed, `${prefix}.weight`, [outDim, inDim], { kind: 'uniform', std: gain / Math.sqrt(inDim) })
  out[`${prefix}.bias`] = makeTensor(seed, `${prefix}.bias`, [outDim], { kind: 'const', value: 0 })
}

function norm(out: Record<string, TensorToWrite>, prefix: string, dim: number): void {
  out[`${prefix}.weight`] = makeTensor('', '', [dim], { kind: 'const', value: 1 })
  out[`${prefix}.bias`] = makeTensor('', '', [dim], { kind: 'const', value: 0 })
}

export function randomBertWeights(config: Record<string, unknown>, seed: string): Record<string, TensorToWrite> {
  const d = config.hidden_size as number
  const ff = config.intermediate_size as number
  const t: Record<string, TensorToWrite> = {}
  const emb = (name: string, rows: number, std: number): void => {
    t[name] = makeTensor(seed, name, [rows, d], { kind: 'uniform', std })
  }
  emb('embeddings.word_embeddings.weight', config.vocab_size as number, 1)
  emb('embeddings.position_embeddings.weight', config.max_position_embeddings as number, POSITION_STD)
  emb('embeddings.token_type_embeddings.weight', config.type_vocab_size as number, POSITION_STD)
  norm(t, 'embeddings.LayerNorm', d)
  for (let i = 0; i < (config.num_hidden_layers as number); i++) {
    const p = `encoder.layer.${i}`
    linear(seed, t, `${p}.attention.self.query`, d, d)
    linear(seed, t, `${p}.attention.self.key`, d, d)
    linear(seed, t, `${p}.attention.self.value`, d, d, ATTENTION_VALUE_GAIN)
    linear(seed, t, `${p}.attention.output.dense`, d, d, ATTENTION_VALUE_GAIN)
    norm(t, `${p}.attention.output.LayerNorm`, d)
    linear(seed, t, `${p}.intermediate.dense`, d, ff)
    linear(seed, t, `${p}.output.dense`, ff, d)
    norm(t, `${p}.output.LayerNorm`, d)
  }
  // BertModel.from_pretrained expects a pooler; IISAN does not read it.
  linear(seed, t, 'pooler.dense', d, d)
  return t
}

export function randomVitWeights(config: Record<string, unknown>, seed: string): Record<string, TensorToWrite> {
  const d = config.hidden_size as number
  const ff = config.intermediate_size as number
  const P = config.patch_size as number
  const patches = ((config.image_size as number) / P) ** 2
  const t: Record<string, TensorToWrite> = {}
  t['embeddings.cls_token'] = makeTensor(seed, 'embeddings.cls_token', [1, 1, d], { kind: 'uniform', std: POSITION_STD })
  t['embeddings.position_embeddings'] = makeTensor(seed, 'embeddings.position_embeddings', [1, patches + 1, d], { kind: 'uniform', std: POSITION_STD })
  const fanIn = 3 * P * P
  t['embeddings.patch_embeddings.projection.weight'] = makeTensor(seed, 'embeddings.patch_embeddings.projection.weight', [d, 3, P, P], {
    kind: 'uniform',
    std: 1 / Math.sqrt(fanIn),
  })
  t['embeddings.patch_embeddings.projection.bias'] = makeTensor(seed, '', [d], { kind: 'const', value: 0 })
  for (let i = 0; i < (config.num_hidden_layers as number); i++) {
    const p = `encoder.layer.${i}`
    norm(t, `${p}.layernorm_before`, d)
    linear(seed, t, `${p}.attention.attention.query`, d, d)
    linear(seed, t, `${p}.attention.attention.key`, d, d)
    linear(seed, t, `${p}.attention.attention.value`, d, d, ATTENTION_VALUE_GAIN)
    linear(seed, t, `${p}.attention.output.dense`, d, d, ATTENTION_VALUE_GAIN)
    norm(t, `${p}.layernorm_after`, d)
    linear(seed, t, `${p}.intermediate.dense`, d, ff)
    linear(seed, t, `${p}.output.dense`, ff, d)
  }
  norm(t, 'layernorm', d)
  linear(seed, t, 'pooler.dense', d, d)
  return t
}

function writeJson(file: string, value: unknown): void {
  fs.writeFileSync(file, `${JSON.stringify(value, null, 2)}\n`)
}

/** A BERT folder with random weights in HF layout (also used by the benchmark at base size). */
export function writeRandomBert(dir: string, config: Record<string, unknown>, vocabText: string, seed: string): void {
  fs.mkdirSync(dir, { recursive: true })
  writeJson(path.join(dir, 'config.json'), config)
  fs.writeFileSync(path.join(dir, 'vocab.txt'), vocabText)
  writeJson(path.join(dir, 'tokenizer_config.json'), { do_lower_case: true, tokenizer_class: 'BertTokenizer', model_max_length: config.max_position_embeddings })
  fs.writeFileSync(path.join(dir, 'model.safetensors'), serializeSafetensors(randomBertWeights(config, seed), { format: 'pt' }))
}

export function writeRandomVit(dir: string, config: Record<string, unknown>, seed: string): void {
  fs.mkdirSync(dir, { recursive: true })
  writeJson(path.join(dir, 'config.json'), config)
  const size = config.image_size as number
  writeJson(path.join(dir, 'preprocessor_config.json'), {
    do_normalize: true,
    do_rescale: true,
    do_resize: true,
    image_mean: [0.5, 0.5, 0.5],
    image_processor_type: 'ViTImageProcessor',
    image_std: [0.5, 0.5, 0.5],
    resample: 2,
    rescale_factor: 1 / 255,
    size: { height: size, width: size },
  })
  fs.writeFileSync(path.join(dir, 'model.safetensors'), serializeSafetensors(randomVitWeights(config, seed), { format: 'pt' }))
}

const NOTE = (kind: string, real: string): string =>
  `# IISAN demo ${kind} backbone (random weights)\n\nGenerated deterministically by @iisan/backbones ensureDefaultBackbones() ` +
  `(${GENERATOR} v${GENERATOR_VERSION}). Hugging Face layout; the weights are random, not pretrained — a stand-in ` +
  `for machines without real checkpoints. For real ones: \`npm run backbone -- download ${real}\` ` +
  `(see packages/backbones/README.md).\n`

interface Marker {
  generator: string
  version: number
  seed: string
  fingerprint: string
}

function demoSpecs(): { name: 'demo-bert' | 'demo-vit'; write: (dir: string) => void }[] {
  const vocab = demoVocabText()
  const lines = vocab.split('\n')
  const vocabSize = vocab.endsWith('\n') ? lines.length - 1 : lines.length
  return [
    {
      name: 'demo-bert',
      write: (dir) => {
        writeRandomBert(dir, bertHfConfig({ ...DEMO_SHAPE, vocab_size: vocabSize, max_position_embeddings: 64, [DEMO_CONFIG_KEY]: true }), vocab, SEED)
        fs.writeFileSync(path.join(dir, 'README.md'), NOTE('text (BERT)', REAL_BACKBONES.text))
      },
    },
    {
      name: 'demo-vit',
      write: (dir) => {
        writeRandomVit(dir, vitHfConfig({ ...DEMO_SHAPE, image_size: 32, patch_size: 8, encoder_stride: 8, [DEMO_CONFIG_KEY]: true }), SEED)
        fs.writeFileSync(path.join(dir, 'README.md'), NOTE('image (ViT)', REAL_BACKBONES.image))
      },
    },
  ]
}

function isCurrent(dir: string): boolean {
  try {
    const marker = JSON.parse(fs.readFileSync(path.join(dir, MARKER), 'utf8')) as Marker
    if (marker.generator !== GENERATOR || marker.version !== GENERATOR_VERSION || marker.seed !== SEED) return false
    return fingerprintBackbone(dir) === marker.fingerprint
  } catch {
    return false
  }
}

/** Writes into a private temp folder, then renames into place: readers never see half a folder. */
function generate(target: string, write: (dir: string) => void): void {
  const tmp = path.join(path.dirname(target), `.tmp-${path.basename(target)}-${process.pid}-${randomBytes(4).toString('hex')}`)
  try {
    write(tmp)
    const marker: Marker = { generator: GENERATOR, version: GENERATOR_VERSION, seed: SEED, fingerprint: fingerprintBackbone(tmp) }
    writeJson(path.join(tmp, MARKER), marker)
    fs.rmSync(target, { recursive: true, force: true })
    fs.renameSync(tmp, target)
  } catch (err) {
    fs.rmSync(tmp, { recursive: true, force: true })
    // Another process may have finished the same folder first; theirs is identical.
    if (isCurrent(target)) return
    throw err
  }
}

/**
 * Makes sure `<dir>/demo-bert` and `<dir>/demo-vit` exist and are the current demo pair
 * (checked by fingerprint, so a truncated or edited folder is rewritten). Idempotent and cheap
 * when up to date.
 */
export async function ensureDefaultBackbones(dir: string = DEFAULT_BACKBONE_DIR): Promise<DefaultBackbonePaths> {
  const root = path.resolve(dir)
  fs.mkdirSync(root, { recursive: true })
  for (const spec of demoSpecs()) {
    const target = path.join(root, spec.name)
    if (!isCurrent(target)) generate(target, spec.write)
  }
  return { text: path.join(root, 'demo-bert'), image: path.join(root, 'demo-vit') }
}

/** Rewrites the demo pair unconditionally. */
export async function makeDefaultBackbones(dir: string = DEFAULT_BACKBONE_DIR): Promise<DefaultBackbonePaths> {
  const root = path.resolve(dir)
  fs.mkdirSync(root, { recursive: true })
  for (const spec of demoSpecs()) generate(path.join(root, spec.name), spec.write)
  return { text: path.join(root, 'demo-bert'), image: path.join(root, 'demo-vit') }
}

// BERT and ViT whose weights train, for the paper's fine-tuning baselines (Code_Uncached/run.py:
// FFT, Houlsby adapters, LoRA, BitFit) and for backbones run frozen inside a training step
// (uncached IISAN). There is no second transformer here: the weights are loaded by bert.ts /
// vit.ts, the embeddings are theirs, and every layer runs through layers.ts's encoder; training
// only adds what those accept as options — tf.Variables for the weights that train, a LoRA term
// on the query/value Dense, and hooks for dropout and adapters.
//
// Gradients need tfjs's gradient registrations (the model package's initBackend loads them).
//
// Which weights train under each tuning is decided from the authors' run.py, which first freezes
// every parameter (`fine_tune_to None`) and then re-enables some by name:
//   full    everything the forward pass uses. BERT's pooler is not loaded at all (run.py freezes
//           it: pooler_para), ViTForImageClassification has none.
//   bitfit  every parameter whose name contains "bias" inside mm_encoder: the dense biases, the
//           patch projection's bias AND the LayerNorm betas (HF names them `.bias` too). BERT's
//           pooler bias is trainable there but gets no gradient; we leave it out with the pooler.
//   adapter only the new adapters; LayerNorms stay frozen (`finetune_layernorm None`).
//   lora    lora_A and lora_B, plus the query/value biases: run.py swaps in fresh lora.Linear
//           modules after the freeze, and loralib freezes their weight but not their bias. Unlike
//           run.py, which re-initialises query/value (the pretrained projections are lost), we keep
//           the pretrained weights under the update — loralib's intended W·x + (α/r)·B·A·x.
import * as tf from '@tensorflow/tfjs-core'
import { createHash } from 'node:crypto'
import type { TensorToWrite } from '@iisan/safetensors'
import type { Checkpoint, TensorSpec } from './checkpoint.ts'
import type { BertConfig, VitConfig } from './config.ts'
import { bertAttentionNames, bertEmbeddings, bertLayerPrefix, bertTensorSpecs, loadBertWeights, type BertWeights } from './bert.ts'
import { randomBertWeights, randomVitWeights } from './default.ts'
import { additiveMask, firstToken, normalize, runEncoder, type AttentionNames, type Dense, type EncoderLayer, type LayerHooks, type WeightSource } from './layers.ts'
import { loadVitWeights, vitAttentionNames, vitEmbeddings, vitLayerPrefix, vitTensorSpecs, type VitWeights } from './vit.ts'

export type BackboneTuning =
  /** no trainable weights; the forward pass is kept off any gradient tape */
  | { kind: 'frozen' }
  /** FFT */
  | { kind: 'full' }
  | { kind: 'bitfit' }
  /**
   * Houlsby adapters after the attention output and the FFN output projections of every layer.
   * `dropout` acts on the adapter's branch in training; the authors' AdapterBlock builds a
   * dropout it never applies, so 0 reproduces them.
   */
  | { kind: 'adapter'; bottleneck: number; dropout: number }
  /** loralib on query and value of every attention layer; the update is scaled by alpha / rank */
  | { kind: 'lora'; rank: number; alpha: number }

/** Who a weight belongs to: the pretrained backbone, or what a tuning adds to it. */
export type WeightRole = 'backbone' | 'adapter' | 'lora'

export interface TrainableWeight {
  /** HF name (`encoder.layer.3.attention.self.query.weight`) or the added part's (`….lora_A`, `….adapter.down.weight`) */
  name: string
  variable: tf.Variable
  role: WeightRole
  /** named `.bias`: dense biases and LayerNorm betas */
  isBias: boolean
}

/** Every weight the backbone holds, trainable or not. Dense weights are [in, out] (HF's transposed). */
export interface NamedWeight {
  name: string
  tensor: tf.Tensor
  role: WeightRole
  trainable: boolean
}

export interface DropoutRates {
  /** after the embeddings and after each output projection (HF hidden_dropout_prob) */
  hidden: number
  /** on the attention probabilities (HF attention_probs_dropout_prob) */
  attention: number
}

export interface TrainableOptions {
  /** Defaults: BERT 0.1 / 0.1 (bert-base-uncased's config), ViT 0 / 0 (vit-base-patch16-224's). */
  dropout?: Partial<DropoutRates>
}

export type BackboneOutput = 'last-cls' | 'cls-per-layer'

export interface ForwardOptions {
  /** dropout on (the authors run the backbones in train mode during training) */
  training: boolean
  /**
   * 'last-cls': one [batch, d] tensor, the [CLS] row of the last hidden state (ViT: after its
   * final LayerNorm, the classifier's input). 'cls-per-layer': L + 1 tensors [batch, d], the
   * [CLS] row of every hidden state (layer 0 = embeddings), as the inference models return them.
   */
  output: BackboneOutput
  /** seeds for the dropout masks (e.g. Params.nextDropoutSeed, so a resumed run draws the same); default: the backbone's own stream */
  dropoutSeed?: () => number
}

/** A Checkpoint, or anything else that validates and reads HF-named weights. */
export type WeightReader = Pick<Checkpoint, 'read' | 'validate'>

// AdapterBlock (Code_Uncached/model/modules.py): both projections N(0, 0.01²), zero biases, ReLU
// (args.adapter_activation defaults to RELU and no script overrides it).
const ADAPTER_INIT_STD = 0.01

interface Adapter {
  /** [d, r] */
  down: Dense
  /** [r, d] */
  up: Dense
}

interface LayerAdapters {
  attention: Adapter
  ffn: Adapter
}

let instances = 0

/** A seed per (model seed, weight name): BERT and ViT built with nearby seeds still get unrelated draws. */
function seedOf(seed: number, name: string): number {
  return createHash('sha256').update(`${seed}/${name}`).digest().readUInt32LE(0) % 2 ** 31
}

/** Makes every weight, deciding per name whether it is a tf.Variable, and remembers them all. */
class WeightRegistry {
  readonly weights: NamedWeight[] = []
  private readonly prefix = `backbone${++instances}`

  constructor(private readonly trains: (name: string) => boolean) {}

  /** `from`'s weights, made into this registry's tensors. */
  source(from: WeightSource): WeightSource {
    return {
      read: (spec) => from.read(spec),
      make: (name, values, shape) => this.add(name, tf.tensor(values, shape), 'backbone', this.trains(name)),
    }
  }

  add<T extends tf.Tensor>(name: string, value: tf.Tensor, role: WeightRole, trainable: boolean): T {
    if (!trainable) {
      this.weights.push({ name, tensor: value, role, trainable })
      return value as T
    }
    const variable = tf.variable(value, true, `${this.prefix}/${name}`)
    value.dispose()
    this.weights.push({ name, tensor: variable, role, trainable })
    return variable as unknown as T
  }
}

function backboneWeightTrains(tuning: BackboneTuning, loraBiases: Set<string>): (name: string) => boolean {
  switch (tuning.kind) {
    case 'full':
      return () => true
    case 'bitfit':
      return (name) => name.endsWith('.bias')
    case 'lora':
      return (name) => loraBiases.has(name)
    default:
      return () => false
  }
}

/** What BERT or ViT contributes to the shared construction. */
interface ModelKind<W extends { layers: EncoderLayer[] }> {
  config: BertConfig | VitConfig
  specs: TensorSpec[]
  attentionNames(layer: number): AttentionNames
  layerPrefix(layer: number): string
  load(src: WeightSource): W
  /** the demo generator's random weights in this config's shapes */
  randomWeights(seed: string): Record<string, TensorToWrite>
  dropout: DropoutRates
}

/** The config.json keys the demo generator reads, for a parsed config. */
const hfShape = (c: BertConfig | VitConfig) => ({ hidden_size: c.hiddenSize, intermediate_size: c.intermediateSize, num_hidden_layers: c.numLayers })

function bertKind(config: BertConfig): ModelKind<BertWeights> {
  const hf = { ...hfShape(config), vocab_size: config.vocabSize, max_position_embeddings: config.maxPositions, type_vocab_size: config.typeVocabSize }
  return {
    config,
    specs: bertTensorSpecs(config),
    attentionNames: bertAttentionNames,
    layerPrefix: bertLayerPrefix,
    load: (src) => loadBertWeights(config, src),
    randomWeights: (seed) => randomBertWeights(hf, seed),
    // bert-base-uncased's hidden_dropout_prob and attention_probs_dropout_prob
    dropout: { hidden: 0.1, attention: 0.1 },
  }
}

function vitKind(config: VitConfig): ModelKind<VitWeights> {
  const hf = { ...hfShape(config), image_size: config.imageSize, patch_size: config.patchSize }
  return {
    config,
    specs: vitTensorSpecs(config),
    attentionNames: vitAttentionNames,
    layerPrefix: vitLayerPrefix,
    load: (src) => loadVitWeights(config, src),
    randomWeights: (seed) => randomVitWeights(hf, seed),
    // vit-base-patch16-224 has none
    dropout: { hidden: 0, attention: 0 },
  }
}

/** HF-named float32 arrays as a WeightReader. */
function recordReader(tensors: Record<string, TensorToWrite>): WeightReader {
  const read = (spec: TensorSpec): Float32Array => {
    const t = tensors[spec.name]
    if (!t || t.shape.join(',') !== spec.shape.join(',')) throw new Error(`random weights lack ${spec.name} [${spec.shape.join(', ')}]`)
    return t.data as Float32Array
  }
  return { read, validate: (specs) => specs.forEach(read) }
}

/** Loads the weights (trainable ones as tf.Variables) and adds what the tuning adds. */
function build<W extends { layers: EncoderLayer[] }>(kind: ModelKind<W>, reader: WeightReader, tuning: BackboneTuning, seed: number) {
  reader.validate(kind.specs)
  const layerIds = Array.from({ length: kind.config.numLayers }, (_, i) => i)
  const loraBiases = new Set(layerIds.flatMap((i) => [`${kind.attentionNames(i).query}.bias`, `${kind.attentionNames(i).value}.bias`]))
  const registry = new WeightRegistry(backboneWeightTrains(tuning, loraBiases))
  const weights = kind.load(registry.source(reader))
  const d = kind.config.hiddenSize
  const added = <T extends tf.Tensor>(name: string, role: WeightRole, init: (seed: number) => tf.Tensor): T =>
    registry.add<T>(name, tf.tidy(() => init(seedOf(seed, name))), role, true)

  if (tuning.kind === 'lora') {
    const { rank: r, alpha } = tuning
    // loralib: kaiming_uniform_(a = √5) on lora_A [r, in] is U(±1/√in); lora_B starts at zero
    const bound = 1 / Math.sqrt(d)
    for (const i of layerIds) {
      const names = kind.attentionNames(i)
      const attention = weights.layers[i].attention
      for (const [dense, prefix] of [
        [attention.query, names.query],
        [attention.value, names.value],
      ] as const) {
        dense.lora = {
          a: added(`${prefix}.lora_A`, 'lora', (s) => tf.randomUniform([d, r], -bound, bound, 'float32', s)),
          b: added(`${prefix}.lora_B`, 'lora', () => tf.zeros([r, d])),
          scale: alpha / r,
        }
      }
    }
  }

  let adapters: LayerAdapters[] | null = null
  if (tuning.kind === 'adapter') {
    const r = tuning.bottleneck
    const adapter = (prefix: string): Adapter => ({
      down: {
        w: added(`${prefix}.down.weight`, 'adapter', (s) => tf.randomNormal([d, r], 0, ADAPTER_INIT_STD, 'float32', s)),
        b: added<tf.Tensor1D>(`${prefix}.down.bias`, 'adapter', () => tf.zeros([r])),
      },
      up: {
        w: added(`${prefix}.up.weight`, 'adapter', (s) => tf.randomNormal([r, d], 0, ADAPTER_INIT_STD, 'float32', s)),
        b: added<tf.Tensor1D>(`${prefix}.up.bias`, 'adapter', () => tf.zeros([d])),
      },
    })
    // the authors' module paths: layer.attention.output (BertSelfOutput / ViTSelfOutput) and layer.output
    adapters = layerIds.map((i) => ({ attention: adapter(`${kind.layerPrefix(i)}.attention.output.adapter`), ffn: adapter(`${kind.layerPrefix(i)}.output.adapter`) }))
  }
  return { weights, named: registry.weights, adapters }
}

/**
 * Runs `f` as a single op without a gradient (a customGrad with no inputs): under a gradient
 * tape none of its intermediates are recorded, so a frozen backbone inside a training step costs
 * no tape memory. The outputs come back as fresh copies.
 */
function untaped(f: () => tf.Tensor2D[]): tf.Tensor2D[] {
  const stacked = tf.customGrad(((_save: tf.GradSaveFunc) => ({ value: tf.stack(f()), gradFunc: () => [] })) as never)() as tf.Tensor3D
  const outputs = tf.unstack(stacked) as tf.Tensor2D[]
  stacked.dispose()
  return outputs
}

/** The static side of TrainableBert / TrainableVit, for the factories they share. */
interface BackboneClass<C, T> {
  new (config: C, reader: WeightReader, tuning: BackboneTuning, seed: number, options?: TrainableOptions): T
  kindOf(config: C): { randomWeights(seed: string): Record<string, TensorToWrite> }
}

/** The parts of the trainable BERT and ViT that do not depend on the input kind. */
abstract class TrainableBackbone<W extends { layers: EncoderLayer[] }> {
  /**
   * From a real HF folder's or the demo's checkpoint (Checkpoint.open); `seed` draws the adapters
   * or LoRA matrices and the default dropout stream.
   */
  static load<C, T>(this: BackboneClass<C, T>, config: C, reader: WeightReader, tuning: BackboneTuning, seed: number, options: TrainableOptions = {}): T {
    return new this(config, reader, tuning, seed, options)
  }

  /** Random weights (the demo generator's) in the config's shapes, e.g. base size for benchmarks. */
  static random<C, T>(this: BackboneClass<C, T>, config: C, tuning: BackboneTuning, seed: number, options: TrainableOptions = {}): T {
    return new this(config, recordReader(this.kindOf(config).randomWeights(`trainable-${seed}`)), tuning, seed, options)
  }

  readonly numLayers: number
  readonly hiddenSize: number
  protected readonly weights: W
  private readonly named: NamedWeight[]
  private readonly adapters: LayerAdapters[] | null
  private readonly rates: DropoutRates
  private dropoutCalls = 0

  protected constructor(
    kind: ModelKind<W>,
    reader: WeightReader,
    readonly tuning: BackboneTuning,
    private readonly seed: number,
    options: TrainableOptions,
  ) {
    const { weights, named, adapters } = build(kind, reader, tuning, seed)
    this.numLayers = kind.config.numLayers
    this.hiddenSize = kind.config.hiddenSize
    this.weights = weights
    this.named = named
    this.adapters = adapters
    this.rates = { ...kind.dropout, ...options.dropout }
  }

  /** What an optimiser updates. */
  trainableWeights(): TrainableWeight[] {
    return this.named
      .filter((w) => w.trainable)
      .map((w) => ({ name: w.name, variable: w.tensor as tf.Variable, role: w.role, isBias: w.name.endsWith('.bias') }))
  }

  /** Every weight, frozen ones included. */
  namedWeights(): NamedWeight[] {
    return [...this.named]
  }

  get hasTrainable(): boolean {
    return this.named.some((w) => w.trainable)
  }

  /**
   * Frees the weights. `trainable: false` leaves the trainable variables to whoever adopted
   * them (a Params store disposes its own).
   */
  dispose(options: { trainable?: boolean } = {}): void {
    const trainable = options.trainable ?? true
    for (const w of this.named) if ((trainable || !w.trainable) && !w.tensor.isDisposed) w.tensor.dispose()
  }

  /** Embeddings (dropout applied here) → encoder → the requested outputs. */
  protected run(embed: () => tf.Tensor2D, batch: number, seq: number, mask: () => tf.Tensor4D | null, opts: ForwardOptions, lastCls: (last: tf.Tensor2D) => tf.Tensor2D): tf.Tensor2D[] {
    const forward = (): tf.Tensor2D[] => {
      const embeddings = tf.tidy(() => this.dropout(embed(), this.rates.hidden, opts))
      const additive = mask()
      const perLayer = opts.output === 'cls-per-layer'
      const keep = perLayer ? (h: tf.Tensor2D) => firstToken(h, batch, seq) : null
      const { kept, last } = runEncoder(embeddings, batch, seq, this.weights.layers, additive, keep, (i) => this.hooks(i, opts))
      additive?.dispose()
      embeddings.dispose()
      const outputs = perLayer ? (kept as tf.Tensor2D[]) : [tf.tidy(() => lastCls(last))]
      last.dispose()
      return outputs
    }
    return this.hasTrainable ? forward() : untaped(forward)
  }

  private dropout<T extends tf.Tensor>(x: T, rate: number, opts: ForwardOptions): T {
    if (!opts.training || rate <= 0) return x
    const seed = opts.dropoutSeed ? opts.dropoutSeed() : (seedOf(this.seed, 'dropout') + ++this.dropoutCalls) % 2 ** 31
    return tf.dropout(x, rate, undefined, seed) as T
  }

  private hooks(layer: number, opts: ForwardOptions): LayerHooks | undefined {
    const adapters = this.adapters?.[layer]
    const { hidden, attention } = this.rates
    if (!adapters && !(opts.training && (hidden > 0 || attention > 0))) return undefined
    // HF order: dense → dropout → (adapter) → residual
    const output = (adapter: Adapter | undefined) => (h: tf.Tensor2D) => {
      const dropped = this.dropout(h, hidden, opts)
      return adapter ? this.adapt(dropped, adapter, opts) : dropped
    }
    return {
      attentionProbs: (probs) => this.dropout(probs, attention, opts),
      attentionOutput: output(adapters?.attention),
      ffnOutput: output(adapters?.ffn),
    }
  }

  /** AdapterBlock: x + up(relu(down(x))), [rows, d] → [rows, d]. */
  private adapt(x: tf.Tensor2D, adapter: Adapter, opts: ForwardOptions): tf.Tensor2D {
    const hidden = tf.fused.matMul({ a: x, b: adapter.down.w, bias: adapter.down.b ?? undefined, activation: 'relu' }) // [rows, r]
    const branch = tf.fused.matMul({ a: hidden, b: adapter.up.w, bias: adapter.up.b ?? undefined }) as tf.Tensor2D
    const rate = this.tuning.kind === 'adapter' ? this.tuning.dropout : 0
    return tf.add(x, this.dropout(branch, rate, opts))
  }
}

export class TrainableBert extends TrainableBackbone<BertWeights> {
  static readonly kindOf = bertKind

  /** The same as TrainableBert.load. */
  constructor(readonly config: BertConfig, reader: WeightReader, tuning: BackboneTuning, seed: number, options: TrainableOptions = {}) {
    super(bertKind(config), reader, tuning, seed, options)
  }

  /** inputIds, attentionMask: row-major [batch, seq]. The caller disposes the outputs. */
  forward(inputIds: Int32Array, attentionMask: Int32Array, batch: number, seq: number, opts: ForwardOptions): tf.Tensor2D[] {
    return this.run(
      () => bertEmbeddings(this.config, this.weights, inputIds, batch, seq),
      batch,
      seq,
      () => additiveMask(attentionMask, batch, seq),
      opts,
      // BertModel's last_hidden_state[:, 0]: Text_Encoder reads it, not the pooler
      (last) => firstToken(last, batch, seq),
    )
  }
}

export class TrainableVit extends TrainableBackbone<VitWeights> {
  static readonly kindOf = vitKind

  /** The same as TrainableVit.load. */
  constructor(readonly config: VitConfig, reader: WeightReader, tuning: BackboneTuning, seed: number, options: TrainableOptions = {}) {
    super(vitKind(config), reader, tuning, seed, options)
  }

  /** Sequence length: patches + [CLS]. */
  get seqLen(): number {
    return this.config.numPatches + 1
  }

  /** pixels: [batch, C, H, W] float32 (already normalised). The caller disposes the outputs. */
  forward(pixels: Float32Array, batch: number, opts: ForwardOptions): tf.Tensor2D[] {
    const seq = this.seqLen
    return this.run(
      () => vitEmbeddings(this.config, this.weights, pixels, batch),
      batch,
      seq,
      () => null,
      opts,
      // ViTForImageClassification's classifier input: layernorm(last_hidden_state)[:, 0]. The norm
      // works row by row, so normalising only the [CLS] rows gives the same numbers.
      (last) => normalize(firstToken(last, batch, seq), this.weights.finalNorm),
    )
  }
}

// The item tower of the fine-tuning baselines (FFT, Adapter, LoRA, BitFit): the authors' "intra"
// modality (Code_Uncached: model/model.py ModelMM, model/encoders.py Text_Encoder / Vit_Encoder,
// run.py's classifier replacement), with the backbones inside every training step:
//   e_t  = GELU(fc(BERT(title).last_hidden_state[:, 0]))                    fc: d_t → D
//   e_v  = GELU(classifier(layernorm(ViT(image).last_hidden_state)[:, 0]))  classifier: d_v → D
//   item = com_dense([e_v, e_t])                                            com_dense: 2D → D
// Which backbone weights train is the backbones' tuning (@iisan/backbones/trainable).
import * as tf from '@tensorflow/tfjs-core'
import { gelu } from '@iisan/tensor-ops'
import { TrainableBert, type ForwardOptions, type TrainableVit } from '@iisan/backbones/trainable'
import type { ModalityStates } from './cached-states.ts'
import type { ItemContent } from './item-content.ts'
import type { ItemEncoder } from './item-encoder.ts'
import { linear, type ParamGroup, type Params } from './params.ts'

// items per backbone forward in inference: bounds the [B, h, S, S] scores and the ViT activations
const BACKBONE_CHUNK = 64
const MISSING_INIT_STD = 0.02

export interface BackboneItemEncoderOptions {
  params: Params
  text: TrainableBert
  /** null: no image backbone (a catalogue without images); every item then uses the missing-image vector */
  image: TrainableVit | null
  content: ItemContent
  /** D */
  embeddingDim: number
  /**
   * Accepted for symmetry with the other encoders; the tower's initialisation follows the Params
   * store's seed stream and dropout masks come from params.nextDropoutSeed(), so a resumed run
   * draws the same masks.
   */
  seed?: number
}

/**
 * ids [n] → the distinct non-zero ids in first-seen order, and for each slot its row in
 * [a default row; one row per unique id] (0 = the default, i.e. padding).
 */
export function uniqueItems(ids: ArrayLike<number>): { unique: Int32Array; slot: Int32Array } {
  const rowOf = new Map<number, number>()
  const slot = new Int32Array(ids.length)
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i]
    if (id === 0) continue
    if (!rowOf.has(id)) rowOf.set(id, rowOf.size + 1)
    slot[i] = rowOf.get(id)!
  }
  return { unique: Int32Array.from(rowOf.keys()), slot }
}

/** rows [m, D] spread over n slots, `fallback` [1, D] where slot is 0 → [n, D]; differentiable in both. */
function withFallback(fallback: tf.Tensor2D, rows: tf.Tensor2D, slot: Int32Array): tf.Tensor2D {
  return tf.gather(tf.concat([fallback, rows], 0), tf.tensor1d(slot, 'int32'))
}

/**
 * [N+1, D] with row 0 zero: `embedUnique` on items 1..N, `chunk` items at a time, each chunk's
 * intermediates freed before the next so memory stays flat.
 */
export function embedCatalogue(numItems: number, embeddingDim: number, chunk: number, embedUnique: (ids: Int32Array) => tf.Tensor2D): tf.Tensor2D {
  const parts: tf.Tensor2D[] = [tf.zeros([1, embeddingDim])]
  for (let first = 1; first <= numItems; first += chunk) {
    const ids = Int32Array.from({ length: Math.min(chunk, numItems - first + 1) }, (_, i) => first + i)
    parts.push(tf.tidy(() => embedUnique(ids)))
  }
  const all = tf.concat(parts, 0) as tf.Tensor2D
  for (const p of parts) p.dispose()
  return all
}

/**
 * Runs a backbone on the content of `ids`: BERT on every title, ViT on the items that have an
 * image (each image is fetched once). `present` lists the ids the outputs' rows belong to, in
 * order; with none present the backbone does not run and `outputs` is empty.
 */
export function forwardItems(
  backbone: TrainableBert | TrainableVit,
  content: ItemContent,
  ids: ArrayLike<number>,
  opts: ForwardOptions,
): { present: number[]; outputs: tf.Tensor2D[] } {
  if (backbone instanceof TrainableBert) {
    const { inputIds, attentionMask, seqLen } = content.text
    const present = Array.from(ids)
    const rows = (src: Int32Array) => {
      const out = new Int32Array(present.length * seqLen)
      present.forEach((id, i) => out.set(src.subarray(id * seqLen, (id + 1) * seqLen), i * seqLen))
      return out
    }
    return { present, outputs: backbone.forward(rows(inputIds), rows(attentionMask), present.length, seqLen, opts) }
  }
  const present: number[] = []
  const images: Float32Array[] = []
  for (const id of Array.from(ids)) {
    const pixels = content.image(id)
    if (!pixels) continue
    present.push(id)
    images.push(pixels)
  }
  if (!present.length) return { present, outputs: [] }
  const batch = new Float32Array(images.reduce((s, p) => s + p.length, 0))
  images.reduce((offset, p) => (batch.set(p, offset), offset + p.length), 0)
  return { present, outputs: backbone.forward(batch, present.length, opts) }
}

/**
 * The per-layer [CLS] states of `ids` (layers 0..L, or `layers`), computed in inference mode, as
 * a ModalityStates store over the catalogue: a [layers, d] row for each id that has the modality
 * (text: all; image: those with an image), rowOf −1 for every other item. What uncached IISAN
 * reads in place of the cache. A frozen backbone runs off the gradient tape, but call this before
 * a step's forward pass anyway (ItemEncoder.prepare): the states are constants to the step.
 */
export function frozenClsStates(
  backbone: TrainableBert | TrainableVit,
  content: ItemContent,
  ids: ArrayLike<number>,
  options: { layers?: number[]; chunk?: number } = {},
): ModalityStates {
  const L = backbone.numLayers
  const d = backbone.hiddenSize
  const layers = options.layers ?? Array.from({ length: L + 1 }, (_, l) => l)
  const distinct = [...new Set(Array.from(ids))].filter((id) => id !== 0)
  const rowOf = new Int32Array(content.numItems + 1).fill(-1)
  const rows: Float32Array[] = []
  const chunk = options.chunk ?? BACKBONE_CHUNK
  for (let first = 0; first < distinct.length; first += chunk) {
    tf.tidy(() => {
      const { present, outputs } = forwardItems(backbone, content, distinct.slice(first, first + chunk), { training: false, output: 'cls-per-layer' })
      const perLayer = layers.map((l) => outputs[l].dataSync() as Float32Array) // [present, d] each
      present.forEach((id, i) => {
        const row = new Float32Array(layers.length * d)
        perLayer.forEach((values, k) => row.set(values.subarray(i * d, (i + 1) * d), k * d))
        rowOf[id] = rows.length
        rows.push(row)
      })
    })
  }
  const data = new Float32Array(rows.length * layers.length * d)
  rows.forEach((row, r) => data.set(row, r * row.length))
  return { numLayers: L, width: d, rowOf, data, layers }
}

export class BackboneItemEncoder implements ItemEncoder {
  readonly embeddingDim: number
  private readonly params: Params
  private readonly text: TrainableBert
  private readonly image: TrainableVit | null
  private readonly content: ItemContent

  constructor(options: BackboneItemEncoderOptions) {
    const { params, text, image, content, embeddingDim: D } = options
    this.params = params
    this.text = text
    this.image = image
    this.content = content
    this.embeddingDim = D
    // The authors' optimiser groups (run.py): a backbone's own weights train at its encoder rate,
    // what a tuning adds to it (adapter / lora in the name) at its adapter rate.
    const adopt = (prefix: string, backbone: TrainableBert | TrainableVit, own: ParamGroup, added: ParamGroup) => {
      for (const w of backbone.trainableWeights()) params.adopt(`${prefix}.${w.name}`, w.variable, w.role === 'backbone' ? own : added)
    }
    adopt('text', text, 'textEncoder', 'textAdapters')
    if (image) adopt('image', image, 'imageEncoder', 'imageAdapters')

    // fc, classifier and com_dense are "recsys" by the name rules; fc and com_dense keep
    // nn.Linear's default init, the classifier run.py's xavier_normal_ weight and zero bias.
    const dText = text.hiddenSize
    params.add('text.fc.w', [dText, D], { torchLinear: dText }, 'recsys')
    params.add('text.fc.b', [D], { torchLinear: dText }, 'recsys')
    if (image) {
      params.add('image.classifier.w', [image.hiddenSize, D], 'xavier', 'recsys')
      params.add('image.classifier.b', [D], 'zeros', 'recsys')
    }
    // Items without an image (the authors' datasets have one for every item; Scientific as shipped
    // has none) take a learned e_v instead, initialised like the SAN's missing states. It stands
    // in for the classifier's output, so it learns at the classifier's (recsys) rate.
    params.add('image.missing', [D], { normalStd: MISSING_INIT_STD }, 'recsys')
    params.add('com_dense.w', [2 * D, D], { torchLinear: 2 * D }, 'recsys')
    params.add('com_dense.b', [D], { torchLinear: 2 * D }, 'recsys')
  }

  get numItems(): number {
    return this.content.numItems
  }

  /** ids [n] → [n, D]; the backbones see each distinct real item once, padding (0) gets zeros. */
  embed(ids: Int32Array, training: boolean): tf.Tensor2D {
    const { unique, slot } = uniqueItems(ids)
    const D = this.embeddingDim
    const rows = unique.length ? this.embedUnique(unique, training) : (tf.zeros([0, D]) as tf.Tensor2D)
    return withFallback(tf.zeros([1, D]), rows, slot)
  }

  embedAll(): tf.Tensor2D {
    return embedCatalogue(this.numItems, this.embeddingDim, BACKBONE_CHUNK, (ids) => this.embedUnique(ids, false))
  }

  /** ids [n] (distinct, ≥ 1) → item embeddings [n, D]. */
  embedUnique(ids: Int32Array, training: boolean): tf.Tensor2D {
    const opts: ForwardOptions = { training, output: 'last-cls', dropoutSeed: () => this.params.nextDropoutSeed() }
    const p = (name: string) => this.params.get(name)
    const [textCls] = forwardItems(this.text, this.content, ids, opts).outputs // [n, d_t]
    const eText = gelu(linear(textCls, p('text.fc.w') as tf.Tensor2D, p('text.fc.b') as tf.Tensor1D))
    const eImage = this.imageEmbeddings(ids, opts)
    return linear(tf.concat([eImage, eText], 1), p('com_dense.w') as tf.Tensor2D, p('com_dense.b') as tf.Tensor1D)
  }

  /** e_v [n, D]: the ViT head where the item has an image, the learned missing vector elsewhere. */
  private imageEmbeddings(ids: Int32Array, opts: ForwardOptions): tf.Tensor2D {
    const D = this.embeddingDim
    const missing = tf.reshape(this.params.get('image.missing'), [1, D]) as tf.Tensor2D
    const { present, outputs } = this.image ? forwardItems(this.image, this.content, ids, opts) : { present: [], outputs: [] }
    if (!present.length) return tf.tile(missing, [ids.length, 1])
    const rowOf = new Map(present.map((id, j) => [id, j + 1]))
    const slot = Int32Array.from(ids, (id) => rowOf.get(id) ?? 0)
    const p = (name: string) => this.params.get(name)
    const eImage = gelu(linear(outputs[0], p('image.classifier.w') as tf.Tensor2D, p('image.classifier.b') as tf.Tensor1D)) // [m, D]
    return withFallback(missing, eImage, slot)
  }

  /** The backbones' frozen weights; their trainable ones belong to the Params store. */
  dispose(): void {
    this.text.dispose({ trainable: false })
    this.image?.dispose({ trainable: false })
  }
}

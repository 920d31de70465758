// The item tower of the fine-tuning baselines (FFT, Adapter, LoRA, BitFit): the authors' "intra"
// modality (Code_Uncached: model/model.py ModelMM, model/encoders.py Text_Encoder / Vit_Encoder,
// run.py's classifier replacement), with the backbones inside every training step:
//   e_t  = GELU(fc(BERT(title).last_hidden_state[:, 0]))                    fc: d_t → D
//   e_v  = GELU(classifier(layernorm(ViT(image).last_hidden_state)[:, 0]))  classifier: d_v → D
//   item = com_dense([e_v, e_t])                                            com_dense: 2D → D
// Which backbone weights train is the backbones' tuning (@iisan/backbones/trainable).
import * as tf from '@tensorflow/tfjs-core'
import { gelu } from '@iisan/tensor-ops'
import { TrainableBert, type BackboneTuning, type ForwardOptions, type TrainableVit } from '@iisan/backbones/trainable'
import type { ModalityStates } from './cached-states.ts'
import type { ItemContent } from './item-content.ts'
import { embedCatalogue, spreadRows, uniqueItems, type ItemEncoder, type TwoPassStep } from './item-encoder.ts'
import { linear, type ParamGroup, type Params } from './params.ts'
import { addLinear, type LinearWeights } from './san.ts'

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
   * Tokens per backbone forward in training (default: defaultStepTokens): a training step's pass
   * 2 holds the tape of one such forward (ItemEncoder.forwardForStep), so a chunk takes as many
   * titles (BERT) or images (ViT) as fit, at least one. Each forward draws its own dropout masks,
   * so this is part of what a run reproduces.
   */
  stepTokens?: number
}

/**
 * Tokens per backbone forward in a training step. On wasm tfjs' tape keeps every intermediate of
 * a forward and the backward pass a gradient for each, ≈ 5 MB per BERT-base token at its peak
 * (measured: 8 titles of 30 tokens, LoRA, 1.7 GB of tensors at the step's peak). FFT also holds
 * Adam's two slots and two copies of the gradients of all 110 M weights (≈ 2 GB), so its tape
 * gets half as much. A ViT-base image is 197 tokens: one image per forward either way.
 */
export function defaultStepTokens(tuning: BackboneTuning): number {
  return tuning.kind === 'full' ? 128 : 256
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
): ModalityStates & { data: Float32Array } {
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
      if (!present.length) return // no image among them
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

/** One backbone forward of a training step: which items, where their rows sit, the dropout draws made before it. */
interface BackboneChunk {
  backbone: TrainableBert | TrainableVit
  ids: Int32Array
  /** its rows' offset in the backbone's [CLS] rows, and their count (the items it had content for) */
  first: number
  rows: number
  dropoutCalls: number
}

/** The [CLS] rows the heads read: BERT's for every item, ViT's for the items with an image (in `imagePresent` order). */
interface ClsRows {
  text: tf.Tensor2D
  image: tf.Tensor2D | null
  imagePresent: number[]
  chunks: BackboneChunk[]
}

/** The item tower's own layers, all "recsys" (the authors' name rules). */
interface Heads {
  /** fc: d_t → D */
  fc: LinearWeights
  /** classifier: d_v → D; null without an image backbone */
  classifier: LinearWeights | null
  /** the learned e_v [D] of items without an image */
  missingImage: tf.Variable<tf.Rank.R1>
  /** com_dense: 2D → D */
  comDense: LinearWeights
}

export class BackboneItemEncoder implements ItemEncoder {
  readonly embeddingDim: number
  private readonly params: Params
  private readonly text: TrainableBert
  private readonly image: TrainableVit | null
  private readonly content: ItemContent
  private readonly stepTokens: number
  private readonly head: Heads
  /** what trains, by part: each backbone's trainable weights, and the heads */
  private readonly variables = new Map<TrainableBert | TrainableVit | 'heads', tf.Variable[]>()

  constructor(options: BackboneItemEncoderOptions) {
    const { params, text, image, content, embeddingDim: D } = options
    this.params = params
    this.text = text
    this.image = image
    this.content = content
    this.embeddingDim = D
    this.stepTokens = options.stepTokens ?? defaultStepTokens(text.tuning)
    // The authors' optimiser groups (run.py): a backbone's own weights train at its encoder rate,
    // what a tuning adds to it (adapter / lora in the name) at its adapter rate.
    const adopt = (prefix: string, backbone: TrainableBert | TrainableVit, own: ParamGroup, added: ParamGroup) => {
      this.variables.set(
        backbone,
        backbone.trainableWeights().map((w) => params.adopt(`${prefix}.${w.name}`, w.variable, w.role === 'backbone' ? own : added)),
      )
    }
    adopt('text', text, 'textEncoder', 'textAdapters')
    if (image) adopt('image', image, 'imageEncoder', 'imageAdapters')

    // fc, classifier and com_dense are "recsys" by the name rules; fc and com_dense keep
    // nn.Linear's default init, the classifier run.py's xavier_normal_ weight and zero bias.
    // Creation order fixes each parameter's initialisation seed: keep it.
    const fc = addLinear(params, 'text.fc', [text.hiddenSize, D], { torchLinear: text.hiddenSize }, 'recsys')
    const classifier = image ? addLinear(params, 'image.classifier', [image.hiddenSize, D], { w: 'xavier', b: 'zeros' }, 'recsys') : null
    // Items without an image (the authors' datasets have one for every item; Scientific as shipped
    // has none) take a learned e_v instead, initialised like the SAN's missing states. It stands
    // in for the classifier's output, so it learns at the classifier's (recsys) rate.
    const missingImage = params.vector('image.missing', D, { normalStd: MISSING_INIT_STD }, 'recsys')
    const comDense = addLinear(params, 'com_dense', [2 * D, D], { torchLinear: 2 * D }, 'recsys')
    this.head = { fc, classifier, missingImage, comDense }
    this.variables.set('heads', [fc.w, fc.b, ...(classifier ? [classifier.w, classifier.b] : []), missingImage, comDense.w, comDense.b])
  }

  get numItems(): number {
    return this.content.numItems
  }

  /**
   * ids [n] → [n, D]; the backbones see each distinct real item once, in training as many per
   * forward as `stepTokens` allows (forwardForStep's chunks, so one tape over this gives the
   * two-pass gradients); padding (0) gets zeros.
   */
  embed(ids: Int32Array, training: boolean): tf.Tensor2D {
    const { unique, slot } = uniqueItems(ids)
    return spreadRows(this.embedUnique(unique, training), slot)
  }

  /**
   * Pass 1 of a two-pass step (ItemEncoder.forwardForStep): embed's backbone chunks off the tape,
   * each with the dropout draws made before it; pass 2 takes the heads' gradients (and dL/d[CLS])
   * on one small tape, then each backbone chunk's under a tape of its own.
   */
  forwardForStep(ids: Int32Array): TwoPassStep {
    const { unique: uniqueIds, slot } = uniqueItems(ids)
    const cls = this.clsRows(uniqueIds, true, true)
    const unique = this.heads(uniqueIds, cls)
    const backward = (dUnique: tf.Tensor2D): tf.NamedTensorMap => {
      const after = this.params.dropoutCalls
      const headVariables = this.variables.get('heads')!
      const leaves = cls.image ? [cls.text, cls.image] : [cls.text]
      const { value, grads } = tf.engine().gradients(() => tf.sum(tf.mul(this.heads(uniqueIds, cls), dUnique)), [...leaves, ...headVariables], undefined, true)
      value.dispose()
      const [dText, dImage] = grads
      const sum: tf.NamedTensorMap = {}
      headVariables.forEach((v, i) => {
        const grad = grads[leaves.length + i]
        if (grad) sum[v.name] = grad
      })
      const opts = this.forwardOptions(true)
      for (const chunk of cls.chunks) {
        const variables = this.variables.get(chunk.backbone) ?? []
        if (!variables.length) continue
        // pass 1's masks for this chunk: the seeds follow the store's count of draws
        this.params.dropoutCalls = chunk.dropoutCalls
        const d = chunk.backbone === this.text ? dText : dImage
        const chunkGrads = tf.tidy(() => {
          const dRows = tf.slice(d, [chunk.first, 0], [chunk.rows, d.shape[1]!])
          const rows = () => forwardItems(chunk.backbone, this.content, chunk.ids, opts).outputs[0]
          return tf.variableGrads(() => tf.sum(tf.mul(rows(), dRows)), variables).grads
        })
        for (const [name, grad] of Object.entries(chunkGrads)) {
          const before = sum[name]
          sum[name] = before ? tf.add(before, grad) : grad
          if (before) tf.dispose([before, grad])
        }
      }
      tf.dispose(leaves.map((_, i) => grads[i]))
      this.params.dropoutCalls = after
      return sum
    }
    return { unique, slot, backward }
  }

  embedAll(): tf.Tensor2D {
    return embedCatalogue(this.numItems, this.embeddingDim, BACKBONE_CHUNK, (ids) => this.embedUnique(ids, false))
  }

  /** ids [n] (distinct, ≥ 1) → item embeddings [n, D]. */
  embedUnique(ids: Int32Array, training: boolean): tf.Tensor2D {
    return this.heads(ids, this.clsRows(ids, training, false))
  }

  private forwardOptions(training: boolean): ForwardOptions {
    return { training, output: 'last-cls', dropoutSeed: () => this.params.nextDropoutSeed() }
  }

  /**
   * The backbones' [CLS] rows of distinct ids: BERT on every title, then ViT on the items that
   * have an image. In training each forward takes as many items as `stepTokens` allows (at least
   * one) and notes the dropout draws made before it; in inference all at once. `offTape`: each
   * chunk in a tidy of its own, its intermediates freed at once.
   */
  private clsRows(ids: Int32Array, training: boolean, offTape: boolean): ClsRows {
    const opts = this.forwardOptions(training)
    const chunks: BackboneChunk[] = []
    const run = (backbone: TrainableBert | TrainableVit, seqLen: number): { rows: tf.Tensor2D | null; present: number[] } => {
      const perChunk = training ? Math.max(1, Math.floor(this.stepTokens / seqLen)) : ids.length
      const parts: tf.Tensor2D[] = []
      const present: number[] = []
      for (let first = 0; first < ids.length; first += perChunk) {
        const chunkIds = ids.subarray(first, first + perChunk)
        const dropoutCalls = this.params.dropoutCalls
        let chunkPresent: number[] = []
        const forward = () => {
          const out = forwardItems(backbone, this.content, chunkIds, opts)
          chunkPresent = out.present
          return out.outputs[0]
        }
        const rows = offTape ? tf.tidy(forward) : forward()
        if (!chunkPresent.length) continue // no image among them: the backbone did not run
        chunks.push({ backbone, ids: chunkIds, first: present.length, rows: chunkPresent.length, dropoutCalls })
        parts.push(rows)
        present.push(...chunkPresent)
      }
      if (parts.length <= 1) return { rows: parts[0] ?? null, present }
      const rows = tf.concat(parts, 0) as tf.Tensor2D
      if (offTape) tf.dispose(parts)
      return { rows, present }
    }
    const text = run(this.text, this.content.text.seqLen)
    const image = this.image ? run(this.image, this.image.seqLen) : { rows: null, present: [] }
    return { text: text.rows ?? (tf.zeros([0, this.text.hiddenSize]) as tf.Tensor2D), image: image.rows, imagePresent: image.present, chunks }
  }

  /**
   * The heads on the backbones' [CLS] rows → [n, D]: e_t = GELU(fc(text)), e_v = GELU(classifier(image))
   * where the item has an image and the learned missing vector elsewhere, com_dense([e_v, e_t]).
   */
  private heads(ids: Int32Array, cls: ClsRows): tf.Tensor2D {
    const { fc, classifier, missingImage, comDense } = this.head
    const eText = gelu(linear(cls.text, fc.w, fc.b))
    const missing = tf.reshape(missingImage, [1, this.embeddingDim]) as tf.Tensor2D
    let eImage: tf.Tensor2D
    // [CLS] image rows come only from an image backbone, which has a classifier
    if (!cls.image || !classifier) eImage = tf.tile(missing, [ids.length, 1])
    else {
      const rowOf = new Map(cls.imagePresent.map((id, j) => [id, j + 1]))
      const slot = Int32Array.from(ids, (id) => rowOf.get(id) ?? 0)
      eImage = spreadRows(gelu(linear(cls.image, classifier.w, classifier.b)), slot, missing)
    }
    return linear(tf.concat([eImage, eText], 1), comDense.w, comDense.b)
  }

  /** The backbones' frozen weights; their trainable ones belong to the Params store. */
  dispose(): void {
    this.text.dispose({ trainable: false })
    this.image?.dispose({ trainable: false })
  }
}

// IISAN's item encoder: the SAN over cached text and image states, then the fusion layer
// (docs/METHOD.md §3). Only unique, real items of a batch go through the SAN.
import os from 'node:os'
import * as tf from '@tensorflow/tfjs-core'
import { readBack } from '@iisan/tensor-ops'
import { appendItems, emptyModality, gatherSideLayers, layerPosition, readRows, rowsDtype, statesPerItem, type CachedStates, type Modality, type ModalityStates, type NewItemStates } from './cached-states.ts'
export type { NewItemStates } from './cached-states.ts'
import { embedCatalogue, spreadRows, uniqueItems, type ItemEncoder, type TwoPassStep } from './item-encoder.ts'
import { linear, type Params } from './params.ts'
import { addLinear, addTower, interTower, intraTower, sideLayersFor, type LinearWeights, type SanActivation, type SanTower } from './san.ts'
import { SanThreads } from './san-threads.ts'
import { SAN_OUTPUT, presentInput, rowsInput, sanGraph, type DenseRefs, type ParamRef, type RowLayout, type SanStructure } from './san-onnx.ts'
import { SanTrainingRuntime } from './san-onnx-step.ts'
import { OrtGraph, resolveRuntime } from '@iisan/backbones/onnx/onnx-runtime'
import type { UserEncoderConfig } from './user-encoder.ts'

export type ModalityMode = 'intra' | 'inter' | 'intra_inter'

export interface BackboneShape {
  /** L */
  numLayers: number
  /** d */
  width: number
}

export interface IisanConfig extends UserEncoderConfig {
  /** 'iisan' (states from the cache) or 'iisan-uncached' (the frozen backbones run in every step) */
  method: string
  numItems: number
  seed: number
  modality: ModalityMode
  /** side layers S of the text backbone; the image backbone uses the same relative depths */
  sideLayers: number[]
  /** r, the SANB bottleneck */
  reduction: number
  activation: SanActivation
  text: BackboneShape
  image: BackboneShape
  /**
   * Threads a cached training step's SAN runs on: ORT's intra-op threads, or on tfjs the step's
   * own plus SAN threads (san-threads.ts); 0 or unset: automatic (methods/iisan.ts, TRAIN_THREADS).
   */
  trainThreads?: number
}

const MISSING_INIT_STD = 0.02
// items per inference chunk: every intermediate of a chunk lives until the chunk ends (tidy)
const EMBED_CHUNK = 256
// items per ONNX Runtime run of the catalogue pass. ORT's arena keeps its largest plan: a pass of
// Scientific's 20k base-shaped items raised the peak RSS by ≈ 500 MB at 2,048 items a run and
// ≈ 200 MB at 512, in about the same time (tmp runs on the shared machine, 2.8–4.5 s)
const ORT_CHUNK = 512

/**
 * Where the SAN's inputs H_m[s_k] come from: the cache's stored states (cached IISAN), or the
 * frozen backbones run on the items' content (uncached IISAN, uncached-states.ts).
 */
export interface SideStateSource {
  /** slices[k] = H_m[layers[k]] [n, d] row-major; present[i] = 0 where item i lacks the modality */
  side(modality: Modality, ids: Int32Array, layers: number[]): { slices: Float32Array[]; present: Float32Array }
  /** Called before a training step's forward pass, outside the gradient tape, with the step's item ids. */
  prepare?(ids: Int32Array, layers: Record<Modality, number[]>): void
  dispose?(): void
}

/** The cache's states, held in memory (docs/METHOD.md §2). */
export class StoredStates implements SideStateSource {
  constructor(public states: CachedStates) {}

  side(modality: Modality, ids: Int32Array, layers: number[]) {
    return gatherSideLayers(this.states[modality], ids, layers)
  }
}

/** A tower of the SAN and what it reads: one modality's states (intra) or both (inter). */
interface TowerInput {
  modality: Modality | 'inter'
  tower: SanTower
}

export class IisanItemEncoder implements ItemEncoder {
  readonly embeddingDim: number
  private readonly layers: Record<Modality, number[]>
  private source: SideStateSource
  /** the learned stand-ins for H_m[s_k] of items without modality m: [K, d_m] */
  private readonly missing: Record<Modality, tf.Variable<tf.Rank.R2>>
  /** the towers in fusion order: image, text (intra), then inter */
  private readonly towers: TowerInput[]
  /** IISAN-Versa's image → text width map [d_image, d_text]; null when the widths agree */
  private readonly alignImage: tf.Variable<tf.Rank.R2> | null = null
  /** fusion: [towers·D, D], [D] */
  private readonly fusion: LinearWeights
  /** this encoder's parameters (short name, variable), in creation order */
  private readonly variables: [string, tf.Variable][]
  /** the same variables by their (unique) tfjs names, which the ONNX graphs use */
  private readonly variableByName: Map<string, tf.Variable>
  /** the other threads a training step's SAN runs on; null: the step's own only */
  private threads: SanThreads | null = null
  /** the training step's SAN on ONNX Runtime (prepareTraining); null: on tfjs */
  private runtime: SanTrainingRuntime | null = null

  /**
   * `threads` > 1 (cached states only): training steps split their items over that many threads.
   */
  constructor(
    readonly config: IisanConfig,
    params: Params,
    source: SideStateSource | CachedStates,
    threads = 1,
  ) {
    this.source = 'side' in source ? source : new StoredStates(source)
    const before = params.entries().length
    const { text, image, reduction: r, embeddingDim: D } = config
    this.embeddingDim = D
    this.layers = { text: config.sideLayers, image: sideLayersFor(config.sideLayers, text.numLayers, image.numLayers) }
    for (const l of this.layers.text) if (l < 0 || l > text.numLayers) throw new Error(`side layer ${l} outside the text backbone's 0..${text.numLayers}`)
    const K = config.sideLayers.length
    const useIntra = config.modality !== 'inter'
    const useInter = config.modality !== 'intra'

    // A learned stand-in per side layer for items without the modality (the authors have none:
    // their datasets have every modality). It feeds the modality's SANBs and learns at their rate.
    // Creation order fixes each parameter's initialisation seed: keep it.
    this.missing = {
      text: params.matrix('san.missing.text', [K, text.width], { normalStd: MISSING_INIT_STD }, 'textAdapters'),
      image: params.matrix('san.missing.image', [K, image.width], { normalStd: MISSING_INIT_STD }, 'imageAdapters'),
    }
    this.towers = []
    if (useIntra) {
      const textTower = addTower(params, { name: 'san.text', width: text.width, numSideLayers: K, reduction: r, groups: { gate: 'recsys', sanbs: 'textAdapters', F: 'textEncoder' } }, D)
      const imageTower = addTower(params, { name: 'san.image', width: image.width, numSideLayers: K, reduction: r, groups: { gate: 'imageEncoder', sanbs: 'imageAdapters', F: 'imageEncoder' }, xavierP: true }, D)
      this.towers.push({ modality: 'image', tower: imageTower }, { modality: 'text', tower: textTower })
    }
    if (useInter) {
      // IISAN-Versa: image states are mapped to the text width before the inter-modal tower
      if (image.width !== text.width) this.alignImage = params.matrix('san.align.image', [image.width, text.width], { torchLinear: image.width }, 'recsys')
      this.towers.push({ modality: 'inter', tower: addTower(params, { name: 'san.inter', width: text.width, numSideLayers: K, reduction: r, groups: { gate: 'recsys', sanbs: 'imageAdapters', F: 'recsys' } }, D) })
    }
    const fanIn = this.towers.length * D
    this.fusion = addLinear(params, 'fusion', [fanIn, D], { torchLinear: fanIn }, 'recsys')
    this.variables = params.entries().slice(before)
    this.variableByName = new Map(this.variables.map(([, v]) => [v.name, v]))
    if (threads > 1) {
      if (!(this.source instanceof StoredStates)) throw new Error('training on more than one thread needs the cached states')
      this.threads = new SanThreads(threads - 1, config, this.source.states, this.variables)
    }
  }

  /** The SAN threads besides the step's own; null when training steps run on this thread only. */
  get trainingThreads(): SanThreads | null {
    return this.threads
  }

  get numItems(): number {
    return this.storedItems()
  }

  /** Swaps in a grown store (cold-start items appended, or new items to embed). */
  setStates(states: CachedStates): void {
    // the SAN threads and the runtime's graphs read the store they were given: a model past
    // training needs neither
    this.stopThreads()
    this.releaseRuntime()
    this.source = new StoredStates(states)
  }

  prepare(ids: Int32Array): void {
    this.source.prepare?.(ids, this.layers)
  }

  dispose(): void {
    this.stopThreads()
    this.releaseRuntime()
    this.source.dispose?.()
  }

  /**
   * Before training: the SAN's training pass moves to ONNX Runtime (san-onnx-step.ts) where it
   * loads and BACKBONE_RUNTIME allows it, for cached states and the ReLU SANB; steps then take
   * the two-pass route (forwardForStep), on `trainThreads` intra-op threads (0: every core).
   * Elsewhere (and for GELU, whose backward graph is not written) training stays on tfjs, with
   * the SAN threads if any.
   */
  async prepareTraining(): Promise<void> {
    if (this.runtime || !(this.source instanceof StoredStates) || this.config.activation !== 'relu') return
    const rt = await resolveRuntime(undefined, () => undefined)
    if (rt.name !== 'onnx') return
    const threads = this.config.trainThreads || os.availableParallelism()
    try {
      this.runtime = await SanTrainingRuntime.create(rt.ort, this.sanStructure(this.source.states), threads)
    } catch (err) {
      // the same training on tfjs, slower: better than no training
      console.warn(`iisan: ONNX Runtime could not take the SAN's training pass (${err instanceof Error ? err.message : String(err)}); training it on tfjs`)
      return
    }
    // the SAN threads have nothing left to do
    this.stopThreads()
  }

  /** Where the training step's SAN runs. */
  get trainingRuntime(): 'onnx' | 'tfjs' {
    return this.runtime ? 'onnx' : 'tfjs'
  }

  /**
   * Pass 1 of a two-pass step on ONNX Runtime (see prepareTraining); undefined while the SAN
   * trains on tfjs (one tape over the step). The same loss and gradients as the tape, within
   * float tolerance: a stand-in whose modality every item of the step has gets no gradient, as
   * on tfjs (where it is not on the tape), so Adam leaves it alone.
   */
  forwardForStep(ids: Int32Array): TwoPassStep | undefined {
    const { runtime } = this
    if (!runtime) return undefined
    const { unique, slot } = uniqueItems(ids)
    if (!unique.length) return undefined
    const variables = this.variableByName
    const values = new Map<string, Float32Array>()
    for (const [name, v] of variables) values.set(name, v.dataSync() as Float32Array)
    const pass = runtime.forward(unique, (this.source as StoredStates).states, (ref) => values.get(ref.name)!)
    const D = this.embeddingDim
    return {
      unique: tf.tensor2d(pass.rows, [unique.length, D]),
      slot,
      backward: (dUnique) => {
        const grads: tf.NamedTensorMap = {}
        for (const [name, grad] of pass.backward(dUnique.dataSync() as Float32Array)) {
          const v = variables.get(name)!
          if ((v === this.missing.text && !pass.absent.text) || (v === this.missing.image && !pass.absent.image)) continue
          grads[name] = tf.tensor(grad, v.shape)
        }
        return grads
      },
    }
  }

  embedFromStates(items: NewItemStates[]): Float32Array {
    return embedItemStates(this, items)
  }

  embed(ids: Int32Array, training = false): tf.Tensor2D {
    // SAN on the unique real items only, then scatter back; padding (0) gets a zero vector.
    const { unique, slot } = uniqueItems(ids)
    if (!unique.length) return spreadRows(tf.zeros([0, this.embeddingDim]) as tf.Tensor2D, slot)
    return spreadRows(training && this.threads ? this.embedOnThreads(unique, this.threads) : this.embedUnique(unique), slot)
  }

  embedAll(): tf.Tensor2D {
    return embedCatalogue(this.storedItems(), this.embeddingDim, EMBED_CHUNK, (ids) => this.embedUnique(ids))
  }

  /**
   * embedAll with the SAN on ONNX Runtime (san-onnx.ts), built from the current parameters; null
   * where ORT does not load here or BACKBONE_RUNTIME=tfjs. The same rows within float tolerance
   * (the sums run in another order).
   */
  async embedAllOnRuntime(): Promise<tf.Tensor2D | null> {
    // the stored rows go to the graph as they are (uncached IISAN computes its states: tfjs)
    if (!(this.source instanceof StoredStates)) return null
    const rt = await resolveRuntime(undefined, () => undefined)
    if (rt.name !== 'onnx') return null
    const stored = this.source.states
    const N = this.storedItems()
    const D = this.embeddingDim
    const graph = await OrtGraph.create(rt.ort, sanGraph(this.sanStructure(stored), (ref) => this.variableByName.get(ref.name)!.dataSync() as Float32Array))
    const out = new Float32Array((N + 1) * D) // row 0: padding
    try {
      for (let first = 1; first <= N; first += ORT_CHUNK) {
        const ids = Int32Array.from({ length: Math.min(ORT_CHUNK, N - first + 1) }, (_, i) => first + i)
        const feeds: Record<string, [Float32Array | Uint16Array, number[]]> = {}
        for (const modality of ['text', 'image'] as const) {
          const states = stored[modality]
          const { rows, present } = readRows(states, ids)
          feeds[rowsInput(modality)] = [rows, [ids.length, statesPerItem(states) / states.width, states.width]]
          feeds[presentInput(modality)] = [present, [ids.length, 1]]
        }
        const [rows] = await graph.run(feeds, [SAN_OUTPUT])
        out.set(rows, first * D)
      }
    } finally {
      await graph.release()
    }
    return tf.tensor2d(out, [N + 1, D])
  }

  /** The SAN's parameters (by variable name) and the stores' row layouts, for the ONNX graphs. */
  private sanStructure(stored: CachedStates): SanStructure {
    const ref = (v: tf.Variable): ParamRef => ({ name: v.name, shape: v.shape })
    const dense = ({ w, b }: LinearWeights): DenseRefs => ({ w: ref(w), b: ref(b) })
    const { text, image, activation, embeddingDim } = this.config
    return {
      activation,
      widths: { text: text.width, image: image.width },
      rows: { text: this.rowLayout(stored.text, 'text'), image: this.rowLayout(stored.image, 'image') },
      missing: { text: ref(this.missing.text), image: ref(this.missing.image) },
      alignImage: this.alignImage ? ref(this.alignImage) : null,
      towers: this.towers.map(({ modality, tower }) => ({
        modality,
        theta: ref(tower.gate),
        sanbs: tower.sanbs.map((b) => ({ down: dense({ w: b.down, b: b.downBias }), up: dense({ w: b.up, b: b.upBias }) })),
        F: dense(tower.F),
        P: dense(tower.P),
      })),
      fusion: dense(this.fusion),
      embeddingDim,
    }
  }

  /** ids [n] (distinct, ≥ 1) → e_item [n, D]. */
  embedUnique(ids: Int32Array): tf.Tensor2D {
    const text = this.sideStates('text', ids)
    const image = this.sideStates('image', ids)
    const { activation } = this.config
    const states = { text, image }
    const e = this.towers.map((t) => {
      if (t.modality !== 'inter') return intraTower(t.tower, states[t.modality], activation)
      const { alignImage } = this
      return interTower(t.tower, text, alignImage ? image.map((h) => tf.matMul(h, alignImage)) : image, activation)
    })
    const concatenated = e.length === 1 ? e[0] : (tf.concat(e, 1) as tf.Tensor2D) // [n, towers·D]
    return linear(concatenated, this.fusion.w, this.fusion.b)
  }

  /**
   * embedUnique with the items split in equal shares: the first embedded here, each other on a
   * SAN thread (san-threads.ts); the same rows, and under a tape the same gradients. Two
   * custom-gradient nodes carry the threads' part. Backprop takes a tape in reverse, so the one
   * that receives their rows (recorded after this thread's share) sends dL/d(rows) back before
   * this share's backward pass and the one that sent the ids (recorded before it) collects their
   * gradients after it: the threads' backward passes run while this one's does.
   */
  private embedOnThreads(ids: Int32Array, threads: SanThreads): tf.Tensor2D {
    const shares = splitEvenly(ids, threads.count + 1)
    if (shares.some((s) => s.length === 0)) return this.embedUnique(ids)
    const theirs = shares.slice(1)
    const all = concatIds(theirs)
    // A missing-state stand-in is reached only through items that lack the modality. One the
    // threads' shares do not reach must get no gradient from them: Adam skips a parameter without
    // one (as in one thread), where a zero gradient would still move it.
    const reached = this.variables.flatMap(([, v], i) => (v === this.missing.text && !this.lacksAny('text', all)) || (v === this.missing.image && !this.lacksAny('image', all)) ? [] : [i])
    const sent = tf.customGrad(() => {
      threads.forward(theirs)
      return { value: tf.zeros([1]), gradFunc: () => threads.gradients(reached) }
    })(...reached.map((i) => this.variables[i][1]))
    const own = this.embedUnique(shares[0])
    const received = tf.customGrad((token) => ({
      value: threads.rows(),
      gradFunc: (dRows: tf.Tensor2D) => {
        threads.backward(dRows)
        return tf.zerosLike(token as tf.Tensor)
      },
    }))(sent)
    return tf.concat([own, received], 0) as tf.Tensor2D // [n, D]
  }

  private lacksAny(modality: Modality, ids: Int32Array): boolean {
    const { rowOf } = (this.source as StoredStates).states[modality]
    return ids.some((id) => (rowOf[id] ?? -1) < 0)
  }

  private stopThreads(): void {
    this.threads?.dispose()
    this.threads = null
  }

  private releaseRuntime(): void {
    this.runtime?.release()
    this.runtime = null
  }

  /** Items the source holds: a cold-start store grows past the trained N. */
  private storedItems(): number {
    return this.source instanceof StoredStates ? this.source.states.text.rowOf.length - 1 : this.config.numItems
  }

  private rowLayout(states: ModalityStates, modality: Modality): RowLayout {
    return { dtype: rowsDtype(states), rowLayers: statesPerItem(states) / states.width, positions: this.layers[modality].map((l) => layerPosition(states, l)) }
  }

  /** H_m[s_k] for k = 1..K as [n, d] tensors, the learned missing state where absent. */
  private sideStates(modality: Modality, ids: Int32Array): tf.Tensor2D[] {
    const { slices, present } = this.source.side(modality, ids, this.layers[modality])
    const n = ids.length
    const d = this.config[modality].width
    const missing = this.missing[modality] // [K, d]
    const presentCount = present.reduce((a, b) => a + b, 0)
    return slices.map((slice, k) => {
      const missingK = tf.reshape(tf.slice(missing, [k, 0], [1, d]), [1, d])
      if (presentCount === 0) return tf.tile(missingK, [n, 1]) as tf.Tensor2D
      const h = tf.tensor2d(slice, [n, d])
      if (presentCount === n) return h
      const mask = tf.tensor2d(present, [n, 1])
      return tf.add(tf.mul(h, mask), tf.mul(missingK, tf.sub(1, mask))) as tf.Tensor2D
    })
  }
}

/** ids split into `parts` contiguous shares whose sizes differ by at most one. */
function splitEvenly(ids: Int32Array, parts: number): Int32Array[] {
  return Array.from({ length: parts }, (_, p) => ids.subarray(Math.round((p * ids.length) / parts), Math.round(((p + 1) * ids.length) / parts)))
}

function concatIds(parts: Int32Array[]): Int32Array {
  const out = new Int32Array(parts.reduce((s, p) => s + p.length, 0))
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return out
}

/**
 * Runs only the SAN + fusion on items outside the training set (no backbone, no training) →
 * [n, D] rows in the order given, in chunks so memory stays flat. Replaces the encoder's state
 * store: use it on a model that is done training (serving, or after the final evaluation).
 */
export function embedItemStates(encoder: IisanItemEncoder, items: NewItemStates[]): Float32Array {
  const { text, image, embeddingDim: D } = encoder.config
  const out = new Float32Array(items.length * D)
  for (let start = 0; start < items.length; start += EMBED_CHUNK) {
    const chunk = items.slice(start, start + EMBED_CHUNK)
    encoder.setStates({
      text: appendItems(emptyModality(0, text.numLayers, text.width), chunk.map((i) => i.text)),
      image: appendItems(emptyModality(0, image.numLayers, image.width), chunk.map((i) => i.image)),
    })
    const ids = Int32Array.from(chunk, (_, i) => i + 1)
    out.set(readBack(() => encoder.embedUnique(ids)), start * D)
  }
  return out
}

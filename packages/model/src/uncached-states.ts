// Uncached IISAN's side-state source (docs/METHOD.md §2, the decoupling claim): the same SAN as
// cached IISAN, but H_m[s_k] comes from running the frozen BERT and ViT on the items' content
// inside every training step instead of from the cache. The states are rounded to float16 exactly
// as the cache stores them, so on the same data and seed both give the same losses and gradients
// and only the cost differs.
import * as tf from '@tensorflow/tfjs-core'
import { BertModel, VitModel, type Checkpoint, type BertConfig, type VitConfig } from '@iisan/backbones'
import { float16ToFloat32, float32ToFloat16 } from '@iisan/safetensors'
import type { Modality } from './cached-states.ts'
import type { SideStateSource } from './iisan.ts'
import type { ItemContent } from './item-content.ts'
import type { BackboneSources } from './methods/method.ts'

/** Items per backbone forward pass: bounds the [B, h, S, S] attention scores in memory. */
const BACKBONE_CHUNK = 64

type Rows = { slices: Float32Array[]; present: Float32Array }

export class BackboneStates implements SideStateSource {
  private readonly text: BertModel
  private readonly image: VitModel | null
  /** the last prepared step's states, by modality and item id */
  private prepared = new Map<Modality, Map<number, Float32Array[]>>()

  constructor(
    backbones: BackboneSources,
    private readonly content: ItemContent,
  ) {
    this.text = BertModel.load(backbones.text.config as BertConfig, backbones.text.checkpoint as Checkpoint)
    this.image = backbones.image ? VitModel.load(backbones.image.config as VitConfig, backbones.image.checkpoint as Checkpoint) : null
  }

  prepare(ids: Int32Array, layers: Record<Modality, number[]>): void {
    const unique = [...new Set(Array.from(ids).filter((id) => id !== 0))]
    this.prepared = new Map((['text', 'image'] as const).map((m) => [m, this.run(m, unique, layers[m])]))
  }

  side(modality: Modality, ids: Int32Array, layers: number[]): Rows {
    const ready = this.prepared.get(modality)
    const missing = Array.from(ids).filter((id) => id !== 0 && !ready?.has(id))
    const computed = missing.length ? this.run(modality, [...new Set(missing)], layers) : new Map<number, Float32Array[]>()
    const at = (id: number) => ready?.get(id) ?? computed.get(id)
    const width = modality === 'text' ? this.text.config.hiddenSize : (this.image?.config.hiddenSize ?? 0)
    const n = ids.length
    const present = new Float32Array(n)
    const slices = layers.map(() => new Float32Array(n * width))
    ids.forEach((id, i) => {
      const rows = id === 0 ? undefined : at(id)
      if (!rows) return
      present[i] = 1
      rows.forEach((row, k) => slices[k].set(row, i * width))
    })
    return { slices, present }
  }

  /** The side layers' [CLS] states of `ids`, as the cache would store them (float16); absent items are left out. */
  private run(modality: Modality, ids: number[], layers: number[]): Map<number, Float32Array[]> {
    const out = new Map<number, Float32Array[]>()
    const withContent = modality === 'text' ? ids : ids.filter((id) => this.image && this.content.image(id) !== null)
    for (let start = 0; start < withContent.length; start += BACKBONE_CHUNK) {
      const chunk = withContent.slice(start, start + BACKBONE_CHUNK)
      const perLayer = modality === 'text' ? this.textStates(chunk) : this.imageStates(chunk)
      chunk.forEach((id, i) => out.set(id, layers.map((l) => perLayer[l].subarray(i * perLayer.width, (i + 1) * perLayer.width))))
    }
    return out
  }

  private textStates(ids: number[]): Float32Array[] & { width: number } {
    const { inputIds, attentionMask, seqLen } = this.content.text
    const rows = (src: Int32Array) => {
      const out = new Int32Array(ids.length * seqLen)
      ids.forEach((id, i) => out.set(src.subarray(id * seqLen, (id + 1) * seqLen), i * seqLen))
      return out
    }
    const { hiddenStates } = this.text.forward(rows(inputIds), rows(attentionMask), ids.length, seqLen, false)
    return asCachedPrecision(hiddenStates, this.text.config.hiddenSize)
  }

  private imageStates(ids: number[]): Float32Array[] & { width: number } {
    const model = this.image!
    const pixels = ids.map((id) => this.content.image(id)!)
    const batch = new Float32Array(pixels.reduce((s, p) => s + p.length, 0))
    let offset = 0
    for (const p of pixels) {
      batch.set(p, offset)
      offset += p.length
    }
    const { hiddenStates } = model.forward(batch, ids.length, false)
    return asCachedPrecision(hiddenStates, model.config.hiddenSize)
  }

  dispose(): void {
    this.text.dispose()
    this.image?.dispose()
  }
}

/** [batch, d] per layer → float32 values rounded through float16, the cache's storage precision. */
function asCachedPrecision(hiddenStates: tf.Tensor[], width: number): Float32Array[] & { width: number } {
  const values = hiddenStates.map((h) => float16ToFloat32(float32ToFloat16(h.dataSync() as Float32Array)))
  hiddenStates.forEach((h) => h.dispose())
  return Object.assign(values, { width })
}

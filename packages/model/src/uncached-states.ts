// Uncached IISAN's side-state source (docs/METHOD.md §2, the decoupling claim): the same SAN as
// cached IISAN, but H_m[s_k] comes from running the frozen BERT and ViT on the items' content
// inside every training step instead of from the cache. The states are rounded to float16 exactly
// as the cache stores them, so on the same data and seed both give the same losses and gradients
// and only the cost differs.
import { TrainableBert, TrainableVit } from '@iisan/backbones/trainable'
import { float16ToFloat32, float32ToFloat16 } from '@iisan/safetensors'
import { frozenClsStates } from './backbone-towers.ts'
import { gatherSideLayers, type Modality, type ModalityStates } from './cached-states.ts'
import type { SideStateSource } from './iisan.ts'
import type { ItemContent } from './item-content.ts'
import type { BackboneSources } from './methods/method.ts'

const FROZEN = { kind: 'frozen' } as const

export class BackboneStates implements SideStateSource {
  private readonly backbones: Record<Modality, TrainableBert | TrainableVit | null>
  /** the last prepared step's states by modality, and the ids they were computed for */
  private prepared: { ids: Set<number>; states: Partial<Record<Modality, ModalityStates>> } = { ids: new Set(), states: {} }

  constructor(
    backbones: BackboneSources,
    private readonly content: ItemContent,
  ) {
    // frozen: no dropout, no variables, and the forward pass stays off any gradient tape
    this.backbones = {
      text: TrainableBert.load(backbones.text.config, backbones.text.checkpoint, FROZEN, 0),
      image: backbones.image ? TrainableVit.load(backbones.image.config, backbones.image.checkpoint, FROZEN, 0) : null,
    }
  }

  prepare(ids: Int32Array, layers: Record<Modality, number[]>): void {
    this.prepared = { ids: new Set(ids), states: { text: this.run('text', ids, layers.text), image: this.run('image', ids, layers.image) } }
  }

  side(modality: Modality, ids: Int32Array, layers: number[]): { slices: Float32Array[]; present: Float32Array } {
    const ready = this.prepared.states[modality]
    const covered = ready?.layers?.join() === layers.join() && ids.every((id) => id === 0 || this.prepared.ids.has(id))
    // anything else (evaluation's embedAll) runs the backbone on the ids asked for
    return gatherSideLayers(covered ? ready! : this.run(modality, ids, layers), ids, layers)
  }

  /** The side layers' [CLS] states of `ids`, as the cache would store them (float16); items without the modality have none. */
  private run(modality: Modality, ids: ArrayLike<number>, layers: number[]): ModalityStates {
    const backbone = this.backbones[modality]
    if (!backbone) return { numLayers: Math.max(0, ...layers), width: 0, rowOf: new Int32Array(this.content.numItems + 1).fill(-1), data: new Float32Array(0), layers }
    const states = frozenClsStates(backbone, this.content, ids, { layers })
    return { ...states, data: float16ToFloat32(float32ToFloat16(states.data as Float32Array)) }
  }

  dispose(): void {
    this.backbones.text?.dispose()
    this.backbones.image?.dispose()
  }
}

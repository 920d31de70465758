// The inference passes TextBackbone / ImageBackbone need, behind one interface per modality so
// the runtime (onnx/onnx-runtime.ts explains the choice) is decided once, at load. Both runtimes
// compute the same thing — each layer's hidden states, layer 0 = the embedding output — from the
// same checkpoint; the tfjs side wraps BertModel / VitModel (the trainable models share them).
import * as tf from '@tensorflow/tfjs-core'
import type { BertConfig, VitConfig } from './config.ts'
import type { Checkpoint } from './checkpoint.ts'
import { ensureBackend } from './backend.ts'
import { BertModel } from './bert.ts'
import { VitModel } from './vit.ts'
import { OnnxBertRunner, OnnxVitRunner } from './onnx/runners.ts'
import { resolveRuntime, type BackboneRuntimeName } from './onnx/onnx-runtime.ts'

export interface TextRunner {
  readonly runtime: BackboneRuntimeName
  /** inputIds, attentionMask: row-major [batch, seq] → [batch, L + 1, d], each layer's [CLS] row. */
  cls(inputIds: Int32Array, attentionMask: Int32Array, batch: number, seq: number): Promise<Float32Array>
  /** → [L + 1, batch, seq, d], every position (tests, inspection). */
  allPositions(inputIds: Int32Array, attentionMask: Int32Array, batch: number, seq: number): Promise<Float32Array>
  dispose(): void
}

export interface ImageRunner {
  readonly runtime: BackboneRuntimeName
  /** pixels [batch, C, H, W] → [batch, L + 1, d], each layer's [CLS] row. */
  cls(pixels: Float32Array, batch: number): Promise<Float32Array>
  /** → hiddenStates [L + 1, batch, seq, d] and lastHiddenState [batch, seq, d] (after the final LayerNorm). */
  allPositions(pixels: Float32Array, batch: number): Promise<{ hiddenStates: Float32Array; lastHiddenState: Float32Array }>
  dispose(): void
}

/** Reads the tensors back and frees them; `stack` lays them out. */
async function readStacked(tensors: tf.Tensor[], axis: number): Promise<Float32Array> {
  const stacked = tf.stack(tensors, axis)
  tf.dispose(tensors)
  const data = (await stacked.data<'float32'>()).slice()
  stacked.dispose()
  return data
}

class TfjsTextRunner implements TextRunner {
  readonly runtime = 'tfjs' as const
  constructor(private readonly model: BertModel) {}

  cls(inputIds: Int32Array, attentionMask: Int32Array, batch: number, seq: number): Promise<Float32Array> {
    return readStacked(this.model.forward(inputIds, attentionMask, batch, seq, false).hiddenStates, 1)
  }

  allPositions(inputIds: Int32Array, attentionMask: Int32Array, batch: number, seq: number): Promise<Float32Array> {
    return readStacked(this.model.forward(inputIds, attentionMask, batch, seq, true).hiddenStates, 0)
  }

  dispose(): void {
    this.model.dispose()
  }
}

class TfjsImageRunner implements ImageRunner {
  readonly runtime = 'tfjs' as const
  constructor(private readonly model: VitModel) {}

  cls(pixels: Float32Array, batch: number): Promise<Float32Array> {
    return readStacked(this.model.forward(pixels, batch, false).hiddenStates, 1)
  }

  async allPositions(pixels: Float32Array, batch: number): Promise<{ hiddenStates: Float32Array; lastHiddenState: Float32Array }> {
    const out = this.model.forward(pixels, batch, true)
    const hiddenStates = await readStacked(out.hiddenStates, 0)
    const lastHiddenState = (await out.lastHiddenState!.data<'float32'>()).slice()
    out.lastHiddenState!.dispose()
    return { hiddenStates, lastHiddenState }
  }

  dispose(): void {
    this.model.dispose()
  }
}

export interface RunnerOptions {
  /** Overrides BACKBONE_RUNTIME for this backbone. */
  runtime?: BackboneRuntimeName
}

/**
 * `reopen` gives the checkpoint again: the ONNX runner builds its all-positions graph on demand
 * from it rather than keeping a second copy of the weights for a test-only path.
 */
export async function textRunner(config: BertConfig, ckpt: Checkpoint, reopen: () => Checkpoint, options: RunnerOptions): Promise<TextRunner> {
  const rt = await resolveRuntime(options.runtime)
  if (rt.name === 'onnx') return OnnxBertRunner.create(rt.ort, config, ckpt, reopen)
  await ensureBackend()
  return new TfjsTextRunner(BertModel.load(config, ckpt))
}

export async function imageRunner(config: VitConfig, ckpt: Checkpoint, reopen: () => Checkpoint, options: RunnerOptions): Promise<ImageRunner> {
  const rt = await resolveRuntime(options.runtime)
  if (rt.name === 'onnx') return OnnxVitRunner.create(rt.ort, config, ckpt, reopen)
  await ensureBackend()
  return new TfjsImageRunner(VitModel.load(config, ckpt))
}

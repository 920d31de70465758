// A frozen ViT image encoder loaded from a Hugging Face folder. One unreadable or corrupt image
// must not sink a batch of thousands: preprocessing failures become per-item results and the
// remaining images are still encoded.
import { Checkpoint, type CheckpointOptions } from './checkpoint.ts'
import { BackboneConfigError, readImagePreprocessConfig, readModelConfig, type ImagePreprocessConfig, type VitConfig } from './config.ts'
import { computeFingerprint } from './fingerprint.ts'
import { prepareImage, type ImageInput, type PreparedImage } from './image.ts'
import { mapLimit } from './map-limit.ts'
import { imageRunner, type ImageRunner, type RunnerOptions } from './runner.ts'
import type { BackboneRuntimeName } from './onnx/onnx-runtime.ts'
import { vitTensorSpecs } from './vit.ts'
import type { EncodeOptions } from './text-backbone.ts'

export type ImageEncoding =
  /** cls: [L + 1, d], the [CLS] hidden state of every layer (layer 0 = embeddings). */
  | { ok: true; cls: Float32Array }
  | { ok: false; error: string }

export interface ImageHiddenStates {
  n: number
  numLayers: number
  hiddenSize: number
  /** numPatches + 1 */
  seqLen: number
  /** [L + 1, n, seqLen, d], before the final LayerNorm (HF output_hidden_states). */
  hiddenStates: Float32Array
  /** [n, seqLen, d], after the final LayerNorm. */
  lastHiddenState: Float32Array
}

export interface ImageEncodeOptions extends EncodeOptions {
  /** Images decoded at once (sharp decodes on libuv's thread pool). */
  concurrency?: number
}

export interface ImageBackboneOptions extends CheckpointOptions, RunnerOptions {}

export class ImageBackbone {
  readonly kind = 'image' as const

  private constructor(
    readonly dir: string,
    readonly config: VitConfig,
    readonly preprocessing: ImagePreprocessConfig,
    readonly fingerprint: string,
    private readonly runner: ImageRunner,
  ) {}

  static async load(dir: string, options: ImageBackboneOptions = {}): Promise<ImageBackbone> {
    const config = readModelConfig(dir)
    if (config.modelType !== 'vit') throw new BackboneConfigError(`${dir} holds a ${config.modelType} checkpoint, expected a ViT image encoder`)
    const preprocessing = readImagePreprocessConfig(dir, config)
    const specs = vitTensorSpecs(config)
    const ckpt = Checkpoint.open(dir, 'vit', options)
    ckpt.validate(specs)
    const fingerprint = computeFingerprint(config, preprocessing, ckpt, specs)
    const runner = await imageRunner(config, ckpt, () => Checkpoint.open(dir, 'vit', options), options)
    return new ImageBackbone(dir, config, preprocessing, fingerprint, runner)
  }

  /** Which runtime runs the forward passes (BACKBONE_RUNTIME, onnx/onnx-runtime.ts). */
  get runtime(): BackboneRuntimeName {
    return this.runner.runtime
  }

  get numLayers(): number {
    return this.config.numLayers
  }

  get hiddenSize(): number {
    return this.config.hiddenSize
  }

  /** Decode + PIL-exact resize + normalise one image. Throws ImageInputError. */
  preprocess(input: ImageInput): Promise<PreparedImage> {
    return prepareImage(input, this.preprocessing)
  }

  async encodeImages(inputs: ImageInput[], options: ImageEncodeOptions = {}): Promise<ImageEncoding[]> {
    const batchSize = options.batchSize ?? 32
    const concurrency = Math.max(1, options.concurrency ?? 4)
    const L1 = this.numLayers + 1
    const d = this.hiddenSize
    const plane = 3 * this.preprocessing.width * this.preprocessing.height
    const results: ImageEncoding[] = new Array(inputs.length)
    for (let start = 0; start < inputs.length; start += batchSize) {
      const chunk = inputs.slice(start, start + batchSize)
      const prepared = await mapLimit(chunk, concurrency, async (input) => {
        try {
          return (await this.preprocess(input)).pixelValues
        } catch (err) {
          return err instanceof Error ? err : new Error(String(err))
        }
      })
      const good: number[] = []
      prepared.forEach((p, i) => {
        if (p instanceof Error) results[start + i] = { ok: false, error: p.message }
        else good.push(i)
      })
      if (good.length) {
        const pixels = new Float32Array(good.length * plane)
        good.forEach((i, j) => pixels.set(prepared[i] as Float32Array, j * plane))
        const data = await this.runner.cls(pixels, good.length) // [good, L + 1, d]
        good.forEach((i, j) => {
          results[start + i] = { ok: true, cls: data.slice(j * L1 * d, (j + 1) * L1 * d) }
        })
      }
      options.onProgress?.(start + chunk.length, inputs.length)
    }
    return results
  }

  /** pixelValues: [n, 3, H, W] normalised; every position of every layer, for tests. */
  async hiddenStates(pixelValues: Float32Array, n: number): Promise<ImageHiddenStates> {
    const { hiddenStates, lastHiddenState } = await this.runner.allPositions(pixelValues, n)
    return { n, numLayers: this.numLayers, hiddenSize: this.hiddenSize, seqLen: this.config.numPatches + 1, hiddenStates, lastHiddenState }
  }

  dispose(): void {
    this.runner.dispose()
  }
}

export function loadImageBackbone(dir: string, options?: ImageBackboneOptions): Promise<ImageBackbone> {
  return ImageBackbone.load(dir, options)
}

// The backbones' inference passes on ONNX Runtime: one session per backbone for the [CLS] rows
// the caches want; the every-position graph (tests, inspection) is built from the checkpoint
// folder, read again, when asked for and released after the call, so a loaded backbone holds one
// copy of its weights (a folder rewritten since the load would give its new weights there).
import type { Checkpoint } from '../checkpoint.ts'
import type { BertConfig, VitConfig } from '../config.ts'
import { checkBertInput } from '../bert.ts'
import { checkPixels } from '../vit.ts'
import type { ImageRunner, TextRunner } from '../runner.ts'
import { buildBertGraph } from './bert-graph.ts'
import { buildVitGraph } from './vit-graph.ts'
import { int64, OrtGraph, type OrtModule } from './onnx-runtime.ts'
import type { WeightReader } from './graph.ts'

type Feeds = Record<string, [BigInt64Array | Float32Array, number[]]>
type BuildGraph<C> = (config: C, src: WeightReader, allPositions: boolean) => Uint8Array

/** What both modalities share: the [CLS] session, and the all-positions graph on demand. */
class OnnxRunner<C> {
  readonly runtime = 'onnx' as const

  protected constructor(
    private readonly ort: OrtModule,
    protected readonly config: C,
    private readonly build: BuildGraph<C>,
    private readonly graph: OrtGraph,
    private readonly reopen: () => Checkpoint,
  ) {}

  protected static async session<C>(ort: OrtModule, config: C, build: BuildGraph<C>, ckpt: Checkpoint): Promise<OrtGraph> {
    return OrtGraph.create(ort, build(config, ckpt, false))
  }

  protected async clsRows(feeds: Feeds): Promise<Float32Array> {
    const [cls] = await this.graph.run(feeds, ['cls'])
    return cls
  }

  protected async everyPosition(feeds: Feeds, outputs: string[]): Promise<Float32Array[]> {
    const g = await OrtGraph.create(this.ort, this.build(this.config, this.reopen(), true))
    try {
      return await g.run(feeds, outputs)
    } finally {
      await g.release()
    }
  }

  dispose(): void {
    void this.graph.release()
  }
}

export class OnnxBertRunner extends OnnxRunner<BertConfig> implements TextRunner {
  static async create(ort: OrtModule, config: BertConfig, ckpt: Checkpoint, reopen: () => Checkpoint): Promise<OnnxBertRunner> {
    return new OnnxBertRunner(ort, config, buildBertGraph, await OnnxRunner.session(ort, config, buildBertGraph, ckpt), reopen)
  }

  private feeds(inputIds: Int32Array, attentionMask: Int32Array, batch: number, seq: number): Feeds {
    checkBertInput(this.config, inputIds, seq)
    return { input_ids: [int64(inputIds), [batch, seq]], attention_mask: [int64(attentionMask), [batch, seq]] }
  }

  cls(inputIds: Int32Array, attentionMask: Int32Array, batch: number, seq: number): Promise<Float32Array> {
    return this.clsRows(this.feeds(inputIds, attentionMask, batch, seq))
  }

  async allPositions(inputIds: Int32Array, attentionMask: Int32Array, batch: number, seq: number): Promise<Float32Array> {
    const [states] = await this.everyPosition(this.feeds(inputIds, attentionMask, batch, seq), ['hidden_states'])
    return states
  }
}

export class OnnxVitRunner extends OnnxRunner<VitConfig> implements ImageRunner {
  static async create(ort: OrtModule, config: VitConfig, ckpt: Checkpoint, reopen: () => Checkpoint): Promise<OnnxVitRunner> {
    return new OnnxVitRunner(ort, config, buildVitGraph, await OnnxRunner.session(ort, config, buildVitGraph, ckpt), reopen)
  }

  private feeds(pixels: Float32Array, batch: number): Feeds {
    checkPixels(this.config, pixels, batch)
    const c = this.config
    return { pixel_values: [pixels, [batch, c.numChannels, c.imageSize, c.imageSize]] }
  }

  cls(pixels: Float32Array, batch: number): Promise<Float32Array> {
    return this.clsRows(this.feeds(pixels, batch))
  }

  async allPositions(pixels: Float32Array, batch: number): Promise<{ hiddenStates: Float32Array; lastHiddenState: Float32Array }> {
    const [hiddenStates, lastHiddenState] = await this.everyPosition(this.feeds(pixels, batch), ['hidden_states', 'last_hidden_state'])
    return { hiddenStates, lastHiddenState }
  }
}

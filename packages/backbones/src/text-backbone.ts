// A frozen BERT text encoder loaded from a Hugging Face folder, batched for caching thousands of
// titles: tokenise → forward in batches → keep only each layer's [CLS] row.
import { Checkpoint, type CheckpointOptions } from './checkpoint.ts'
import { BackboneConfigError, readModelConfig, type BertConfig } from './config.ts'
import { computeFingerprint } from './fingerprint.ts'
import { bertTensorSpecs } from './bert.ts'
import { textRunner, type RunnerOptions, type TextRunner } from './runner.ts'
import type { BackboneRuntimeName } from './onnx/onnx-runtime.ts'
import { BertTokenizer, DEFAULT_MAX_LENGTH, lengthOrder, rowLengths, selectRows, type TextBatch } from './tokenizer.ts'

export interface TextBackboneOptions extends CheckpointOptions, RunnerOptions {
  /** Tokens per title including [CLS]/[SEP]; IISAN uses 30. */
  maxLength?: number
}

export interface EncodeOptions {
  batchSize?: number
  /**
   * 'longest' (default): each forward batch is padded to its longest title, not to maxLength;
   * 'max_length': every batch is maxLength wide. The states are the same either way (padded keys
   * get zero attention weight); only the work differs.
   */
  padding?: 'longest' | 'max_length'
  /**
   * Batch titles of similar token length together (longest first), so 'longest' padding adds
   * little; outputs are in input order regardless. Default true.
   */
  sortByLength?: boolean
  /** Called after every batch with the number of items done so far. */
  onProgress?: (done: number, total: number) => void
}

export interface TextEncoding {
  n: number
  /** L: hidden states per item are L + 1 (layer 0 = embedding output). */
  numLayers: number
  hiddenSize: number
  seqLen: number
  /** [n, L + 1, d]: the [CLS] (position 0) hidden state of every layer — what IISAN caches. */
  clsPerLayer: Float32Array
  /** [n, seqLen] (seqLen = maxLength, whatever the padding of the forward batches) */
  inputIds: Int32Array
  /** [n, seqLen], 1 = real token, 0 = padding */
  attentionMask: Int32Array
}

export interface TextHiddenStates extends Omit<TextEncoding, 'clsPerLayer'> {
  /** [L + 1, n, seqLen, d], HF output_hidden_states layout. */
  hiddenStates: Float32Array
}

export class TextBackbone {
  readonly kind = 'text' as const

  private constructor(
    readonly dir: string,
    readonly config: BertConfig,
    readonly tokenizer: BertTokenizer,
    readonly fingerprint: string,
    private readonly runner: TextRunner,
  ) {}

  static async load(dir: string, options: TextBackboneOptions = {}): Promise<TextBackbone> {
    const config = readModelConfig(dir)
    if (config.modelType !== 'bert') throw new BackboneConfigError(`${dir} holds a ${config.modelType} checkpoint, expected a BERT text encoder`)
    const tokenizer = BertTokenizer.fromDir(dir, options.maxLength ?? DEFAULT_MAX_LENGTH)
    if (tokenizer.vocabSize > config.vocabSize) {
      throw new BackboneConfigError(`${dir}: the tokenizer has ${tokenizer.vocabSize} ids but config.json vocab_size is ${config.vocabSize}`)
    }
    if (tokenizer.maxLength > config.maxPositions) {
      throw new BackboneConfigError(`${dir}: max length ${tokenizer.maxLength} exceeds max_position_embeddings ${config.maxPositions}`)
    }
    const specs = bertTensorSpecs(config)
    const ckpt = Checkpoint.open(dir, 'bert', options)
    ckpt.validate(specs)
    const fingerprint = computeFingerprint(config, tokenizer.descriptor, ckpt, specs)
    const runner = await textRunner(config, ckpt, () => Checkpoint.open(dir, 'bert', options), options)
    return new TextBackbone(dir, config, tokenizer, fingerprint, runner)
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

  tokenize(titles: string[]): TextBatch {
    return this.tokenizer.encodeBatch(titles)
  }

  async encodeTexts(titles: string[], options: EncodeOptions = {}): Promise<TextEncoding> {
    const batchSize = Math.max(1, options.batchSize ?? 64)
    const tokens = this.tokenize(titles)
    const { n, seqLen, inputIds, attentionMask } = tokens
    const L1 = this.numLayers + 1
    const d = this.hiddenSize
    const perItem = L1 * d
    const order = options.sortByLength === false ? Int32Array.from({ length: n }, (_, i) => i) : lengthOrder(rowLengths(tokens))
    const width = options.padding === 'max_length' ? seqLen : undefined
    const clsPerLayer = new Float32Array(n * perItem)
    for (let start = 0; start < n; start += batchSize) {
      const rows = order.subarray(start, Math.min(start + batchSize, n))
      const part = selectRows(tokens, rows, width)
      const data = await this.runner.cls(part.inputIds, part.attentionMask, part.n, part.seqLen) // [b, L + 1, d]
      rows.forEach((item, j) => clsPerLayer.set(data.subarray(j * perItem, (j + 1) * perItem), item * perItem))
      options.onProgress?.(start + rows.length, n)
    }
    return { n, numLayers: this.numLayers, hiddenSize: d, seqLen, clsPerLayer, inputIds, attentionMask }
  }

  /** Every position of every layer; for tests and inspection (memory grows with n·seq·L·d). */
  async hiddenStates(input: string[] | TextBatch): Promise<TextHiddenStates> {
    const batch = Array.isArray(input) ? this.tokenize(input) : input
    const { n, seqLen, inputIds, attentionMask } = batch
    const data = await this.runner.allPositions(inputIds, attentionMask, n, seqLen)
    return { n, numLayers: this.numLayers, hiddenSize: this.hiddenSize, seqLen, hiddenStates: data, inputIds, attentionMask }
  }

  dispose(): void {
    this.runner.dispose()
  }
}

export function loadTextBackbone(dir: string, options?: TextBackboneOptions): Promise<TextBackbone> {
  return TextBackbone.load(dir, options)
}

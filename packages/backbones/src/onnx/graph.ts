// A small builder for the ONNX graphs of our backbones: weights become initializers (raw float32
// bytes, no copies through protobuf's repeated fields), ops are plain opset-17 nodes, and the
// encoder blocks shared by BERT (post-LN) and ViT (pre-LN) are written once here, as the plain
// transcription of layers.ts. ORT's graph optimiser (level 'all') fuses what it recognises (the
// bias Add + Erf-GELU into BiasGelu, the attention scale into FusedMatMul); the rest is MatMul,
// over 90% of the time in ORT's profile of BERT-base, so hand-fused contrib ops would buy little.
//
// Activations are [batch, seq, d] throughout: MatMul broadcasts a [d, d'] weight over the leading
// axes, and Reshape's 0 ("copy this dim") keeps batch and seq dynamic.
import onnxProto from 'onnx-proto'
import type { TensorSpec } from '../checkpoint.ts'
import { transposeMatrix, type AttentionNames } from '../layers.ts'

const { onnx } = onnxProto
const FLOAT = onnx.TensorProto.DataType.FLOAT
const INT64 = onnx.TensorProto.DataType.INT64
const FLOAT16 = onnx.TensorProto.DataType.FLOAT16
const INT32 = onnx.TensorProto.DataType.INT32
export const ELEMENT_TYPES = { float: FLOAT, float16: FLOAT16, int64: INT64, int32: INT32 } as const
export type ElementType = keyof typeof ELEMENT_TYPES

export const OPSET = 17

/** Where the graph builders read checkpoint weights: the same contract as a Checkpoint. */
export interface WeightReader {
  read(spec: TensorSpec): Float32Array
}

/** INT, INTS, or FLOAT (an ONNX attribute's type is fixed per op, so floats are marked). */
type Attr = number | number[] | { float: number }

/** One graph under construction. Names are made unique by a counter per builder. */
export class GraphBuilder {
  private readonly nodes: InstanceType<typeof onnx.NodeProto>[] = []
  private readonly initializers: InstanceType<typeof onnx.TensorProto>[] = []
  private readonly inputs: InstanceType<typeof onnx.ValueInfoProto>[] = []
  private readonly outputs: InstanceType<typeof onnx.ValueInfoProto>[] = []
  private counter = 0

  constructor(readonly src: WeightReader) {}

  private fresh(hint: string): string {
    return `${hint}_${this.counter++}`
  }

  /** Graph input; dims are numbers or symbolic names ('batch', 'seq'). */
  input(name: string, type: ElementType, dims: (number | string)[]): string {
    this.inputs.push(valueInfo(name, ELEMENT_TYPES[type], dims))
    return name
  }

  /** float16 → float32 (ONNX Cast). */
  toFloat(x: string): string {
    return this.op('Cast', [x], { to: FLOAT })
  }

  /** Marks `value` as the graph output `name` (through an Identity so any value can be one). */
  output(value: string, name: string, dims: (number | string)[], type: ElementType = 'float'): void {
    this.op('Identity', [value], {}, name)
    this.outputs.push(valueInfo(name, ELEMENT_TYPES[type], dims))
  }

  floatConst(values: Float32Array, dims: number[], hint = 'w'): string {
    const name = this.fresh(hint)
    this.initializers.push(
      onnx.TensorProto.create({ name, dataType: FLOAT, dims, rawData: new Uint8Array(values.buffer, values.byteOffset, values.byteLength) }),
    )
    return name
  }

  intConst(values: number[], hint = 'shape'): string {
    const name = this.fresh(hint)
    const bytes = new BigInt64Array(values.map(BigInt))
    this.initializers.push(onnx.TensorProto.create({ name, dataType: INT64, dims: [values.length], rawData: new Uint8Array(bytes.buffer) }))
    return name
  }

  /** An int32 constant of the given dims (a scalar for []). */
  int32Const(values: number[], dims: number[] = [values.length], hint = 'i'): string {
    const name = this.fresh(hint)
    const bytes = Int32Array.from(values)
    this.initializers.push(onnx.TensorProto.create({ name, dataType: INT32, dims, rawData: new Uint8Array(bytes.buffer) }))
    return name
  }

  /** A checkpoint weight as an initializer of the shape it is stored in. */
  weight(name: string, shape: number[]): string {
    return this.floatConst(this.src.read({ name, shape }), shape, name)
  }

  op(type: string, inputs: string[], attrs: Record<string, Attr> = {}, outName?: string): string {
    return this.node(type, inputs, attrs, [outName ?? this.fresh(type)])[0]
  }

  /** An op with several outputs (TopK: values, indices). */
  ops(type: string, inputs: string[], attrs: Record<string, Attr>, outputs: number): string[] {
    return this.node(type, inputs, attrs, Array.from({ length: outputs }, () => this.fresh(type)))
  }

  private node(type: string, inputs: string[], attrs: Record<string, Attr>, output: string[]): string[] {
    const attribute = Object.entries(attrs).map(([name, v]) => attribute_(name, v))
    this.nodes.push(onnx.NodeProto.create({ opType: type, input: inputs, output, name: this.fresh(`n_${type}`), attribute }))
    return output
  }

  /** HF nn.Linear `<prefix>.weight` [out, in] (+ bias [out]): x [..., in] → [..., out]. */
  linear(x: string, prefix: string, inDim: number, outDim: number, bias = true): string {
    const w = this.src.read({ name: `${prefix}.weight`, shape: [outDim, inDim] })
    // stored [in, out] so the MatMul needs no Transpose node
    const y = this.op('MatMul', [x, this.floatConst(transposeMatrix(w, outDim, inDim), [inDim, outDim], `${prefix}.weight`)])
    return bias ? this.op('Add', [y, this.weight(`${prefix}.bias`, [outDim])]) : y
  }

  layerNorm(x: string, prefix: string, d: number, eps: number): string {
    return this.op('LayerNormalization', [x, this.weight(`${prefix}.weight`, [d]), this.weight(`${prefix}.bias`, [d])], { axis: -1, epsilon: { float: eps } })
  }

  /**
   * Exact (erf) GELU, as transformers' "gelu": 0.5·x·(1 + erf(x / √2)), written in the order
   * torch.onnx exports it because that is the pattern ORT's GeluFusion turns into one Gelu kernel.
   */
  gelu(x: string): string {
    const erf = this.op('Erf', [this.op('Div', [x, this.floatConst(Float32Array.of(Math.SQRT2), [], 'c')])])
    const inner = this.op('Mul', [x, this.op('Add', [erf, this.floatConst(Float32Array.of(1), [], 'c')])])
    return this.op('Mul', [inner, this.floatConst(Float32Array.of(0.5), [], 'c')])
  }

  /**
   * Multi-head self-attention with its output projection: x [B, S, d] → [B, S, d]. Heads are the
   * contiguous d/h slices (transformers' transpose_for_scores). mask: additive [B, 1, 1, S] or null.
   */
  selfAttention(x: string, names: AttentionNames, d: number, heads: number, mask: string | null, qkvBias = true): string {
    const dh = d / heads
    const split = this.intConst([0, 0, heads, dh])
    const q = this.op('Transpose', [this.op('Reshape', [this.linear(x, names.query, d, d, qkvBias), split])], { perm: [0, 2, 1, 3] })
    const kT = this.op('Transpose', [this.op('Reshape', [this.linear(x, names.key, d, d, qkvBias), split])], { perm: [0, 2, 3, 1] })
    const v = this.op('Transpose', [this.op('Reshape', [this.linear(x, names.value, d, d, qkvBias), split])], { perm: [0, 2, 1, 3] })
    let scores = this.op('Mul', [this.op('MatMul', [q, kT]), this.floatConst(Float32Array.of(1 / Math.sqrt(dh)), [], 'c')])
    if (mask) scores = this.op('Add', [scores, mask])
    const probs = this.op('Softmax', [scores], { axis: -1 })
    const context = this.op('Transpose', [this.op('MatMul', [probs, v])], { perm: [0, 2, 1, 3] })
    return this.linear(this.op('Reshape', [context, this.intConst([0, 0, d])]), names.output, d, d)
  }

  feedForward(x: string, prefix: string, d: number, ff: number, act: 'gelu' | 'relu'): string {
    const hidden = this.linear(x, `${prefix}.intermediate.dense`, d, ff)
    return this.linear(act === 'gelu' ? this.gelu(hidden) : this.op('Relu', [hidden]), `${prefix}.output.dense`, ff, d)
  }

  /** Row 0 of every sequence: [B, S, d] → [B, 1, d]. */
  firstToken(x: string): string {
    return this.op('Slice', [x, this.intConst([0]), this.intConst([1]), this.intConst([1])])
  }

  /** Same-shape values stacked on a new leading axis: n × [...] → [n, ...]. */
  stack(values: string[]): string {
    const axis0 = this.intConst([0])
    return this.op('Concat', values.map((v) => this.op('Unsqueeze', [v, axis0])), { axis: 0 })
  }

  /** The serialized ModelProto, ready for InferenceSession.create. */
  encode(graphName: string): Uint8Array {
    const graph = onnx.GraphProto.create({ name: graphName, node: this.nodes, initializer: this.initializers, input: this.inputs, output: this.outputs })
    const model = onnx.ModelProto.create({
      irVersion: 8,
      producerName: '@iisan/backbones',
      opsetImport: [onnx.OperatorSetIdProto.create({ domain: '', version: OPSET })],
      graph,
    })
    return onnx.ModelProto.encode(model).finish()
  }
}

function valueInfo(name: string, elemType: number, dims: (number | string)[]): InstanceType<typeof onnx.ValueInfoProto> {
  const dim = dims.map((v) => (typeof v === 'number' ? { dimValue: v } : { dimParam: v }))
  return onnx.ValueInfoProto.create({ name, type: { tensorType: { elemType, shape: { dim } } } })
}

function attribute_(name: string, v: Attr): InstanceType<typeof onnx.AttributeProto> {
  const T = onnx.AttributeProto.AttributeType
  if (Array.isArray(v)) return onnx.AttributeProto.create({ name, type: T.INTS, ints: v })
  if (typeof v === 'number') return onnx.AttributeProto.create({ name, type: T.INT, i: v })
  return onnx.AttributeProto.create({ name, type: T.FLOAT, f: v.float })
}

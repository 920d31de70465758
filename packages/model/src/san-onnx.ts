// The SAN's forward pass (san.ts, docs/METHOD.md §3) as an ONNX graph, for ONNX Runtime, written
// once for two uses (issue 12):
// - the catalogue pass of an evaluation embeds every item (20k for Scientific) with the current
//   parameters as constants (`sanGraph`);
// - a training step's item side takes the parameters as inputs, and its backward pass
//   (san-onnx-backward.ts) reads the intermediates this forward records (`SanTape`).
// On tfjs-wasm the SAN runs on one core at ≈ 20–30 GFLOP/s; ORT runs the same MatMuls with MLAS
// at ≈ 140 GFLOP/s on one core of this EPYC and on every core.
//
// Inputs: `<modality>` [n, R_m, d_m], the items' stored rows as the store holds them (float16 as
// cached, or float32; R_m layers, of which the graph picks the side layers), and
// `<modality>_present` [n, 1] (1 where the item has the modality). Output `e` [n, D]. So the host
// only copies rows: decoding float16 and picking layers happen in the graph, on every core (the
// host-side decode took as long as the SAN itself). The same formulas as san.ts and
// IisanItemEncoder.embedUnique: the gates g = sigmoid(θ / 0.1), and P(F(x)) associated as
// x·(W_F·W_P) + (b_F·W_P + b_P) (linearPair's association).
import { GraphBuilder } from '@iisan/backbones/onnx/graph'
import type { Modality } from './cached-states.ts'
import { GATE_TEMPERATURE, type SanActivation } from './san.ts'

/** One parameter: its (variable) name and shape. */
export interface ParamRef {
  name: string
  shape: number[]
}

/** A dense layer's W [in, out] and b [out]. */
export interface DenseRefs {
  w: ParamRef
  b: ParamRef
}

export interface SanbRefs {
  down: DenseRefs
  up: DenseRefs
}

export interface TowerRefs {
  modality: Modality | 'inter'
  /** θ [K] */
  theta: ParamRef
  sanbs: SanbRefs[]
  F: DenseRefs
  P: DenseRefs
}

/** How a modality's stored rows are laid out: R layers of d values; the side layers at `positions`. */
export interface RowLayout {
  dtype: 'float32' | 'float16'
  rowLayers: number
  positions: number[]
}

/** The SAN + fusion of one item encoder: its shapes and where each parameter is. */
export interface SanStructure {
  activation: SanActivation
  /** d_m per modality */
  widths: Record<Modality, number>
  rows: Record<Modality, RowLayout>
  /** the learned stand-ins for absent modalities: [K, d_m] */
  missing: Record<Modality, ParamRef>
  /** IISAN-Versa's [d_image, d_text] map, or null */
  alignImage: ParamRef | null
  /** in fusion order */
  towers: TowerRefs[]
  fusion: DenseRefs
  embeddingDim: number
}

/** Where the graph reads a parameter: a constant holding its value, or a graph input. */
export type ParamSource = (ref: ParamRef) => string

export const rowsInput = (modality: Modality) => modality
export const presentInput = (modality: Modality) => `${modality}_present`
export const SAN_OUTPUT = 'e'

/** One SANB's intermediates: x its input, h = act(x·W_down + b_down) [n, r], y its output. */
export interface SanbTape {
  refs: SanbRefs
  x: string
  h: string
  y: string
}

/** One tower's intermediates, for the backward pass. */
export interface TowerTape {
  refs: TowerRefs
  /** g [K] and g_k ([1] each) */
  g: string
  gates: string[]
  blocks: SanbTape[]
  /**
   * what g_k multiplies: intra H_k − prev_{k−1} (H_1 for k = 1); inter H_image,k − H_text,k
   */
  mixed: string[]
  /** W_F·W_P [d, D] */
  M: string
  /** e_tower [n, D] */
  out: string
}

export interface SanTape {
  /** H_m[s_k] [n, d_m] with the stand-in where absent */
  states: Record<Modality, string[]>
  /** 1 − present [n, 1] */
  absent: Record<Modality, string>
  /** the image states the inter tower reads (mapped to the text width by IISAN-Versa's map) */
  interImage: string[] | null
  towers: TowerTape[]
  /** [n, towers·D], the fusion's input */
  concatenated: string
  e: string
}

/** A graph builder for the SAN's graphs: their parameters are never checkpoint weights. */
export function sanGraphBuilder(): GraphBuilder {
  return new GraphBuilder({
    read: () => {
      throw new Error('the SAN graph reads its parameters from its ParamSource')
    },
  })
}

/** The SAN + fusion forward pass, recording what the backward pass reads. */
export function sanForward(g: GraphBuilder, s: SanStructure, param: ParamSource): SanTape {
  const one = g.floatConst(Float32Array.of(1), [], 'c')
  const dense = (x: string, { w, b }: DenseRefs) => g.op('Add', [g.op('MatMul', [x, param(w)]), param(b)])
  const activate = (x: string) => (s.activation === 'relu' ? g.op('Relu', [x]) : g.gelu(x))
  // SANB(x) = x + W_up · act(W_down · x + b_down) + b_up
  const sanb = (x: string, refs: SanbRefs): SanbTape => {
    const h = activate(dense(x, refs.down))
    return { refs, x, h, y: g.op('Add', [x, dense(h, refs.up)]) }
  }

  // H_m[s_k] with the learned stand-in where the item lacks the modality: h·p + missing_k·(1 − p)
  const absent = {} as Record<Modality, string>
  const statesOf = (modality: Modality): string[] => {
    const d = s.widths[modality]
    const layout = s.rows[modality]
    const stored = g.input(rowsInput(modality), layout.dtype === 'float16' ? 'float16' : 'float', ['n', layout.rowLayers, d])
    const rows = layout.dtype === 'float16' ? g.toFloat(stored) : stored
    const present = g.input(presentInput(modality), 'float', ['n', 1])
    absent[modality] = g.op('Sub', [one, present])
    const missing = param(s.missing[modality])
    return layout.positions.map((position, k) => {
      const h = g.op('Reshape', [g.op('Gather', [rows, g.intConst([position])], { axis: 1 }), g.intConst([0, d])]) // [n, d]
      const missingK = g.op('Gather', [missing, g.intConst([k])], { axis: 0 }) // [1, d]
      return g.op('Add', [g.op('Mul', [h, present]), g.op('Mul', [missingK, absent[modality]])])
    })
  }
  const states = { text: statesOf('text'), image: statesOf('image') }
  let interImage: string[] | null = null

  const towers = s.towers.map((refs): TowerTape => {
    const gVec = g.op('Sigmoid', [g.op('Div', [param(refs.theta), g.floatConst(Float32Array.of(GATE_TEMPERATURE), [], 'c')])])
    const gates = states.text.map((_, k) => g.op('Gather', [gVec, g.intConst([k])], { axis: 0 }))
    const blocks: SanbTape[] = []
    const mixed: string[] = []
    const prev = () => blocks[blocks.length - 1]?.y
    if (refs.modality === 'inter') {
      interImage ??= s.alignImage ? states.image.map((h) => g.op('MatMul', [h, param(s.alignImage!)])) : states.image
      states.text.forEach((ht, k) => {
        // H_text + g·(H_image − H_text)
        mixed.push(g.op('Sub', [interImage![k], ht]))
        const input = g.op('Add', [ht, g.op('Mul', [gates[k], mixed[k]])])
        blocks.push(sanb(k > 0 ? g.op('Add', [prev()!, input]) : input, refs.sanbs[k]))
      })
    } else {
      states[refs.modality].forEach((h, k) => {
        // prev + g·(H − prev)
        if (k === 0) {
          mixed.push(h)
          blocks.push(sanb(g.op('Mul', [gates[k], h]), refs.sanbs[k]))
          return
        }
        const before = prev()!
        mixed.push(g.op('Sub', [h, before]))
        blocks.push(sanb(g.op('Add', [before, g.op('Mul', [gates[k], mixed[k]])]), refs.sanbs[k]))
      })
    }
    const M = g.op('MatMul', [param(refs.F.w), param(refs.P.w)]) // [d, D]
    const c = g.op('Add', [g.op('MatMul', [g.op('Unsqueeze', [param(refs.F.b), g.intConst([0])]), param(refs.P.w)]), param(refs.P.b)]) // [1, D]
    return { refs, g: gVec, gates, blocks, mixed, M, out: g.op('Add', [g.op('MatMul', [prev()!, M]), c]) }
  })
  const concatenated = towers.length === 1 ? towers[0].out : g.op('Concat', towers.map((t) => t.out), { axis: 1 })
  return { states, absent, interImage, towers, concatenated, e: dense(concatenated, s.fusion) }
}

/** The serialized inference graph of the SAN + fusion, with `values` as constants. */
export function sanGraph(s: SanStructure, values: (ref: ParamRef) => Float32Array): Uint8Array {
  const g = sanGraphBuilder()
  const constants = new Map<string, string>()
  const param: ParamSource = (ref) => {
    let name = constants.get(ref.name)
    if (!name) constants.set(ref.name, (name = g.floatConst(values(ref), ref.shape, 'p')))
    return name
  }
  g.output(sanForward(g, s, param).e, SAN_OUTPUT, ['n', s.embeddingDim])
  return g.encode('iisan-san')
}

/** Every parameter of the structure, once each, in a fixed order. */
export function sanParams(s: SanStructure): ParamRef[] {
  const dense = ({ w, b }: DenseRefs) => [w, b]
  return [
    s.missing.text,
    s.missing.image,
    ...(s.alignImage ? [s.alignImage] : []),
    ...s.towers.flatMap((t) => [t.theta, ...t.sanbs.flatMap((b) => [...dense(b.down), ...dense(b.up)]), ...dense(t.F), ...dense(t.P)]),
    ...dense(s.fusion),
  ]
}

// The SAN's inference pass (san.ts, docs/METHOD.md §3) as an ONNX graph, for ONNX Runtime: the
// catalogue pass of an evaluation embeds every item (20k for Scientific) with the current
// parameters. On tfjs-wasm that pass runs on one core at ≈ 7 GFLOP/s and was half of IISAN's
// evaluation; ORT runs the same MatMuls with MLAS on every core (issue 12). Training keeps tfjs,
// which has the gradients; this graph is rebuilt from the parameters each time it is used.
//
// Inputs: `<modality>` [n, R_m, d_m], the items' stored rows as the store holds them (float16 as
// cached, or float32; R_m layers, of which the graph picks the side layers), and
// `<modality>_present` [n, 1] (1 where the item has the modality). Output `e` [n, D]. So the host
// only copies rows: decoding float16 and picking layers happen in the graph, on every core (the
// host-side decode took as long as the SAN itself). The same formulas as san.ts and
// IisanItemEncoder.embedUnique, with two things folded on the host first: the gates
// g = sigmoid(θ / 0.1) and P(F(x)) = x·(W_F·W_P) + (b_F·W_P + b_P) (linearPair's association).
import { GraphBuilder } from '@iisan/backbones/onnx/graph'
import type { Modality } from './cached-states.ts'
import { GATE_TEMPERATURE, type SanActivation } from './san.ts'

/** A dense layer's W [in, out] and b [out], read off the variables. */
export interface DenseValues {
  w: Float32Array
  b: Float32Array
  inDim: number
  outDim: number
}

export interface SanbValues {
  down: DenseValues
  up: DenseValues
}

export interface TowerValues {
  modality: Modality | 'inter'
  /** θ [K] */
  theta: Float32Array
  sanbs: SanbValues[]
  F: DenseValues
  P: DenseValues
}

/** How a modality's stored rows are laid out: R layers of d values; the side layers at `positions`. */
export interface RowLayout {
  dtype: 'float32' | 'float16'
  rowLayers: number
  positions: number[]
}

export interface SanGraphValues {
  activation: SanActivation
  /** d_m per modality */
  widths: Record<Modality, number>
  rows: Record<Modality, RowLayout>
  /** the learned stand-ins for absent modalities: [K, d_m] */
  missing: Record<Modality, Float32Array>
  /** IISAN-Versa's [d_image, d_text] map, or null */
  alignImage: Float32Array | null
  /** in fusion order */
  towers: TowerValues[]
  fusion: DenseValues
  embeddingDim: number
}

export const rowsInput = (modality: Modality) => modality
export const presentInput = (modality: Modality) => `${modality}_present`
export const SAN_OUTPUT = 'e'

/** The serialized graph of the SAN + fusion for these parameter values. */
export function sanGraph(v: SanGraphValues): Uint8Array {
  const g = new GraphBuilder({
    read: () => {
      throw new Error('the SAN graph takes its weights as values')
    },
  })
  const c = (x: number) => g.floatConst(Float32Array.of(x), [], 'c')
  const dense = (x: string, { w, b, inDim, outDim }: DenseValues) => g.op('Add', [g.op('MatMul', [x, g.floatConst(w, [inDim, outDim])]), g.floatConst(b, [outDim])])
  const activate = (x: string) => (v.activation === 'relu' ? g.op('Relu', [x]) : g.gelu(x))
  // SANB(x) = x + W_up · act(W_down · x + b_down) + b_up
  const sanb = (x: string, s: SanbValues) => g.op('Add', [x, dense(activate(dense(x, s.down)), s.up)])

  // H_m[s_k] with the learned stand-in where the item lacks the modality: h·p + missing_k·(1 − p)
  const states = (modality: Modality): string[] => {
    const d = v.widths[modality]
    const layout = v.rows[modality]
    const stored = g.input(rowsInput(modality), layout.dtype === 'float16' ? 'float16' : 'float', ['n', layout.rowLayers, d])
    const rows = layout.dtype === 'float16' ? g.toFloat(stored) : stored
    const present = g.input(presentInput(modality), 'float', ['n', 1])
    const absent = g.op('Sub', [c(1), present])
    return layout.positions.map((position, k) => {
      const h = g.op('Gather', [rows, g.intConst([position])], { axis: 1 }) // [n, 1, d]
      const missingK = g.floatConst(v.missing[modality].subarray(k * d, (k + 1) * d), [1, d])
      return g.op('Add', [g.op('Mul', [g.op('Reshape', [h, g.intConst([0, d])]), present]), g.op('Mul', [missingK, absent])])
    })
  }
  const text = states('text')
  const imageRaw = states('image')

  const towerOutputs = v.towers.map((tower) => {
    const gate = Array.from(tower.theta, (theta) => c(1 / (1 + Math.exp(-theta / GATE_TEMPERATURE))))
    let prev: string | undefined
    if (tower.modality === 'inter') {
      const image = v.alignImage ? imageRaw.map((h) => g.op('MatMul', [h, g.floatConst(v.alignImage!, [v.widths.image, v.widths.text])])) : imageRaw
      text.forEach((ht, k) => {
        // H_text + g·(H_image − H_text)
        const mixed = g.op('Add', [ht, g.op('Mul', [gate[k], g.op('Sub', [image[k], ht])])])
        prev = sanb(prev ? g.op('Add', [prev, mixed]) : mixed, tower.sanbs[k])
      })
    } else {
      const hs = tower.modality === 'text' ? text : imageRaw
      hs.forEach((h, k) => {
        // prev + g·(H − prev)
        const mixed = prev ? g.op('Add', [prev, g.op('Mul', [gate[k], g.op('Sub', [h, prev])])]) : g.op('Mul', [gate[k], h])
        prev = sanb(mixed, tower.sanbs[k])
      })
    }
    return dense(prev!, foldedProjection(tower.F, tower.P))
  })
  const concatenated = towerOutputs.length === 1 ? towerOutputs[0] : g.op('Concat', towerOutputs, { axis: 1 })
  g.output(dense(concatenated, v.fusion), SAN_OUTPUT, ['n', v.embeddingDim])
  return g.encode('iisan-san')
}

/** P(F(x)) as one dense layer: W = W_F·W_P [d, D], b = b_F·W_P + b_P (float64 sums, rounded once). */
export function foldedProjection(F: DenseValues, P: DenseValues): DenseValues {
  const d = F.inDim
  const D = P.outDim
  const w = new Float32Array(d * D)
  const row = new Float64Array(D)
  for (let i = 0; i < d; i++) {
    row.fill(0)
    for (let j = 0; j < d; j++) {
      const f = F.w[i * d + j]
      if (f === 0) continue
      for (let o = 0; o < D; o++) row[o] += f * P.w[j * D + o]
    }
    w.set(row, i * D)
  }
  const b = new Float32Array(D)
  for (let o = 0; o < D; o++) {
    let s = P.b[o]
    for (let j = 0; j < d; j++) s += F.b[j] * P.w[j * D + o]
    b[o] = s
  }
  return { w, b, inDim: d, outDim: D }
}

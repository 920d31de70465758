// The SAN's backward pass as an ONNX graph (issue 12): a training step's item side on ONNX Runtime.
// ORT's npm package runs inference only, so the gradients are written out here by hand from the
// forward of san-onnx.ts, the same derivatives as the tfjs tape takes through san.ts and
// custom-ops.ts (test/san-onnx-training.test.ts checks every parameter's gradient against it).
//
// Two graphs, both with the parameters as inputs (one session each serves every step):
//   forward   rows, present, θ…            → e [n, D]
//   backward  rows, present, θ…, dL/de     → dL/dθ for every parameter (`gradOutput(name)`)
// The backward graph runs the forward again rather than receiving its intermediates: at ≈ 140
// GFLOP/s that costs a few ms, where shipping ≈ 20 MB of intermediates out and back costs as much.
//
// Only the ReLU SANB (the paper's) has a backward here; GELU trains on tfjs.
import type { GraphBuilder } from '@iisan/backbones/onnx/graph'
import type { Modality } from './cached-states.ts'
import { GATE_TEMPERATURE } from './san.ts'
import { SAN_OUTPUT, sanForward, sanGraphBuilder, type ParamRef, type ParamSource, type SanStructure, type SanTape, type SanbTape, type TowerTape } from './san-onnx.ts'

export const SAN_OUTPUT_GRAD = 'de'
export const gradOutput = (name: string) => `grad:${name}`

/** The forward and backward graphs of a training step's SAN, parameters as inputs. */
export function sanTrainingGraphs(s: SanStructure): { forward: Uint8Array; backward: Uint8Array } {
  if (s.activation !== 'relu') throw new Error(`the SAN's backward graph has the ReLU SANB only (this SAN uses ${s.activation})`)
  const build = (withBackward: boolean) => {
    const g = sanGraphBuilder()
    const param = paramInputs(g)
    const tape = sanForward(g, s, param)
    if (!withBackward) {
      g.output(tape.e, SAN_OUTPUT, ['n', s.embeddingDim])
      return g.encode('iisan-san-forward')
    }
    const dE = g.input(SAN_OUTPUT_GRAD, 'float', ['n', s.embeddingDim])
    for (const [ref, grad] of sanBackward(g, s, tape, param, dE)) g.output(grad, gradOutput(ref.name), ref.shape)
    return g.encode('iisan-san-backward')
  }
  return { forward: build(false), backward: build(true) }
}

/** Each parameter as a graph input named after it, created on first use. */
function paramInputs(g: GraphBuilder): ParamSource {
  const seen = new Set<string>()
  return (ref) => {
    if (!seen.has(ref.name)) {
      seen.add(ref.name)
      g.input(ref.name, 'float', ref.shape)
    }
    return ref.name
  }
}

/** dL/dθ for every parameter of `s`, given dL/de [n, D]. */
export function sanBackward(g: GraphBuilder, s: SanStructure, tape: SanTape, param: ParamSource, dE: string): Map<ParamRef, string> {
  const grads = new Map<ParamRef, string>()
  const T = (x: string) => g.op('Transpose', [x])
  const mm = (a: string, b: string) => g.op('MatMul', [a, b])
  const add = (a: string, b: string) => g.op('Add', [a, b])
  const mul = (a: string, b: string) => g.op('Mul', [a, b])
  const one = g.floatConst(Float32Array.of(1), [], 'c')
  const axis0 = g.intConst([0])
  // Σ over rows: [n, c] → [c]
  const sumRows = (x: string) => g.op('ReduceSum', [x, axis0], { keepdims: 0 })
  // Σ over everything: → [1]
  const sumAll = (x: string) => g.op('Reshape', [g.op('ReduceSum', [x], { keepdims: 1 }), g.intConst([1])])

  // fusion: e = concat·W + b
  grads.set(s.fusion.w, mm(T(tape.concatenated), dE))
  grads.set(s.fusion.b, sumRows(dE))
  const dConcat = mm(dE, T(param(s.fusion.w)))
  const D = s.embeddingDim
  const dOut = (t: number) =>
    tape.towers.length === 1 ? dConcat : g.op('Slice', [dConcat, g.intConst([t * D]), g.intConst([(t + 1) * D]), g.intConst([1])])

  // dL/dH_m[s_k], summed over the towers that read it
  const dStates: Record<Modality, string[][]> = { text: tape.states.text.map(() => []), image: tape.states.image.map(() => []) }
  const dInterImage: string[] = []
  tape.towers.forEach((tower, t) => {
    const dMixedInputs = towerBackward(tower, dOut(t))
    dMixedInputs.forEach(({ dState, dOther }, k) => {
      if (tower.refs.modality === 'inter') {
        dStates.text[k].push(dState)
        dInterImage[k] = dOther!
      } else dStates[tower.refs.modality][k].push(dState)
    })
  })
  if (dInterImage.length) {
    if (s.alignImage) {
      const A = param(s.alignImage)
      let dA: string | undefined
      dInterImage.forEach((dI, k) => {
        const term = mm(T(tape.states.image[k]), dI)
        dA = dA ? add(dA, term) : term
        dStates.image[k].push(mm(dI, T(A)))
      })
      grads.set(s.alignImage, dA!)
    } else dInterImage.forEach((dI, k) => dStates.image[k].push(dI))
  }
  // H = h·p + missing_k·(1 − p): dL/dmissing_k = (1 − p)ᵀ·dL/dH
  for (const modality of ['text', 'image'] as const) {
    const perLayer = dStates[modality].map((terms) => terms.reduce((a, b) => add(a, b)))
    grads.set(s.missing[modality], g.op('Concat', perLayer.map((dH) => mm(T(tape.absent[modality]), dH)), { axis: 0 }))
  }
  return grads

  /**
   * One tower, from dL/de_tower back through P(F(·)), the SANBs and the mixing; per side layer k,
   * dL/dH_k (intra: of its modality; inter: of the text states) and, inter, dL/dH_image,k.
   */
  function towerBackward(tower: TowerTape, dOutput: string): { dState: string; dOther?: string }[] {
    const { refs } = tower
    const K = tower.blocks.length
    const yK = tower.blocks[K - 1].y
    // linearPair's backward: G = y_Kᵀ·dy, s = Σ dy
    const G = mm(T(yK), dOutput) // [d, D]
    const sum = g.op('ReduceSum', [dOutput, axis0], { keepdims: 1 }) // [1, D]
    const wPT = T(param(refs.P.w))
    grads.set(refs.F.w, mm(G, wPT))
    grads.set(refs.P.w, add(mm(T(param(refs.F.w)), G), mul(g.op('Unsqueeze', [param(refs.F.b), g.intConst([1])]), sum)))
    grads.set(refs.F.b, g.op('Reshape', [mm(sum, wPT), g.intConst([-1])]))
    grads.set(refs.P.b, g.op('Reshape', [sum, g.intConst([-1])]))
    let dY = mm(dOutput, T(tower.M)) // dL/dy_K [n, d]

    const dGates: string[] = []
    const perLayer: { dState: string; dOther?: string }[] = []
    for (let k = K - 1; k >= 0; k--) {
      const dX = sanbBackward(tower.blocks[k], dY)
      const gk = tower.gates[k]
      dGates[k] = sumAll(mul(dX, tower.mixed[k]))
      if (refs.modality === 'inter') {
        // x_k = y_{k−1} + H_text + g·(H_image − H_text)
        perLayer[k] = { dState: mul(dX, g.op('Sub', [one, gk])), dOther: mul(dX, gk) }
        dY = dX
      } else {
        // x_k = y_{k−1} + g·(H_k − y_{k−1}); x_1 = g·H_1
        perLayer[k] = { dState: mul(dX, gk) }
        if (k > 0) dY = mul(dX, g.op('Sub', [one, gk]))
      }
    }
    // g = sigmoid(θ / 0.1): dθ = dg · g(1 − g) / 0.1
    const dG = g.op('Concat', dGates, { axis: 0 })
    const slope = g.op('Div', [mul(tower.g, g.op('Sub', [one, tower.g])), g.floatConst(Float32Array.of(GATE_TEMPERATURE), [], 'c')])
    grads.set(refs.theta, mul(dG, slope))
    return perLayer
  }

  /** ReLU SANB: sanbRelu's hand-written gradient (custom-ops.ts); returns dL/dx. */
  function sanbBackward({ refs, x, h }: SanbTape, dY: string): string {
    const positive = g.op('Cast', [g.op('Greater', [h, g.floatConst(Float32Array.of(0), [], 'c')])], { to: 1 })
    const dHidden = mul(mm(dY, T(param(refs.up.w))), positive) // [n, r]
    grads.set(refs.down.w, mm(T(x), dHidden))
    grads.set(refs.down.b, sumRows(dHidden))
    grads.set(refs.up.w, mm(T(h), dY))
    grads.set(refs.up.b, sumRows(dY))
    return add(dY, mm(dHidden, T(param(refs.down.w))))
  }
}

// TPME (docs/METHOD.md §8): a single efficiency score across K compared methods.
// Each of training time per epoch t, trainable parameters p and peak training memory m is
// min–max normalised across the K methods; TPME = a1·t + a2·p + a3·m. Lower is better.

export interface EfficiencyFigures {
  id: string
  secondsPerEpoch: number
  trainableParams: number
  peakMemoryMb: number
}

export interface TpmeWeights {
  time: number
  params: number
  memory: number
}

/** The paper's weights: a1 = a3 = 0.45, a2 = 0.1. */
export const PAPER_TPME_WEIGHTS: TpmeWeights = { time: 0.45, params: 0.1, memory: 0.45 }

export interface TpmeRow extends EfficiencyFigures {
  timeNorm: number
  paramsNorm: number
  memoryNorm: number
  tpme: number
}

export function tpme(methods: EfficiencyFigures[], weights: TpmeWeights = PAPER_TPME_WEIGHTS): TpmeRow[] {
  const sum = weights.time + weights.params + weights.memory
  if (Math.abs(sum - 1) > 1e-9) throw new Error(`TPME weights must sum to 1 (got ${sum})`)
  const normaliser = (values: number[]) => {
    const min = Math.min(...values)
    const max = Math.max(...values)
    // all equal: no method is worse than another on this axis
    return (x: number) => (max === min ? 0 : (x - min) / (max - min))
  }
  const t = normaliser(methods.map((m) => m.secondsPerEpoch))
  const p = normaliser(methods.map((m) => m.trainableParams))
  const m = normaliser(methods.map((x) => x.peakMemoryMb))
  return methods.map((x) => {
    const row = { ...x, timeNorm: t(x.secondsPerEpoch), paramsNorm: p(x.trainableParams), memoryNorm: m(x.peakMemoryMb) }
    return { ...row, tpme: weights.time * row.timeNorm + weights.params * row.paramsNorm + weights.memory * row.memoryNorm }
  })
}

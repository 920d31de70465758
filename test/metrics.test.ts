import { describe, expect, it } from 'vitest'
import { RankingAccumulator, rankOfTarget } from '@iisan/model'

// scores[0] is padding and never ranked; items are 1..N.
function scoresWithTargetAt(rank: number, n = 20): Float32Array {
  const s = new Float32Array(n + 1)
  // item j ≥ 2 gets score n − j (item 2 best). The target, item 1, goes strictly between
  // item rank (score n − rank) and item rank + 1, so exactly rank − 1 items beat it.
  for (let j = 2; j <= n; j++) s[j] = n - j
  s[1] = n - rank - 0.5
  return s
}

describe('full-ranking metrics', () => {
  it('ranks 1, 10 and 11', () => {
    expect(rankOfTarget(scoresWithTargetAt(1), 1, [])).toBe(1)
    expect(rankOfTarget(scoresWithTargetAt(10), 1, [])).toBe(10)
    expect(rankOfTarget(scoresWithTargetAt(11), 1, [])).toBe(11)
  })

  it('ignores padding index 0 even if its score is highest', () => {
    const s = Float32Array.from([100, 5, 4, 3])
    expect(rankOfTarget(s, 2, [])).toBe(2)
  })

  it('excludes history items that outscore the target', () => {
    const s = Float32Array.from([0, 9, 8, 7, 6])
    expect(rankOfTarget(s, 4, [])).toBe(4)
    expect(rankOfTarget(s, 4, [1, 3])).toBe(2)
  })

  it('ties count against the target, and a non-finite target score is a miss', () => {
    expect(rankOfTarget(Float32Array.from([0, 5, 5, 5, 5]), 2, [])).toBe(4)
    expect(rankOfTarget(Float32Array.from([0, 1, 1, 1]), 3, [1])).toBe(2)
    expect(rankOfTarget(Float32Array.from([0, NaN, NaN, NaN]), 2, [])).toBe(Infinity)
    expect(rankOfTarget(Float32Array.from([0, 2, Infinity, 3]), 2, [])).toBe(Infinity)
  })

  it('a target that is in the history is a miss', () => {
    const s = Float32Array.from([0, 9, 8, 7])
    expect(rankOfTarget(s, 1, [1])).toBe(Infinity)
  })

  it('agrees with a plain count over random scores with ties, NaNs and repeated or out-of-range history items', () => {
    let seed = 5
    const next = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32)
    const naive = (scores: Float32Array, target: number, history: number[]) => {
      if (history.includes(target) || !Number.isFinite(scores[target])) return Infinity
      let ahead = 0
      for (let j = 1; j < scores.length; j++) if (j !== target && !history.includes(j) && scores[j] >= scores[target]) ahead++
      return ahead + 1
    }
    for (let trial = 0; trial < 300; trial++) {
      const n = 5 + Math.floor(next() * 60)
      // few distinct values: many ties
      const scores = Float32Array.from({ length: n + 1 }, () => (next() < 0.05 ? NaN : Math.floor(next() * 8)))
      const target = 1 + Math.floor(next() * n)
      const history = Array.from({ length: Math.floor(next() * 12) }, () => Math.floor(next() * (n + 3)))
      expect(rankOfTarget(scores, target, history), `trial ${trial}`).toBe(naive(scores, target, history))
    }
  })

  it('HR@10 and NDCG@10', () => {
    const acc = new RankingAccumulator(10)
    for (const rank of [1, 10, 11, Infinity]) acc.add(rank)
    const m = acc.result()
    expect(m.users).toBe(4)
    expect(m.hr10).toBeCloseTo(2 / 4, 12)
    expect(m.ndcg10).toBeCloseTo((1 / Math.log2(2) + 1 / Math.log2(11)) / 4, 12)
  })
})

describe('TPME', () => {
  it('min–max normalises each axis and weights 0.45 / 0.1 / 0.45', async () => {
    const { tpme } = await import('@iisan/model')
    const rows = tpme([
      { id: 'fft', secondsPerEpoch: 443, trainableParams: 195e6, peakMemoryMb: 47000 },
      { id: 'iisan', secondsPerEpoch: 22, trainableParams: 4e6, peakMemoryMb: 3000 },
      { id: 'mid', secondsPerEpoch: 232.5, trainableParams: 99.5e6, peakMemoryMb: 25000 },
    ])
    expect(rows.map((r) => r.tpme)).toEqual([1, 0, expect.closeTo(0.45 * 0.5 + 0.1 * 0.5 + 0.45 * 0.5, 12)])
    expect(() => tpme([], { time: 0.5, params: 0.5, memory: 0.5 })).toThrow(/sum to 1/)
  })
})

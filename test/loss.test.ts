import { beforeAll, describe, expect, it } from 'vitest'
import { inBatchSoftmaxLoss, inBatchTargets, initBackend, logPopularity, targetTensors, tf } from '@iisan/model'

beforeAll(async () => {
  await initBackend({ prefer: 'wasm' })
})

// Two users, T = 2, windows of T+1 = 3 ids; slots 0..5 hold [0, 5, 7, 3, 5, 9].
const windows = [Int32Array.from([0, 5, 7]), Int32Array.from([3, 5, 9])]

describe('in-batch loss masking (docs/METHOD.md §5)', () => {
  it('hides padding and the user’s own items except the true next slot', () => {
    const t = inBatchTargets(windows)
    const row = (r: number) => Array.from(t.masked.subarray(r * 6, r * 6 + 6))
    // user 0 owns {0, 5, 7}: slots 0, 1, 2, 4 hidden; row (0,1) predicts slot 2 (item 7)
    expect(row(0)).toEqual([1, 0, 1, 0, 1, 0]) // row (0,0): its own target slot 1 is visible, but the row is invalid
    expect(row(1)).toEqual([1, 1, 0, 0, 1, 0])
    // user 1 owns {3, 5, 9}: slots 1, 3, 4, 5 hidden and padding slot 0
    expect(row(2)).toEqual([1, 1, 0, 1, 0, 1]) // predicts slot 4 (item 5); slot 1 (also item 5) stays hidden
    expect(row(3)).toEqual([1, 1, 0, 1, 1, 0]) // predicts slot 5 (item 9)
    expect(Array.from(t.targetSlot)).toEqual([1, 2, 4, 5])
    expect(Array.from(t.valid)).toEqual([0, 1, 1, 1])
  })

  it('equals a hand computation of the corrected softmax', () => {
    const u = [
      [0.3, -0.2],
      [0.5, 0.1],
      [-0.4, 0.8],
      [0.2, 0.2],
    ]
    const e = [
      [0, 0],
      [1, 0],
      [0.5, -1],
      [-0.3, 0.4],
      [1, 0],
      [0.2, 0.9],
    ]
    const logProbItem = new Float32Array(10)
    logProbItem[3] = Math.log(0.1)
    logProbItem[5] = Math.log(0.4)
    logProbItem[7] = Math.log(0.2)
    logProbItem[9] = Math.log(0.3)
    const slots = [0, 5, 7, 3, 5, 9]
    const loss = tf.tidy(() =>
      inBatchSoftmaxLoss(tf.tensor2d(u), tf.tensor2d(e), tf.tensor1d(logPopularity(slots, logProbItem)), targetTensors(inBatchTargets(windows))).dataSync()[0],
    )
    // By hand: logit = u·e − log p(item); only the visible candidates of each valid row count.
    const logit = (r: number, c: number) => u[r][0] * e[c][0] + u[r][1] * e[c][1] - logProbItem[slots[c]]
    const nll = (r: number, target: number, visible: number[]) =>
      -logit(r, target) + Math.log(visible.reduce((s, c) => s + Math.exp(logit(r, c)), 0))
    const expected = (nll(1, 2, [2, 3, 5]) + nll(2, 4, [2, 4]) + nll(3, 5, [2, 5])) / 3
    expect(loss).toBeCloseTo(expected, 5)
  })
})

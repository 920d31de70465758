import { beforeAll, describe, expect, it } from 'vitest'
import { initBackend, patchWasmKernels, tf } from '@iisan/model'

async function onBackend<T>(name: 'wasm' | 'cpu', run: () => T): Promise<T> {
  await tf.setBackend(name)
  await tf.ready()
  if (name === 'wasm') patchWasmKernels()
  return run()
}

beforeAll(async () => {
  await initBackend({ prefer: 'wasm' })
  await import('@tensorflow/tfjs-backend-cpu')
})

describe('wasm kernels the training graph needs', () => {
  it('gradient of an embedding lookup (gather → UnsortedSegmentSum) equals the cpu backend', async () => {
    const table = Array.from({ length: 7 * 3 }, (_, i) => Math.sin(i))
    const ids = [4, 1, 4, 0, 6, 4] // repeats must accumulate
    const weights = Array.from({ length: ids.length * 3 }, (_, i) => Math.cos(i * 0.7))
    const gradOn = (name: 'wasm' | 'cpu') =>
      onBackend(name, () =>
        tf.tidy(() => {
          const t = tf.tensor2d(table, [7, 3])
          const w = tf.tensor2d(weights, [ids.length, 3])
          const g = tf.grad((x: tf.Tensor) => tf.sum(tf.mul(tf.gather(x, tf.tensor1d(ids, 'int32')), w)))(t)
          return Array.from(g.dataSync())
        }),
      )
    const wasm = await gradOn('wasm')
    const cpu = await gradOn('cpu')
    for (let i = 0; i < cpu.length; i++) expect(wasm[i]).toBeCloseTo(cpu[i], 6)
    // and by hand: row 4 collects weight rows 0, 2 and 5; rows 2, 3, 5 get nothing
    for (let d = 0; d < 3; d++) {
      expect(wasm[4 * 3 + d]).toBeCloseTo(weights[d] + weights[2 * 3 + d] + weights[5 * 3 + d], 6)
      expect(wasm[2 * 3 + d]).toBe(0)
    }
  })

  it('transposed matMuls (every dense layer’s gradient) agree with the cpu backend', async () => {
    const a = Array.from({ length: 2 * 5 * 4 }, (_, i) => Math.sin(i * 1.3))
    const b = Array.from({ length: 2 * 5 * 3 }, (_, i) => Math.cos(i * 0.9))
    const run = (name: 'wasm' | 'cpu') =>
      onBackend(name, () =>
        tf.tidy(() => {
          const A = tf.tensor3d(a, [2, 5, 4])
          const B = tf.tensor3d(b, [2, 5, 3])
          const ta = tf.matMul(A, B, true, false) // [2, 4, 3]
          const tb = tf.matMul(B, ta, false, true) // [2,5,3]·([2,4,3])ᵀ → [2,5,4]
          return [...ta.dataSync(), ...tb.dataSync()]
        }),
      )
    const wasm = await run('wasm')
    const cpu = await run('cpu')
    expect(wasm.length).toBe(cpu.length)
    for (let i = 0; i < cpu.length; i++) expect(wasm[i]).toBeCloseTo(cpu[i], 5)
  })

  it('keeps the tensor count flat across the patched kernels', async () => {
    await onBackend('wasm', () => undefined)
    const before = tf.memory().numTensors
    for (let i = 0; i < 3; i++) {
      tf.tidy(() => {
        tf.grad((x: tf.Tensor) => tf.sum(tf.matMul(tf.gather(x, tf.tensor1d([1, 1, 2], 'int32')), x, false, true)))(tf.ones([4, 4]))
      })
    }
    expect(tf.memory().numTensors).toBe(before)
  })
})

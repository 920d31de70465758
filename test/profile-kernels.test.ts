// profileKernels (packages/tensor-ops/src/profile.ts): tf.profile whose failures name the kernel's
// own error. Plain tf.profile turns a kernel's error into "Cannot read properties of undefined
// (reading 'map')" plus unawaited rejections, and leaves the engine profiling.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { initBackend, tf } from '@iisan/model'
import { profileKernels } from '@iisan/tensor-ops/profile'

const FAILING = 'FailsOnPurposeInProfileTest'
const BACKENDS = ['wasm', 'cpu'] as const

beforeAll(async () => {
  await initBackend({ prefer: 'wasm' })
  await import('@tensorflow/tfjs-backend-cpu')
  for (const backendName of BACKENDS)
    tf.registerKernel({
      kernelName: FAILING,
      backendName,
      kernelFunc: () => {
        throw new Error('kernel failed on purpose')
      },
    })
})

afterAll(async () => {
  for (const backendName of BACKENDS) tf.unregisterKernel(FAILING, backendName)
  await tf.setBackend('wasm')
})

describe.each(BACKENDS)('profileKernels on %s', (backendName) => {
  beforeAll(async () => {
    await tf.setBackend(backendName)
    await tf.ready()
  })

  it('rejects with the failing kernel’s own error, then leaves the engine as it was', async () => {
    const x = tf.tensor1d([1, 2, 3])
    const failing = profileKernels(() => {
      const y = tf.add(x, x) // a kernel that succeeds before the one that fails
      return tf.engine().runKernel(FAILING, { x: y }, {}) as tf.Tensor
    })
    await expect(failing).rejects.toThrow('kernel failed on purpose')
    expect((tf.engine().state as unknown as { profiling: boolean }).profiling).toBe(false)
    // outside a profile the kernel's error is thrown where the kernel runs, as always
    expect(() => tf.engine().runKernel(FAILING, { x }, {})).toThrow('kernel failed on purpose')
    expect(Array.from(tf.add(x, x).dataSync())).toEqual([2, 4, 6])
    x.dispose()
  })

  it('profiles a query that succeeds: kernels, peak bytes and its result', async () => {
    const a = tf.tensor2d([1, 2, 3, 4, 5, 6], [2, 3])
    const b = tf.tensor2d([1, 0, 0, 1, 1, 1], [3, 2])
    const before = tf.memory().numBytes
    const info = await profileKernels(() => tf.tidy(() => tf.sum(tf.matMul(a, b))))
    expect(info.kernelNames).toContain('BatchMatMul')
    expect(info.kernelNames).toContain('Sum')
    // the [2, 2] product was alive at its peak: 16 bytes above what was there before
    expect(info.peakBytes).toBeGreaterThanOrEqual(before + 16)
    for (const kernel of info.kernels) expect(typeof kernel.kernelTimeMs).toBe('number')
    const result = info.result as tf.Tensor
    expect(Array.from(result.dataSync())).toEqual([4 + 5 + 10 + 11])
    tf.dispose([a, b, result])
  })
})

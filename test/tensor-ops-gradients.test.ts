// gelu and layerNorm (packages/tensor-ops) carry hand-written gradients. Their forwards must stay
// bit-for-bit the expressions the backbone fidelity fixtures were made with (a change would move
// every cached state), their gradients must equal autodiff of those expressions, and the tape
// must keep less than autodiff kept — the reason they exist.
import { beforeAll, describe, expect, it } from 'vitest'
import { initBackend, mulberry32, tf } from '@iisan/model'
import { gelu, geluExpression, layerNorm, layerNormExpression } from '@iisan/tensor-ops'

const BACKENDS = ['wasm', 'cpu'] as const

beforeAll(async () => {
  await initBackend({ prefer: 'wasm' })
  await import('@tensorflow/tfjs-backend-cpu')
})

function randomTensor(shape: number[], seed: number, scale = 3): tf.Tensor {
  const random = mulberry32(seed)
  const size = shape.reduce((a, b) => a * b, 1)
  return tf.tensor(Float32Array.from({ length: size }, () => (random() * 2 - 1) * scale), shape)
}

function expectClose(actual: tf.Tensor, expected: tf.Tensor, tolerance: number): void {
  expect(actual.shape).toEqual(expected.shape)
  const a = actual.dataSync()
  const e = expected.dataSync()
  let worst = 0
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - e[i]!) / Math.max(1, Math.abs(e[i]!)))
  expect(worst).toBeLessThan(tolerance)
}

/** bytes the gradient computation holds at its peak, beyond the inputs */
async function peakBytes(f: () => tf.Tensor[]): Promise<number> {
  const info = await tf.profile(() => {
    f().forEach((t) => t.dispose())
  })
  return info.peakBytes
}

describe.each(BACKENDS)('hand-written gradients on %s', (backendName) => {
  beforeAll(async () => {
    await tf.setBackend(backendName)
    await tf.ready()
  })

  it('gelu: the same values as the expression, bit for bit, and autodiff’s gradient', () => {
    const x = randomTensor([37, 29], 1, 5)
    const dy = randomTensor([37, 29], 2)
    expect(Array.from(gelu(x).dataSync())).toEqual(Array.from(geluExpression(x).dataSync()))
    const [custom] = tf.grads((t: tf.Tensor) => gelu(t))([x], dy)
    const [reference] = tf.grads((t: tf.Tensor) => geluExpression(t))([x], dy)
    expectClose(custom!, reference!, 1e-5)
    // at x = 0 the slope is Φ(0) = 0.5; far out it is 0 and 1
    const [slopes] = tf.grads((t: tf.Tensor) => gelu(t))([tf.tensor1d([0, -10, 10])])
    const [atZero, farLeft, farRight] = Array.from(slopes!.dataSync())
    expect(atZero).toBe(0.5)
    expect(farLeft).toBeCloseTo(0, 12)
    expect(farRight).toBe(1)
  })

  it.each([
    ['rows', [23, 16]],
    ['a batch of sequences', [3, 5, 16]],
  ])('layerNorm over %s: the same values, bit for bit, and autodiff’s gradients for x, γ and β', (_label, shape) => {
    const d = shape[shape.length - 1]!
    const x = tf.add(randomTensor(shape, 3), randomTensor([d], 4, 10)) // rows off centre, as hidden states are
    const gamma = randomTensor([d], 5)
    const beta = randomTensor([d], 6)
    const dy = randomTensor(shape, 7)
    const eps = 1e-12
    expect(Array.from(layerNorm(x, gamma, beta, eps).dataSync())).toEqual(Array.from(layerNormExpression(x, gamma, beta, eps).dataSync()))
    const custom = tf.grads((a: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => layerNorm(a, g, b, eps))([x, gamma, beta], dy)
    const reference = tf.grads((a: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => layerNormExpression(a, g, b, eps))([x, gamma, beta], dy)
    expect(custom.map((t) => t.shape)).toEqual([shape, [d], [d]])
    custom.forEach((t, i) => expectClose(t, reference[i]!, 1e-4))
  })

  it('the tape keeps less than autodiff of the expressions: an FFN-sized GELU and a LayerNorm', async () => {
    const rows = 64
    const x = randomTensor([rows, 4 * 96], 8)
    const h = randomTensor([rows, 96], 9)
    const gamma = randomTensor([96], 10)
    const beta = randomTensor([96], 11)
    const geluPeak = (f: (t: tf.Tensor) => tf.Tensor) => peakBytes(() => tf.grads(f)([x]))
    const normPeak = (f: typeof layerNorm) => peakBytes(() => tf.grads((a: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => f(a, g, b, 1e-12))([h, gamma, beta]))
    const [geluCustom, geluReference] = [await geluPeak(gelu), await geluPeak(geluExpression)]
    const [normCustom, normReference] = [await normPeak(layerNorm), await normPeak(layerNormExpression)]
    const xBytes = x.size * 4
    // autodiff held x, x·0.5, x/√2 and 1 + erf(x/√2) for the backward pass; the op holds x and 1 + erf(x/√2)
    expect(geluReference - geluCustom).toBeGreaterThanOrEqual(2 * xBytes)
    expect(normCustom).toBeLessThan(normReference)
  })
})

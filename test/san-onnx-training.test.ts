// Cached IISAN's training step with its SAN on ONNX Runtime (issue 12; san-onnx-backward.ts,
// san-onnx-step.ts): the hand-written backward graph must give the loss and every parameter's
// gradient the tfjs tape gives, for every tower layout, IISAN-Versa's image-to-text map, and items
// lacking a modality (the learned stand-ins train; a stand-in whose modality every item of the
// step has gets no gradient, as on tfjs). Steps from one seed give the same losses. On wasm and
// cpu (the user side and the reference tape run on tfjs).
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import {
  IisanItemEncoder,
  SequentialRecommender,
  createOptimizers,
  getMethod,
  initBackend,
  logProbabilities,
  tf,
  trainStep,
  type CachedStates,
  type ModalityStates,
} from '@iisan/model'
import { SyncOrtSession } from '@iisan/backbones/onnx/onnx-runtime'
import { GraphBuilder } from '@iisan/backbones/onnx/graph'
import { perturbParams, randomModalityStates, randomProtocol } from './helpers/random-states.ts'

const ITEMS = 40
const data = randomProtocol(ITEMS, 5)
const logProb = logProbabilities(data.trainCounts)
const RATES = { lrItem: 1e-3, lrUser: 1e-3, lrTextEncoder: 1e-3, lrImageEncoder: 1e-3, lrTextAdapters: 1e-3, lrImageAdapters: 1e-3 }

/** Random states, as float32 values or (as the cache stores them) float16 bit patterns. */
function states(L: number, d: number, seed: number, absent: (item: number) => boolean, float16: boolean): ModalityStates {
  const s = randomModalityStates(ITEMS, L, d, seed, absent)
  return float16 ? { ...s, data: Uint16Array.from(s.data as Float32Array, toHalf) } : s
}

/** float32 → float16 bits, truncating (exact for the comparison: both runtimes read the same bits). */
function toHalf(x: number): number {
  const bits = new Uint32Array(Float32Array.of(x).buffer)[0]
  const sign = (bits >>> 16) & 0x8000
  const exponent = ((bits >>> 23) & 0xff) - 127 + 15
  if (exponent <= 0) return sign
  return sign | (exponent << 10) | ((bits >>> 13) & 0x3ff)
}

function model(settings: Record<string, unknown>, imageWidth: number, absentImage: (item: number) => boolean = (i) => i % 5 === 0, float16 = false): SequentialRecommender {
  const cached: CachedStates = { text: states(4, 12, 7, (i) => i % 13 === 0, float16), image: states(4, imageWidth, 8, absentImage, float16) }
  const config = getMethod('iisan').modelConfig(data.numItems, { embeddingDim: 16, numBlocks: 1, numHeads: 2, maxSeqLen: 5, dropout: 0, seed: 4, reduction: 4, ...settings }, { states: cached })
  const m = new SequentialRecommender(config, { states: cached })
  perturbParams(m, 9)
  return m
}

const encoderOf = (m: SequentialRecommender) => m.itemEncoder as IisanItemEncoder

/** The step's loss and gradients (by short parameter name) as Float32Arrays. */
function lossAndGrads(m: SequentialRecommender, windows: Int32Array[]): { loss: number; grads: Map<string, Float32Array> } {
  const shortName = new Map(m.params.entries().map(([name, v]) => [v.name, name]))
  let loss = NaN
  const read = new Map<string, Float32Array>()
  tf.tidy(() => {
    const { value, grads } = m.lossAndGrads(windows, logProb)
    loss = value.dataSync()[0]
    for (const [name, g] of Object.entries(grads)) read.set(shortName.get(name)!, g.dataSync() as Float32Array)
  })
  return { loss, grads: read }
}

const maxAbs = (a: Float32Array) => a.reduce((m, x) => Math.max(m, Math.abs(x)), 0)
const maxDifference = (a: Float32Array, b: Float32Array) => a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i])), 0)

beforeAll(async () => {
  await initBackend({ prefer: 'wasm' })
  await import('@tensorflow/tfjs-backend-cpu')
})

describe.each(['wasm', 'cpu'] as const)('the SAN trained on ONNX Runtime against the tfjs tape (%s)', (backend) => {
  beforeAll(async () => {
    await tf.setBackend(backend)
    await tf.ready()
  })

  const models: SequentialRecommender[] = []
  afterEach(() => {
    for (const m of models.splice(0)) m.dispose()
  })
  const made = (...args: Parameters<typeof model>) => {
    const m = model(...args)
    models.push(m)
    return m
  }

  const layouts: [string, Record<string, unknown>, number, boolean][] = [
    ['intra_inter (the paper), float32 rows', { modality: 'intra_inter' }, 12, false],
    ['intra_inter, float16 rows (as cached)', { modality: 'intra_inter' }, 12, true],
    ['intra only', { modality: 'intra' }, 12, false],
    ['inter only', { modality: 'inter' }, 12, false],
    ['IISAN-Versa: image width 8 mapped to the text width 12', { modality: 'intra_inter' }, 8, false],
  ]
  it.each(layouts)('%s: the same loss and gradients for every parameter', async (_, settings, imageWidth, float16) => {
    const windows = data.trainWindows.slice(0, 8)
    const reference = lossAndGrads(made(settings, imageWidth, undefined, float16), windows)
    const m = made(settings, imageWidth, undefined, float16)
    await m.prepareTraining()
    expect(encoderOf(m).trainingRuntime).toBe('onnx')
    const onOrt = lossAndGrads(m, windows)
    expect(Math.abs(onOrt.loss - reference.loss)).toBeLessThan(1e-5)
    expect([...onOrt.grads.keys()].sort()).toEqual([...reference.grads.keys()].sort())
    // every SAN parameter, the stand-ins included, has a gradient here
    for (const name of m.params.entries().map(([n]) => n).filter((n) => n.startsWith('san.') || n.startsWith('fusion.'))) expect(reference.grads.has(name), name).toBe(true)
    for (const [name, grad] of reference.grads) {
      const scale = Math.max(maxAbs(grad), 1e-3)
      expect(maxDifference(onOrt.grads.get(name)!, grad) / scale, name).toBeLessThan(1e-4)
    }
    // the comparison means something: the gradients are not all tiny
    expect(maxAbs(reference.grads.get('fusion.w')!)).toBeGreaterThan(1e-3)
  })

  it('a step whose items all have an image: the image stand-in gets no gradient, as on tfjs', async () => {
    const windows = data.trainWindows.slice(0, 8)
    const reference = lossAndGrads(made({}, 12, () => false), windows)
    const m = made({}, 12, () => false)
    await m.prepareTraining()
    const onOrt = lossAndGrads(m, windows)
    expect(reference.grads.has('san.missing.image')).toBe(false)
    expect(onOrt.grads.has('san.missing.image')).toBe(false)
    expect(onOrt.grads.has('san.missing.text')).toBe(true)
  })

  it('five Adam steps from one seed (dropout on): the same losses within 1e-5', async () => {
    const run = async (onOrt: boolean) => {
      const m = made({ dropout: 0.2 }, 12)
      if (onOrt) await m.prepareTraining()
      expect(encoderOf(m).trainingRuntime).toBe(onOrt ? 'onnx' : 'tfjs')
      const optimizers = createOptimizers(RATES, m.params.groups())
      const losses = [0, 1, 2, 3, 4].map((s) => trainStep(m, optimizers, data.trainWindows.slice(s * 8, s * 8 + 8), logProb))
      for (const o of Object.values(optimizers)) o.dispose()
      return losses
    }
    const onTfjs = await run(false)
    const onOrt = await run(true)
    onOrt.forEach((loss, i) => expect(Math.abs(loss - onTfjs[i]), `step ${i}`).toBeLessThan(1e-5))
    expect(new Set(onTfjs.map((l) => l.toFixed(5))).size).toBeGreaterThan(1)
  })
})

describe('where the SAN stays on tfjs', () => {
  beforeAll(async () => {
    await tf.setBackend('wasm')
  })

  it('GELU SANBs (no backward graph is written for them) and BACKBONE_RUNTIME=tfjs', async () => {
    const gelu = model({ activation: 'gelu' }, 12)
    await gelu.prepareTraining()
    expect(encoderOf(gelu).trainingRuntime).toBe('tfjs')
    expect(gelu.itemEncoder.forwardForStep!(data.trainWindows[0])).toBeUndefined()
    gelu.dispose()
    const before = process.env.BACKBONE_RUNTIME
    process.env.BACKBONE_RUNTIME = 'tfjs'
    try {
      const m = model({}, 12)
      await m.prepareTraining()
      expect(encoderOf(m).trainingRuntime).toBe('tfjs')
      m.dispose()
    } finally {
      if (before === undefined) delete process.env.BACKBONE_RUNTIME
      else process.env.BACKBONE_RUNTIME = before
    }
  })

  it('a released synchronous session refuses to run', async () => {
    const ort = await import('onnxruntime-node')
    const g = new GraphBuilder({ read: () => new Float32Array(0) })
    g.output(g.op('Relu', [g.input('x', 'float', [2])]), 'y', [2])
    const session = await SyncOrtSession.create(ort, g.encode('relu'), 1)
    expect(Array.from(session.run({ x: [Float32Array.of(-1, 2), [2]] }, ['y'])[0])).toEqual([0, 2])
    session.release()
    expect(() => session.run({ x: [Float32Array.of(-1, 2), [2]] }, ['y'])).toThrow(/released/)
  })
})

// Training steps whose memory does not grow with the batch: wasm's Identity sharing the buffer
// (the gradient tape no longer copies what it saves), and the fine-tuning baselines' two-pass step
// (packages/model/src/item-encoder.ts, forwardForStep) giving one tape's loss and gradients — on
// tiny random backbones (d 16, 2 layers; BERT vocab 50; ViT 32×32 images), on wasm and cpu.
import { beforeAll, describe, expect, it, vi } from 'vitest'
import {
  Params,
  SequentialRecommender,
  StepwiseAdam,
  applyGradients,
  buildProtocol,
  createOptimizers,
  logProbabilities,
  mulberry32,
  tf,
  trainStep,
  wasmHeapMeter,
} from '@iisan/model'
import { TrainableBert, TrainableVit } from '@iisan/backbones/trainable'
import { tinyBackbonesFolder, tinyFineTuningModel, useBackend } from './helpers/tiny-backbones.ts'

const root = tinyBackbonesFolder('two-pass')
const N = 14

describe('wasm Identity shares the buffer', () => {
  beforeAll(() => useBackend('wasm'))

  it('a clone is the same buffer, freed with its last tensor', () => {
    const meter = wasmHeapMeter()!
    const x = tf.ones([256, 256])
    const live = meter.live()
    const copy = tf.clone(x)
    expect(copy.dataId).toBe(x.dataId)
    expect(meter.live()).toBe(live)
    x.dispose()
    expect(Array.from(copy.dataSync().slice(0, 3))).toEqual([1, 1, 1])
    copy.dispose()
    expect(meter.live()).toBe(live - 256 * 256 * 4)
  })

  it("the tape keeps what a step's backward pass needs without copying it; memory stays flat over steps", () => {
    const meter = wasmHeapMeter()!
    const weight = tf.variable(tf.randomNormal([1024, 1024], 0, 0.01, 'float32', 1), true, 'identity-test/weight') // 4 MB
    const x = tf.randomNormal([4, 1024], 0, 1, 'float32', 2)
    const optimizer = tf.train.adam(1e-3)
    const step = () => {
      let grown = 0
      tf.tidy(() => {
        const before = meter.live()
        optimizer.minimize(() => {
          // matMul saves both inputs for its gradient: before the fix, a 4 MB copy of the weight
          const loss = tf.sum(tf.square(tf.matMul(x, weight))) as tf.Scalar
          grown = meter.live() - before
          return loss
        })
      })
      return grown
    }
    step() // Adam's slots
    const tensors = tf.memory().numTensors
    const bytes = tf.memory().numBytes
    const live = meter.live()
    for (let i = 0; i < 3; i++) expect(step()).toBeLessThan(weight.size * 4 * 0.1)
    expect(tf.memory().numTensors).toBe(tensors)
    expect(tf.memory().numBytes).toBe(bytes)
    expect(meter.live()).toBe(live)
    optimizer.dispose()
    tf.dispose([weight, x])
  })
})

describe('the optimiser step', () => {
  beforeAll(() => useBackend('wasm'))

  it("StepwiseAdam is tfjs' Adam, one variable's temporaries at a time", () => {
    const meter = wasmHeapMeter()!
    const shapes = Array.from({ length: 8 }, () => [256, 256])
    const run = (optimizer: tf.Optimizer, tag: string) => {
      const variables = shapes.map((shape, i) => tf.tidy(() => tf.variable(tf.randomNormal(shape, 0, 1, 'float32', i + 1), true, `${tag}/v${i}`)))
      let peak = 0
      for (let step = 0; step < 3; step++) {
        const grads = Object.fromEntries(variables.map((v, i) => [v.name, tf.randomNormal(v.shape, 0, 1, 'float32', 100 * step + i + 1)]))
        meter.resetPeak()
        const live = meter.live()
        optimizer.applyGradients(grads)
        if (step > 0) peak = Math.max(peak, meter.peak() - live) // step 1 also makes the slots
        tf.dispose(Object.values(grads))
      }
      const values = variables.map((v) => Array.from(v.dataSync()))
      tf.dispose(variables)
      optimizer.dispose()
      return { values, peak }
    }
    const tensors = tf.memory().numTensors
    const reference = run(tf.train.adam(1e-2, 0.9, 0.999, 1e-8), 'adam')
    const stepwise = run(new StepwiseAdam(1e-2, 0.9, 0.999, 1e-8), 'stepwise')
    expect(tf.memory().numTensors).toBe(tensors)
    const differing = stepwise.values.flatMap((values, v) => values.filter((x, i) => x !== reference.values[v][i]))
    expect(differing.length).toBe(0)
    // tfjs' Adam holds every variable's temporaries until the end of the step
    const bytes = 256 * 256 * 4
    expect(reference.peak).toBeGreaterThan(8 * 4 * bytes)
    expect(stepwise.peak).toBeLessThan(3.5 * bytes)
  })

  it('a parameter without a gradient this step keeps its Adam slots, and moves no other onto them', () => {
    const params = new Params(1)
    const a = params.add('a', [2], 'zeros', 'recsys')
    const b = params.add('b', [3], 'zeros', 'recsys')
    const optimizers = createOptimizers({ ...rates, lrUser: 0.1 }, params.groups())
    const alone = tf.tidy(() => tf.variable(tf.zeros([3]), true, 'stable-slots/alone'))
    const reference = tf.train.adam(0.1, 0.9, 0.999, 1e-8)
    const g = (step: number, n: number) => tf.tensor1d(Array.from({ length: n }, (_, i) => Math.sin(step * 3 + i + 1)))
    const steps = [true, false, true] // a's gradient is missing in step 2
    steps.forEach((withA, step) => {
      const gb = g(step, 3)
      const ga = g(step + 10, 2)
      const aBefore = Array.from(a.dataSync())
      applyGradients(params, optimizers, withA ? { [a.name]: ga, [b.name]: gb } : { [b.name]: gb })
      reference.applyGradients([{ name: alone.name, tensor: gb }])
      if (!withA) expect(Array.from(a.dataSync())).toEqual(aBefore)
      else expect(Array.from(a.dataSync())).not.toEqual(aBefore)
      tf.dispose([ga, gb])
    })
    expect(Array.from(b.dataSync())).toEqual(Array.from(alone.dataSync()))
    Object.values(optimizers).forEach((o) => o!.dispose())
    reference.dispose()
    alone.dispose()
    params.dispose()
  })
})

const random = mulberry32(9)
const users = Array.from({ length: 24 }, (_, u) => ({ key: `u${u}`, items: Array.from({ length: 6 }, () => String(1 + Math.floor(random() * N))) }))
const data = buildProtocol(users, Array.from({ length: N }, (_, i) => String(i + 1)), { maxSeqLen: 4, minInteractions: 5 })
const logProb = logProbabilities(data.trainCounts)
const batches = [0, 8, 16].map((first) => data.trainWindows.slice(first, first + 8))
const rates = { lrItem: 1e-3, lrUser: 1e-3, lrTextEncoder: 1e-3, lrImageEncoder: 1e-3, lrTextAdapters: 1e-3, lrImageAdapters: 1e-3 }

function model(method: string): SequentialRecommender {
  return tinyFineTuningModel(root, method, data.numItems, { loraRank: 2, loraAlpha: 4 })
}

/** One Adam step with one tape over the whole loss (what trainStep did before the two passes). */
function onePassStep(m: SequentialRecommender, optimizers: ReturnType<typeof createOptimizers>, windows: Int32Array[]): number {
  return tf.tidy(() => {
    const { value, grads } = tf.variableGrads(() => m.loss(windows, logProb))
    applyGradients(m.params, optimizers, grads)
    return value.dataSync()[0]
  })
}

describe.each(['wasm', 'cpu'] as const)('the two-pass step on %s', (backend) => {
  beforeAll(() => useBackend(backend))

  it.each(['fft', 'lora'])('%s: one tape’s loss and the gradient of every trainable parameter, within 1e-5 (dropout on, the same masks)', (method) => {
    const m = model(method)
    expect(m.itemEncoder.forwardForStep).toBeDefined()
    const variables = m.params.entries()
    const windows = batches[0]
    const start = m.params.dropoutCalls
    const one = tf.variableGrads(() => m.loss(windows, logProb))
    const drawn = m.params.dropoutCalls - start
    expect(drawn).toBeGreaterThan(10) // the backbones' and the user encoder's masks
    m.params.dropoutCalls = start
    const titles = vi.spyOn(TrainableBert.prototype, 'forward')
    const images = vi.spyOn(TrainableVit.prototype, 'forward')
    const two = tf.tidy(() => m.lossAndGrads(windows, logProb))
    expect(m.params.dropoutCalls - start).toBe(drawn)
    // both passes ran each backbone in chunks of at most 3 items, pass 2 once per chunk of pass 1
    for (const spy of [titles, images]) {
      const batches = spy.mock.calls.map((call) => (spy === images ? call[1] : call[2]) as number) // forward(…, batch, …)
      expect(batches.length % 2).toBe(0)
      expect(batches.length).toBeGreaterThanOrEqual(4)
      expect(Math.max(...batches)).toBeLessThanOrEqual(3)
      spy.mockRestore()
    }
    expect(Math.abs(two.value.dataSync()[0] - one.value.dataSync()[0])).toBeLessThan(1e-5)
    for (const [name, v] of variables) {
      const [a, b] = [one.grads[v.name], two.grads[v.name]]
      expect(b, name).toBeDefined()
      expect(a, name).toBeDefined()
      const [x, y] = [a.dataSync(), b.dataSync()]
      let worst = 0
      for (let i = 0; i < x.length; i++) worst = Math.max(worst, Math.abs(x[i] - y[i]))
      expect(worst, name).toBeLessThan(1e-5)
    }
    // every group learns: the backbones (or their LoRA), the heads and the user encoder
    const norm = (name: string) => tf.tidy(() => tf.sum(tf.square(two.grads[m.params.get(name).name])).dataSync()[0])
    expect(norm('text.encoder.layer.1.attention.self.value.bias')).toBeGreaterThan(0)
    expect(norm('image.classifier.w')).toBeGreaterThan(0)
    expect(norm('com_dense.w')).toBeGreaterThan(0)
    tf.dispose([one.value, two.value, Object.values(one.grads), Object.values(two.grads)])
    m.dispose()
  })

  it.each(['fft', 'lora'])('%s: three Adam steps give one tape’s losses, and memory stays flat', (method) => {
    const [twoPass, onePass] = [model(method), model(method)]
    const optimizers = [twoPass, onePass].map((m) => createOptimizers(rates, m.params.groups()))
    const meter = wasmHeapMeter()
    const losses: number[][] = [[], []]
    let flat: { tensors: number; bytes: number; live?: number } | undefined
    for (const windows of batches) {
      losses[0].push(trainStep(twoPass, optimizers[0], windows, logProb))
      losses[1].push(onePassStep(onePass, optimizers[1], windows))
      // after the first step (which creates Adam's slots) nothing may accumulate
      const now = { tensors: tf.memory().numTensors, bytes: tf.memory().numBytes, live: meter?.live() }
      if (flat) expect(now).toEqual(flat)
      flat = now
    }
    losses[0].forEach((loss, i) => expect(Math.abs(loss - losses[1][i]), `step ${i + 1}`).toBeLessThan(1e-5))
    expect(losses[0][2]).not.toBe(losses[0][0])
    optimizers.forEach((o) => Object.values(o).forEach((x) => x!.dispose()))
    twoPass.dispose()
    onePass.dispose()
  })
})

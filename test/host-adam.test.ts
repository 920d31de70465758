// HostAdam (Adam with its moment slots in host memory, for FFT) against StepwiseAdam (slots on the
// tfjs heap): the same weights after several steps, frozen weights left alone, training states
// that resume as if the run had never stopped — on tiny random backbones (d 16, 2 layers; BERT
// vocab 50; ViT 32×32 images), on the wasm and cpu backends.
import { beforeAll, describe, expect, it, vi } from 'vitest'
import {
  SequentialRecommender,
  StepwiseAdam,
  buildProtocol,
  createModelOptimizers,
  createOptimizers,
  getMethod,
  logProbabilities,
  mulberry32,
  optimizerSlots,
  parseTrainingState,
  restoreOptimizerSlots,
  serializeTrainingState,
  tf,
  train,
  trainStep,
  type GroupOptimizers,
  type TrainingState,
} from '@iisan/model'
import { HostAdam } from '@iisan/model/host-adam'
import { TrainableBert } from '@iisan/backbones/trainable'
import { tinyBackbonesFolder, tinyFineTuningModel, useBackend } from './helpers/tiny-backbones.ts'

const root = tinyBackbonesFolder('host-adam')
const N = 14

const random = mulberry32(9)
const users = Array.from({ length: 24 }, (_, u) => ({ key: `u${u}`, items: Array.from({ length: 6 }, () => String(1 + Math.floor(random() * N))) }))
const data = buildProtocol(users, Array.from({ length: N }, (_, i) => String(i + 1)), { maxSeqLen: 4, minInteractions: 5 })
const logProb = logProbabilities(data.trainCounts)
const batches = [0, 8, 16, 4].map((first) => data.trainWindows.slice(first, first + 8))
// high rates, so three steps move every weight well past float32 noise
const rates = { lrItem: 1e-2, lrUser: 1e-2, lrTextEncoder: 1e-2, lrImageEncoder: 1e-2, lrTextAdapters: 1e-2, lrImageAdapters: 1e-2 }

function model(method: string): SequentialRecommender {
  return tinyFineTuningModel(root, method, data.numItems)
}

/** The largest |a − b| / max(|a|, |b|) over two runs' parameters (0 for equal values). */
function worstRelative(a: Map<string, { values: Float32Array }>, b: Map<string, { values: Float32Array }>): number {
  let worst = 0
  for (const [name, { values }] of a) {
    const other = b.get(name)!.values
    for (let i = 0; i < values.length; i++) {
      const scale = Math.max(Math.abs(values[i]), Math.abs(other[i]))
      if (scale > 0) worst = Math.max(worst, Math.abs(values[i] - other[i]) / scale)
    }
  }
  return worst
}

function disposeAll(optimizers: GroupOptimizers): void {
  Object.values(optimizers).forEach((o) => o!.dispose())
}

describe('which methods keep their Adam slots in host memory', () => {
  beforeAll(async () => {
    await tf.setBackend('cpu')
  })

  it('fft declares host slots and gets HostAdam; the other item-content methods keep StepwiseAdam', () => {
    expect(getMethod('fft').optimizerSlots).toBe('host')
    for (const [method, kind] of [['fft', HostAdam], ['bitfit', StepwiseAdam]] as const) {
      const m = model(method)
      const optimizers = createModelOptimizers(m, rates)
      for (const o of Object.values(optimizers)) expect(o, method).toBeInstanceOf(kind)
      // tf.Optimizer answers instanceof by duck typing; HostAdam must not take a StepwiseAdam for itself
      if (kind === StepwiseAdam) for (const o of Object.values(optimizers)) expect(o instanceof HostAdam).toBe(false)
      disposeAll(optimizers)
      m.dispose()
    }
    for (const name of ['sasrec-id', 'iisan', 'iisan-uncached', 'adapter', 'lora', 'bitfit']) expect(getMethod(name).optimizerSlots ?? 'heap', name).toBe('heap')
  })
})

describe.each(['wasm', 'cpu'] as const)('HostAdam on %s', (backend) => {
  beforeAll(() => useBackend(backend))

  it('gives StepwiseAdam’s weights over four steps; a variable without gradients stays as it was; no tensor is left behind', () => {
    const shapes = [[300, 17], [64], [1], [5, 3]]
    const run = (optimizer: tf.Optimizer, tag: string) => {
      const variables = shapes.map((shape, i) => tf.tidy(() => tf.variable(tf.randomNormal(shape, 0, 1, 'float32', i + 1), true, `${tag}-${backend}/v${i}`)))
      const initial = variables.map((v) => v.dataSync().slice())
      const tensors = tf.memory().numTensors
      for (let step = 0; step < 4; step++) {
        // gradients from 1e-3 to 10 in size (the ε and √v̂ paths both matter); v1 has none in step 2, v3 none ever
        const grads: Record<string, tf.Tensor | null> = {}
        variables.forEach((v, i) => {
          grads[v.name] = i === 3 || (i === 1 && step === 1) ? null : tf.tidy(() => tf.mul(tf.randomNormal(v.shape, 0, 1, 'float32', 10 * step + i + 1), 10 ** (i - 2)))
        })
        optimizer.applyGradients(grads as tf.NamedTensorMap)
        tf.dispose(Object.values(grads).filter((g): g is tf.Tensor => g !== null))
        // HostAdam's slots are not tensors, and its temporaries are gone when the step returns
        if (optimizer instanceof HostAdam) expect(tf.memory().numTensors, `step ${step + 1}`).toBe(tensors)
      }
      const values = variables.map((v) => v.dataSync().slice())
      tf.dispose(variables)
      optimizer.dispose()
      return { initial, values }
    }
    const reference = run(new StepwiseAdam(1e-2, 0.9, 0.999, 1e-8), 'stepwise')
    const host = run(new HostAdam(1e-2, 0.9, 0.999, 1e-8), 'host')
    let worst = 0
    host.values.forEach((values, v) =>
      values.forEach((x, i) => {
        const y = reference.values[v][i]
        worst = Math.max(worst, Math.abs(x - y) / Math.max(Math.abs(x), Math.abs(y)))
      }),
    )
    expect(worst).toBeLessThanOrEqual(1e-6)
    expect(host.values[3]).toEqual(host.initial[3])
    for (const v of [0, 1, 2]) expect(host.values[v], `v${v}`).not.toEqual(host.initial[v])
  })

  it('reads the slots a StepwiseAdam saved (training states written before HostAdam) and takes the same next step', async () => {
    const variables = (tag: string) => [[40, 3], [7]].map((shape, i) => tf.tidy(() => tf.variable(tf.randomNormal(shape, 0, 1, 'float32', i + 1), true, `${tag}-${backend}/v${i}`)))
    const grads = (vs: tf.Variable[], step: number) => Object.fromEntries(vs.map((v, i) => [v.name, tf.randomNormal(v.shape, 0, 1, 'float32', 10 * step + i + 1)]))
    const step = (o: tf.Optimizer, vs: tf.Variable[], s: number) => {
      const g = grads(vs, s)
      o.applyGradients(g)
      tf.dispose(Object.values(g))
    }
    const [a, b] = [variables('old'), variables('new')]
    const stepwise = new StepwiseAdam(1e-2, 0.9, 0.999, 1e-8)
    for (let s = 0; s < 2; s++) step(stepwise, a, s)
    const saved = await optimizerSlots(stepwise)
    b.forEach((v, i) => v.assign(a[i]))
    const host = new HostAdam(1e-2, 0.9, 0.999, 1e-8)
    await restoreOptimizerSlots(host, saved)
    step(stepwise, a, 2)
    step(host, b, 2)
    b.forEach((v, i) => expect(Array.from(v.dataSync())).toEqual(Array.from(a[i].dataSync())))
    expect(host.iterations).toBe(3)
    tf.dispose([...a, ...b])
    stepwise.dispose()
    host.dispose()
  })

  it('fft: three trainSteps with host slots reach the heap slots’ parameters', () => {
    const [heapModel, hostModel] = [model('fft'), model('fft')]
    const heap = createOptimizers(rates, heapModel.params.groups(), 'heap')
    const host = createOptimizers(rates, hostModel.params.groups(), 'host')
    const initial = hostModel.params.snapshot()
    for (const windows of batches.slice(0, 3)) {
      const losses = [trainStep(heapModel, heap, windows, logProb), trainStep(hostModel, host, windows, logProb)]
      expect(Math.abs(losses[0] - losses[1])).toBeLessThan(1e-5)
    }
    const after = hostModel.params.snapshot()
    expect(worstRelative(after, heapModel.params.snapshot())).toBeLessThanOrEqual(1e-6)
    // FFT trains every backbone weight: the deepest layer of each tower moved
    for (const name of ['text.encoder.layer.1.output.dense.weight', 'image.encoder.layer.1.output.dense.weight', 'com_dense.w'])
      expect(after.get(name)!.values, name).not.toEqual(initial.get(name)!.values)
    disposeAll(heap)
    disposeAll(host)
    heapModel.dispose()
    hostModel.dispose()
  })

  it('bitfit with host slots: the frozen backbone weights stay as they were, the biases train', () => {
    const load = vi.spyOn(TrainableBert, 'load')
    const m = model('bitfit')
    const bert = load.mock.results[0].value as TrainableBert
    load.mockRestore()
    const frozen = bert.namedWeights().filter((w) => !w.trainable)
    expect(frozen.length).toBeGreaterThan(10)
    const frozenBefore = frozen.map((w) => w.tensor.dataSync().slice())
    const optimizers = createOptimizers(rates, m.params.groups(), 'host')
    const initial = m.params.snapshot()
    for (const windows of batches.slice(0, 2)) trainStep(m, optimizers, windows, logProb)
    frozen.forEach((w, i) => expect(w.tensor.dataSync(), w.name).toEqual(frozenBefore[i]))
    const after = m.params.snapshot()
    const moved = [...after].filter(([name, { values }]) => values.some((x, i) => x !== initial.get(name)!.values[i])).map(([name]) => name)
    expect(moved).toContain('text.encoder.layer.1.output.dense.bias')
    // inside the backbones only biases (and LayerNorm betas, named .bias too) are parameters at all
    const backbone = moved.filter((name) => /^(text|image)\.(encoder|embeddings)\./.test(name))
    expect(backbone.length).toBeGreaterThan(5)
    expect(backbone.filter((name) => !name.endsWith('.bias'))).toEqual([])
    disposeAll(optimizers)
    m.dispose()
  })

  it('fft: a training state of host slots, saved and read back into a new model, gives the uninterrupted run’s next step; restoring puts no slot on the heap', async () => {
    const [straight, interrupted, resumed] = [model('fft'), model('fft'), model('fft')]
    const optimizers = [straight, interrupted].map((m) => createModelOptimizers(m, rates))
    for (const windows of batches.slice(0, 2)) optimizers.forEach((o, k) => trainStep([straight, interrupted][k], o, windows, logProb))
    // the interrupted run stops here and keeps its state as bytes, the way a training job does
    const state: TrainingState = {
      epoch: 1,
      epochs: [],
      best: { metric: 0, epoch: 1, validation: { hr10: 0, ndcg10: 0, users: 0 } },
      rngState: 0,
      dropoutCalls: interrupted.params.dropoutCalls,
      dataFingerprint: 'host-adam-test',
      params: interrupted.params.snapshot(),
      bestParams: interrupted.params.snapshot(),
      optimizers: {},
    }
    for (const [group, o] of Object.entries(optimizers[1])) state.optimizers[group as keyof typeof state.optimizers] = await optimizerSlots(o!)
    disposeAll(optimizers[1])
    interrupted.dispose()
    const saved = parseTrainingState(serializeTrainingState(state))
    // every variable of a group has its m and v, in the group's order
    for (const group of resumed.params.groups()) {
      const variables = resumed.params.entries().filter(([, v]) => resumed.params.groupOf(v.name) === group)
      expect(saved.optimizers[group]!.slots, group).toHaveLength(2 * variables.length)
      expect(saved.optimizers[group]!.iterations).toBe(2)
    }
    resumed.params.restore(saved.params)
    resumed.params.dropoutCalls = saved.dropoutCalls
    const carried = createModelOptimizers(resumed, rates)
    const bytes = tf.memory().numBytes
    for (const [group, o] of Object.entries(carried)) await restoreOptimizerSlots(o!, saved.optimizers[group as keyof typeof saved.optimizers]!)
    expect(tf.memory().numBytes).toBe(bytes)
    const before = resumed.params.snapshot()
    const losses = [trainStep(straight, optimizers[0], batches[2], logProb), trainStep(resumed, carried, batches[2], logProb)]
    expect(losses[1]).toBe(losses[0])
    expect(worstRelative(resumed.params.snapshot(), straight.params.snapshot())).toBe(0)
    // and the step moved the weights (a run that did not step would also "match" a broken restore)
    expect(worstRelative(resumed.params.snapshot(), before)).toBeGreaterThan(1e-4)
    disposeAll(optimizers[0])
    disposeAll(carried)
    straight.dispose()
    resumed.dispose()
  })

  it('fft through train(): a run resumed from its first epoch’s serialised state ends where the uninterrupted run does', async () => {
    const options = { ...rates, maxEpochs: 2, batchSize: 8, patience: 5, seed: 3 }
    const [straight, interrupted, resumed] = [model('fft'), model('fft'), model('fft')]
    // the trainer picks HostAdam from the descriptor, and checkpoints and resumes through its host slots
    const exported = vi.spyOn(HostAdam.prototype, 'exportSlots')
    const imported = vi.spyOn(HostAdam.prototype, 'importSlots')
    try {
      const uninterrupted = await train(straight, data, options)
      let afterFirst: Uint8Array | undefined
      await train(interrupted, data, options, {
        onCheckpoint: (state) => {
          afterFirst ??= serializeTrainingState(state)
        },
      })
      const carriedOn = await train(resumed, data, options, { resumeFrom: parseTrainingState(afterFirst!) })
      expect(carriedOn.epochs.map((e) => e.epoch)).toEqual([1, 2])
      expect(carriedOn.epochs[1].trainLoss).toBe(uninterrupted.epochs[1].trainLoss)
      expect(worstRelative(resumed.params.snapshot(), straight.params.snapshot())).toBe(0)
      expect(Array.from(carriedOn.itemMatrix)).toEqual(Array.from(uninterrupted.itemMatrix))
      expect(exported).toHaveBeenCalled()
      expect(imported).toHaveBeenCalledTimes(resumed.params.groups().length)
    } finally {
      exported.mockRestore()
      imported.mockRestore()
      for (const m of [straight, interrupted, resumed]) m.dispose()
    }
  })
})

// Cached IISAN trained on two threads (issue 12; packages/model/src/san-threads.ts) against the
// same run on one: the step's distinct items split between the threads, the loss over all of them
// on the step's thread. Tiny random states (text d 12, image d 8, 4 layers), some items without
// an image or a title so the learned missing states train too; on wasm and cpu.
// These runs are about the tfjs SAN threads: the SAN's training pass stays on tfjs here (where
// ONNX Runtime loads it would otherwise take the step; test/san-onnx-training.test.ts covers that).
process.env.BACKBONE_RUNTIME = 'tfjs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  IisanItemEncoder,
  SequentialRecommender,
  createOptimizers,
  getMethod,
  initBackend,
  logProbabilities,
  readCheckpoint,
  saveCheckpoint,
  tf,
  train,
  trainStep,
  type CachedStates,
  type MethodInputs,
  type TrainingState,
} from '@iisan/model'
import { randomModalityStates, randomProtocol } from './helpers/random-states.ts'

const ITEMS = 40
const data = randomProtocol(ITEMS, 11)
// 40 windows in batches of 8: one epoch is five steps
const OPTIONS = { maxEpochs: 1, batchSize: 8, patience: 3, seed: 2, lrItem: 1e-3, lrUser: 1e-3, lrTextEncoder: 1e-3, lrImageEncoder: 1e-3, lrTextAdapters: 1e-3, lrImageAdapters: 1e-3 }

const states = (L: number, d: number, seed: number, absent: (item: number) => boolean) => randomModalityStates(ITEMS, L, d, seed, absent)

function inputs(): MethodInputs {
  const cached: CachedStates = { text: states(4, 12, 7, (i) => i % 13 === 0), image: states(4, 8, 8, (i) => i % 5 === 0) }
  return { states: cached }
}

function model(trainThreads: number): SequentialRecommender {
  const method = getMethod('iisan')
  const given = inputs()
  const config = method.modelConfig(data.numItems, { embeddingDim: 16, numBlocks: 1, numHeads: 2, maxSeqLen: 5, dropout: 0.2, seed: 4, reduction: 4, trainThreads }, given)
  return new SequentialRecommender(config, given)
}

interface Run {
  initial: Map<string, { shape: number[]; values: Float32Array }>
  losses: number[]
  state: TrainingState
  model: SequentialRecommender
}

async function oneEpoch(trainThreads: number): Promise<Run> {
  const m = model(trainThreads)
  const initial = m.params.snapshot()
  const losses: number[] = []
  let state: TrainingState | undefined
  await train(m, data, OPTIONS, {
    onStep: (s) => {
      losses.push(s.loss)
    },
    onCheckpoint: (s) => {
      state = s
    },
  })
  return { initial, losses, state: state!, model: m }
}

const maxDifference = (a: Float32Array, b: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0)

beforeAll(async () => {
  await initBackend({ prefer: 'wasm' })
  await import('@tensorflow/tfjs-backend-cpu')
})

describe.each(['wasm', 'cpu'] as const)('two training threads on %s', (backend) => {
  let one: Run
  let two: Run

  beforeAll(async () => {
    await tf.setBackend(backend)
    await tf.ready()
    one = await oneEpoch(1)
    two = await oneEpoch(2)
  })

  afterAll(() => {
    one?.model.dispose()
    two?.model.dispose()
  })

  it('the threaded model has a SAN thread', () => {
    expect((one.model.itemEncoder as IisanItemEncoder).trainingThreads).toBeNull()
    expect((two.model.itemEncoder as IisanItemEncoder).trainingThreads?.count).toBe(1)
  })

  it('five steps from one seed: the same losses within 1e-5', () => {
    expect(one.losses).toHaveLength(5)
    expect(two.losses).toHaveLength(5)
    two.losses.forEach((loss, i) => expect(Math.abs(loss - one.losses[i])).toBeLessThan(1e-5))
    // the losses move: the steps trained something
    expect(new Set(one.losses.map((l) => l.toFixed(6))).size).toBeGreaterThan(1)
  })

  it('the checkpoint after the threaded steps holds the parameters and Adam state of one thread', () => {
    expect([...two.state.params.keys()]).toEqual([...one.state.params.keys()])
    for (const [name, { values }] of one.state.params) expect(maxDifference(two.state.params.get(name)!.values, values), name).toBeLessThan(1e-4)
    for (const [group, slots] of Object.entries(one.state.optimizers)) {
      const threaded = two.state.optimizers[group as keyof typeof two.state.optimizers]!
      expect(threaded.iterations).toBe(slots.iterations)
      expect(threaded.slots).toHaveLength(slots.slots.length)
      // the second moments are the squares of gradients: compare each slot on its own scale
      slots.slots.forEach((s, i) => {
        const scale = Math.max(1e-12, ...s.values.map(Math.abs))
        expect(maxDifference(threaded.slots[i].values, s.values) / scale, `${group} slot ${i}`).toBeLessThan(1e-3)
      })
    }
    // the missing-image stand-in trained (some items lack an image), and as much on two threads
    expect(two.state.params.get('san.missing.image')!.values).not.toEqual(two.initial.get('san.missing.image')!.values)
  })

  it('a checkpoint written after threaded training is the step thread\'s parameters', () => {
    const { values } = readCheckpoint(saveCheckpoint(two.model.params, two.model.config))
    for (const [name, v] of two.model.params.snapshot()) expect(values.get(name)!.values).toEqual(v.values)
  })

  it('a threaded run resumed from its checkpoint trains on as one thread does without stopping', async () => {
    const epochs = { ...OPTIONS, maxEpochs: 2 }
    const uninterrupted = model(1)
    const interrupted = model(2)
    const resumed = model(2)
    try {
      const straight = await train(uninterrupted, data, epochs)
      let afterFirst: TrainingState | undefined
      await train(interrupted, data, epochs, {
        onCheckpoint: (s) => {
          afterFirst ??= s
        },
      })
      expect(afterFirst!.epoch).toBe(1)
      const carriedOn = await train(resumed, data, epochs, { resumeFrom: afterFirst })
      expect(carriedOn.epochs).toHaveLength(2)
      expect(Math.abs(carriedOn.epochs[1].trainLoss - straight.epochs[1].trainLoss)).toBeLessThan(1e-5)
      expect(maxDifference(carriedOn.itemMatrix, straight.itemMatrix)).toBeLessThan(1e-4)
    } finally {
      for (const m of [uninterrupted, interrupted, resumed]) m.dispose()
    }
  })

  it('a stopped SAN thread fails the step with a clear error', async () => {
    const m = model(2)
    try {
      const optimizers = createOptimizers(OPTIONS, m.params.groups())
      const logProb = logProbabilities(data.trainCounts)
      const batch = data.trainWindows.slice(0, 8)
      expect(Number.isFinite(trainStep(m, optimizers, batch, logProb))).toBe(true)
      const [worker] = (m.itemEncoder as IisanItemEncoder).trainingThreads!.workers
      await worker.terminate()
      expect(() => trainStep(m, optimizers, batch, logProb)).toThrow(/SAN training thread 1 stopped/)
    } finally {
      m.dispose()
    }
  })
})

// Training loop: Adam with the spec's two learning-rate groups, validation NDCG@10 after every
// epoch, early stopping that keeps the best epoch's weights, test metrics at the end.
import { createHash } from 'node:crypto'
import * as tf from '@tensorflow/tfjs-core'
import type { ProtocolData } from './data.ts'
import { evaluateRanking } from './evaluate.ts'
import { logProbabilities } from './loss.ts'
import type { RankingMetrics } from './metrics.ts'
import type { ParamGroup } from './params.ts'
import type { SequentialRecommender } from './recommender.ts'
import { optimizerSlots, restoreOptimizerSlots, type EpochSummary, type TrainingState } from './training-state.ts'

export interface TrainOptions {
  maxEpochs: number
  batchSize: number
  /** learning rate of the item side (side network / ID table) */
  lrItem: number
  /** learning rate of the user encoder and fusion */
  lrUser: number
  /** epochs without a better validation NDCG@10 before stopping */
  patience: number
  seed: number
}

/**
 * The paper's optimisation settings. Patience is ours: with these learning rates validation
 * NDCG@10 dips for ~10 epochs after the first two before climbing for another 40 (ID-SASRec on
 * Scientific), so a patience of 5 stops in the dip.
 */
export const PAPER_TRAINING: TrainOptions = { maxEpochs: 200, batchSize: 64, lrItem: 1e-4, lrUser: 2e-4, patience: 10, seed: 42 }

/** One finished epoch: its training loss, validation metrics and timings. */
export type EpochReport = EpochSummary

export interface StepReport {
  epoch: number
  step: number
  stepsPerEpoch: number
  loss: number
}

export interface TrainHooks {
  onStep?(report: StepReport): void | Promise<void>
  onEpoch?(report: EpochReport): void | Promise<void>
  /** Polled between steps; returning true stops training and throws TrainingCancelled. */
  shouldCancel?(): boolean | Promise<boolean>
  /** After every epoch (and its validation): the state to resume from should the run stop. */
  onCheckpoint?(state: TrainingState): void | Promise<void>
  /** Carry on from this state (an earlier run's last checkpoint) instead of from epoch 1. */
  resumeFrom?: TrainingState
}

/** The state to resume from was taken on other data or settings. */
export class TrainingStateMismatch extends Error {
  constructor() {
    super('the training state was taken on other data or settings')
    this.name = 'TrainingStateMismatch'
  }
}

/** The loss stopped being a number: the learning rate is too high for this data. */
export class TrainingDiverged extends Error {
  constructor(epoch: number, step: number) {
    super(`training diverged: the loss is not finite at epoch ${epoch}, step ${step} (lower the learning rates)`)
    this.name = 'TrainingDiverged'
  }
}

export class TrainingCancelled extends Error {
  constructor() {
    super('training cancelled')
    this.name = 'TrainingCancelled'
  }
}

export interface TrainResult {
  epochs: EpochReport[]
  bestEpoch: number
  validation: RankingMetrics
  test: RankingMetrics
  /** mean wall time of the training part of an epoch (without evaluation) */
  secondsPerEpoch: number
  /** highest resident memory seen during this training run (sampled every step and evaluation) */
  peakRssMb: number
  trainableParams: number
  /** [N+1, D] item embeddings of the best model, row 0 = padding */
  itemMatrix: Float32Array
}

export async function train(
  model: SequentialRecommender,
  data: ProtocolData,
  options: TrainOptions = PAPER_TRAINING,
  hooks: TrainHooks = {},
): Promise<TrainResult> {
  if (data.trainWindows.length === 0) throw new Error('no training sequences: no user has enough interactions')
  const optimizers = createOptimizers(options)
  // the process's maxRSS would carry the peak of every earlier job in a long-lived worker
  let peakRss = process.memoryUsage().rss
  const sampleRss = () => {
    peakRss = Math.max(peakRss, process.memoryUsage().rss)
  }
  const logProb = logProbabilities(data.trainCounts)
  const random = new Mulberry32(options.seed)
  const stepsPerEpoch = Math.ceil(data.trainWindows.length / options.batchSize)
  const dataFingerprint = protocolFingerprint(data, options)
  const epochs: EpochReport[] = []
  let best = { ndcg: -1, epoch: 0, snapshot: model.params.snapshot(), validation: { hr10: 0, ndcg10: 0, users: 0 } }
  let firstEpoch = 1

  try {
    if (hooks.resumeFrom) {
      const state = hooks.resumeFrom
      if (state.dataFingerprint !== dataFingerprint) throw new TrainingStateMismatch()
      model.params.restore(state.params)
      model.params.dropoutCalls = state.dropoutCalls
      for (const group of ['item', 'user'] as const) await restoreOptimizerSlots(optimizers[group], state.optimizers[group])
      random.state = state.rngState
      epochs.push(...state.epochs)
      best = { ndcg: state.best.metric, epoch: state.best.epoch, snapshot: state.bestParams, validation: state.best.validation }
      firstEpoch = state.epoch + 1
    }
    for (let epoch = firstEpoch; epoch <= options.maxEpochs; epoch++) {
      // a run resumed after its last epoch (or after early stopping) has nothing left to do
      if (epoch - best.epoch > options.patience) break
      const started = performance.now()
      const order = shuffled(data.trainWindows.length, () => random.next())
      let lossSum = 0
      for (let step = 0; step < stepsPerEpoch; step++) {
        if (await hooks.shouldCancel?.()) throw new TrainingCancelled()
        const batch = order.slice(step * options.batchSize, (step + 1) * options.batchSize).map((u) => data.trainWindows[u])
        const loss = trainStep(model, optimizers, batch, logProb)
        if (!Number.isFinite(loss)) throw new TrainingDiverged(epoch, step + 1)
        lossSum += loss
        sampleRss()
        await hooks.onStep?.({ epoch, step: step + 1, stepsPerEpoch, loss })
        // Let timers run (queue lock renewal, progress, signals) between steps.
        await new Promise((resolve) => setImmediate(resolve))
      }
      const trainSeconds = (performance.now() - started) / 1000
      const evalStarted = performance.now()
      const validation = await withItemMatrix(model, (m) => evaluateRanking(model, data.validation, m))
      sampleRss()
      const report: EpochReport = {
        epoch,
        trainLoss: lossSum / stepsPerEpoch,
        validation,
        seconds: trainSeconds,
        evalSeconds: (performance.now() - evalStarted) / 1000,
        stepsPerSecond: stepsPerEpoch / trainSeconds,
      }
      epochs.push(report)
      await hooks.onEpoch?.(report)
      const improved = validation.ndcg10 > best.ndcg
      if (improved) best = { ndcg: validation.ndcg10, epoch, snapshot: model.params.snapshot(), validation }
      if (hooks.onCheckpoint) {
        const state: TrainingState = {
          epoch,
          epochs: [...epochs],
          best: { metric: best.ndcg, epoch: best.epoch, validation: best.validation },
          rngState: random.state,
          dropoutCalls: model.params.dropoutCalls,
          dataFingerprint,
          params: improved ? best.snapshot : model.params.snapshot(),
          bestParams: best.snapshot,
          optimizers: { item: await optimizerSlots(optimizers.item), user: await optimizerSlots(optimizers.user) },
        }
        await hooks.onCheckpoint(state)
      }
      if (!improved && epoch - best.epoch >= options.patience) break
    }
  } finally {
    for (const optimizer of Object.values(optimizers)) optimizer.dispose()
  }

  model.params.restore(best.snapshot)
  const itemMatrixTensor = model.itemMatrix()
  const test = await evaluateRanking(model, data.test, itemMatrixTensor)
  sampleRss()
  const itemMatrix = itemMatrixTensor.dataSync() as Float32Array
  itemMatrixTensor.dispose()
  return {
    epochs,
    bestEpoch: best.epoch,
    validation: best.validation,
    test,
    secondsPerEpoch: epochs.reduce((s, e) => s + e.seconds, 0) / Math.max(1, epochs.length),
    peakRssMb: peakRss / 2 ** 20,
    trainableParams: model.params.count(),
    itemMatrix,
  }
}

/**
 * What a training state depends on besides the model: the windows, the candidate items and the
 * optimisation settings. Items added to a dataset after a crash change it, and such a state is
 * not resumed.
 */
export function protocolFingerprint(data: ProtocolData, options: TrainOptions): string {
  const hash = createHash('sha256')
  hash.update(JSON.stringify({ numItems: data.numItems, windows: data.trainWindows.length, validation: data.validation.length, options }))
  for (const window of data.trainWindows) hash.update(new Uint8Array(window.buffer, window.byteOffset, window.byteLength))
  hash.update(data.itemKeys.join('\n'))
  return hash.digest('hex')
}

/** One Adam step on a batch of windows; returns the loss. Every intermediate tensor is freed. */
export function trainStep(
  model: SequentialRecommender,
  optimizers: Record<ParamGroup, tf.Optimizer>,
  windows: Int32Array[],
  logProb: Float32Array,
): number {
  return tf.tidy(() => {
    const { value, grads } = tf.variableGrads(() => model.loss(windows, logProb))
    const byGroup: Record<ParamGroup, tf.NamedTensorMap> = { item: {}, user: {} }
    for (const [name, grad] of Object.entries(grads)) {
      const group = model.params.groupOf(name)
      if (group) byGroup[group][name] = grad
    }
    for (const group of ['item', 'user'] as const) optimizers[group].applyGradients(byGroup[group])
    return value.dataSync()[0]
  })
}

async function withItemMatrix<R>(model: SequentialRecommender, use: (matrix: tf.Tensor2D) => Promise<R>): Promise<R> {
  const matrix = model.itemMatrix()
  try {
    return await use(matrix)
  } finally {
    matrix.dispose()
  }
}

/** Adam per learning-rate group, with PyTorch's ε = 1e-8 (tfjs defaults to 1e-7). */
export function createOptimizers(options: Pick<TrainOptions, 'lrItem' | 'lrUser'>): Record<ParamGroup, tf.Optimizer> {
  return { item: tf.train.adam(options.lrItem, 0.9, 0.999, 1e-8), user: tf.train.adam(options.lrUser, 0.9, 0.999, 1e-8) }
}

/** A small seeded generator whose whole state is one integer (so a training state can carry it). */
export class Mulberry32 {
  state: number
  constructor(seed: number) {
    this.state = seed >>> 0
  }

  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0
    let t = this.state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export function mulberry32(seed: number): () => number {
  const generator = new Mulberry32(seed)
  return () => generator.next()
}

function shuffled(n: number, random: () => number): number[] {
  const order = Array.from({ length: n }, (_, i) => i)
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    ;[order[i], order[j]] = [order[j], order[i]]
  }
  return order
}

// Training loop: Adam with the spec's two learning-rate groups, validation NDCG@10 after every
// epoch, early stopping that keeps the best epoch's weights, test metrics at the end.
import { createHash } from 'node:crypto'
import * as tf from '@tensorflow/tfjs-core'
import type { ProtocolData } from './data.ts'
import { evaluateRanking } from './evaluate.ts'
import { HostAdam } from './host-adam.ts'
import { logProbabilities } from './loss.ts'
import type { RankingMetrics } from './metrics.ts'
import type { OptimizerSlotPlace } from './methods/method.ts'
import { getMethod } from './methods/registry.ts'
import type { ParamGroup, Params } from './params.ts'
import type { SequentialRecommender } from './recommender.ts'
import { optimizerSlots, restoreOptimizerSlots, type EpochSummary, type TrainingState } from './training-state.ts'

/** The learning rate of each parameter group (see ParamGroup for who is in which). */
export interface LearningRates {
  /** ID-SASRec's item-ID table */
  lrItem: number
  /** "recsys": the user encoder, the P projections, the inter tower's F, text and inter gates, the fusion */
  lrUser: number
  /** IISAN: the text tower's F */
  lrTextEncoder: number
  /** IISAN: the image tower's F and gates */
  lrImageEncoder: number
  /** IISAN: the text tower's SANBs */
  lrTextAdapters: number
  /** IISAN: the image and inter towers' SANBs */
  lrImageAdapters: number
}

/** Which validation metric picks the epoch whose weights are kept, and decides early stopping. */
export type SelectionMetric = 'hr10' | 'ndcg10'

export interface TrainOptions extends LearningRates {
  maxEpochs: number
  batchSize: number
  /** epochs in a row without a better validation `selectBy` before stopping */
  patience: number
  selectBy: SelectionMetric
  seed: number
}

/**
 * The authors' settings (Code_Cached: run.py's five optimiser groups and its model selection):
 * the best validation HR@10 is kept, training stops after 11 epochs in a row without a better
 * one, and runs at most 100 epochs.
 */
export const PAPER_TRAINING: TrainOptions = {
  maxEpochs: 100,
  batchSize: 64,
  lrItem: 1e-4,
  lrUser: 2e-4,
  lrTextEncoder: 5e-5,
  lrImageEncoder: 1e-4,
  lrTextAdapters: 1e-4,
  lrImageAdapters: 1e-4,
  patience: 11,
  selectBy: 'hr10',
  seed: 42,
}

/** The config key of each group's learning rate (what the API's method list shows per group). */
export const RATE_OF_GROUP: Readonly<Record<ParamGroup, keyof LearningRates>> = {
  itemIds: 'lrItem',
  recsys: 'lrUser',
  textEncoder: 'lrTextEncoder',
  imageEncoder: 'lrImageEncoder',
  textAdapters: 'lrTextAdapters',
  imageAdapters: 'lrImageAdapters',
}

export function learningRateOf(group: ParamGroup, rates: LearningRates): number {
  return rates[RATE_OF_GROUP[group]]
}

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

/** Anything not given is the authors' (PAPER_TRAINING). */
export async function train(model: SequentialRecommender, data: ProtocolData, given: Partial<TrainOptions> = {}, hooks: TrainHooks = {}): Promise<TrainResult> {
  const options: TrainOptions = { ...PAPER_TRAINING, ...given }
  if (data.trainWindows.length === 0) throw new Error('no training sequences: no user has enough interactions')
  const optimizers = createModelOptimizers(model, options)
  await model.prepareTraining()
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
  const { selectBy } = options
  let best = { metric: -1, epoch: 0, snapshot: model.params.snapshot(), validation: { hr10: 0, ndcg10: 0, users: 0 } }
  let firstEpoch = 1

  try {
    if (hooks.resumeFrom) {
      const state = hooks.resumeFrom
      if (state.dataFingerprint !== dataFingerprint) throw new TrainingStateMismatch()
      model.params.restore(state.params)
      model.params.dropoutCalls = state.dropoutCalls
      for (const [group, optimizer] of optimizerEntries(optimizers)) {
        const saved = state.optimizers[group]
        if (!saved) throw new TrainingStateMismatch()
        await restoreOptimizerSlots(optimizer, saved)
      }
      random.state = state.rngState
      epochs.push(...state.epochs)
      best = { metric: state.best.metric, epoch: state.best.epoch, snapshot: state.bestParams, validation: state.best.validation }
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
      const improved = validation[selectBy] > best.metric
      if (improved) best = { metric: validation[selectBy], epoch, snapshot: model.params.snapshot(), validation }
      if (hooks.onCheckpoint) {
        const state: TrainingState = {
          epoch,
          epochs: [...epochs],
          best: { metric: best.metric, epoch: best.epoch, validation: best.validation },
          rngState: random.state,
          dropoutCalls: model.params.dropoutCalls,
          dataFingerprint,
          params: improved ? best.snapshot : model.params.snapshot(),
          bestParams: best.snapshot,
          optimizers: Object.fromEntries(await Promise.all(optimizerEntries(optimizers).map(async ([group, o]) => [group, await optimizerSlots(o)] as const))),
        }
        await hooks.onCheckpoint(state)
      }
      if (!improved && epoch - best.epoch >= options.patience) break
    }
  } finally {
    for (const [, optimizer] of optimizerEntries(optimizers)) optimizer.dispose()
  }

  model.params.restore(best.snapshot)
  const itemMatrixTensor = await model.itemMatrixForInference()
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

/** One Adam per parameter group the model has. */
export type GroupOptimizers = Partial<Record<ParamGroup, tf.Optimizer>>

function optimizerEntries(optimizers: GroupOptimizers): [ParamGroup, tf.Optimizer][] {
  return Object.entries(optimizers) as [ParamGroup, tf.Optimizer][]
}

/**
 * One Adam step on a batch of windows; returns the loss. Every intermediate tensor is freed. The
 * gradients are SequentialRecommender.lossAndGrads' (one tape, or the item encoder's two passes).
 */
export function trainStep(model: SequentialRecommender, optimizers: GroupOptimizers, windows: Int32Array[], logProb: Float32Array): number {
  model.prepare(windows)
  return tf.tidy(() => {
    const { value, grads } = model.lossAndGrads(windows, logProb)
    applyGradients(model.params, optimizers, grads)
    return value.dataSync()[0]
  })
}

/**
 * Each parameter's gradient (keyed by variable name) to the optimiser of its group. tfjs' Adam
 * matches its slots to variables by position in the map it is given, so every group's map lists
 * all of the group's variables in the store's order, null for one without a gradient this step
 * (Adam skips it, as PyTorch skips a parameter whose grad is None): a batch that leaves a
 * parameter out (no item with an image) cannot shift the others onto its slots.
 */
export function applyGradients(params: Params, optimizers: GroupOptimizers, grads: tf.NamedTensorMap): void {
  const byGroup: Partial<Record<ParamGroup, Record<string, tf.Tensor | null>>> = {}
  for (const [, variable] of params.entries()) {
    const group = params.groupOf(variable.name)!
    ;(byGroup[group] ??= {})[variable.name] = grads[variable.name] ?? null
  }
  for (const [group, optimizer] of optimizerEntries(optimizers)) optimizer.applyGradients((byGroup[group] ?? {}) as tf.NamedTensorMap)
}

async function withItemMatrix<R>(model: SequentialRecommender, use: (matrix: tf.Tensor2D) => Promise<R>): Promise<R> {
  const matrix = await model.itemMatrixForInference()
  try {
    return await use(matrix)
  } finally {
    matrix.dispose()
  }
}

/**
 * Adam per learning-rate group the model has, with PyTorch's ε = 1e-8 (tfjs defaults to 1e-7):
 * StepwiseAdam with its slots on the tfjs heap, or HostAdam with them in host memory (same
 * numbers; see OptimizerSlotPlace for who uses which).
 */
export function createOptimizers(rates: LearningRates, groups: ParamGroup[], slots: OptimizerSlotPlace = 'heap'): GroupOptimizers {
  const adam = (rate: number) => (slots === 'host' ? new HostAdam(rate, 0.9, 0.999, 1e-8) : new StepwiseAdam(rate, 0.9, 0.999, 1e-8))
  return Object.fromEntries(groups.map((group) => [group, adam(learningRateOf(group, rates))]))
}

/** createOptimizers with the slots where the model's method asks for them (TrainingMethod.optimizerSlots). */
export function createModelOptimizers(model: SequentialRecommender, rates: LearningRates): GroupOptimizers {
  return createOptimizers(rates, model.params.groups(), getMethod(model.config.method).optimizerSlots ?? 'heap')
}

/** What StepwiseAdam reads of tfjs' Adam (private there). */
interface AdamState {
  accBeta1: tf.Variable
  accBeta2: tf.Variable
  accumulatedFirstMoment: { originalName: string; variable: tf.Variable }[]
  accumulatedSecondMoment: { originalName: string; variable: tf.Variable }[]
}

/**
 * tfjs' Adam, one variable at a time with each temporary freed as soon as it is used. tf.train.adam
 * runs the whole update in one tidy, so the ≈ 12 temporaries of every variable live until the
 * last variable is done: twelve copies of the weights, 5 GB for FFT on BERT-base, more than the
 * wasm heap. Here at most 3 of one variable are (BERT's word embeddings: 90 MB each). The same
 * operations in the same order, so the same numbers, and the same slots (getWeights /
 * setWeights, training states).
 */
export class StepwiseAdam extends tf.AdamOptimizer {
  override applyGradients(variableGradients: Parameters<tf.AdamOptimizer['applyGradients']>[0]): void {
    const state = this as unknown as AdamState
    const names = Array.isArray(variableGradients) ? variableGradients.map((v) => v.name) : Object.keys(variableGradients)
    const [oneMinusAccBeta1, oneMinusAccBeta2] = tf.tidy(() => [tf.sub(1, state.accBeta1), tf.sub(1, state.accBeta2)])
    names.forEach((name, i) =>
      tf.tidy(() => {
        const value = tf.engine().registeredVariables[name]
        state.accumulatedFirstMoment[i] ??= { originalName: `${name}/m`, variable: tf.tidy(() => tf.zerosLike(value).variable(false)) }
        state.accumulatedSecondMoment[i] ??= { originalName: `${name}/v`, variable: tf.tidy(() => tf.zerosLike(value).variable(false)) }
        const gradient = Array.isArray(variableGradients) ? variableGradients[i].tensor : variableGradients[name]
        if (gradient == null) return
        const firstMoment = state.accumulatedFirstMoment[i].variable
        const secondMoment = state.accumulatedSecondMoment[i].variable
        // each new moment replaces the old one at once (the slot keeps the tensor's buffer)
        const m1 = tf.mul(firstMoment, this.beta1)
        const g1 = tf.mul(gradient, 1 - this.beta1)
        const newFirstMoment = tf.add(m1, g1)
        tf.dispose([m1, g1])
        firstMoment.assign(newFirstMoment)
        const square = tf.square(gradient)
        const g2 = tf.mul(square, 1 - this.beta2)
        square.dispose()
        const v1 = tf.mul(secondMoment, this.beta2)
        const newSecondMoment = tf.add(v1, g2)
        tf.dispose([g2, v1])
        secondMoment.assign(newSecondMoment)
        const mHat = tf.div(newFirstMoment, oneMinusAccBeta1)
        const vHat = tf.div(newSecondMoment, oneMinusAccBeta2)
        const root = tf.sqrt(vHat)
        vHat.dispose()
        const denominator = tf.add(root, this.epsilon)
        root.dispose()
        const ratio = tf.div(mHat, denominator)
        tf.dispose([mHat, denominator])
        const update = tf.mul(ratio, -this.learningRate)
        ratio.dispose()
        const newValue = tf.add(update, value)
        update.dispose()
        value.assign(newValue)
      }),
    )
    tf.dispose([oneMinusAccBeta1, oneMinusAccBeta2])
    tf.tidy(() => {
      state.accBeta1.assign(tf.mul(state.accBeta1, this.beta1))
      state.accBeta2.assign(tf.mul(state.accBeta2, this.beta2))
    })
    this.incrementIterations()
  }
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

// A training run's state at an epoch boundary, as bytes: what a crashed job needs to carry on as if
// it had never stopped. Parameters, the best epoch's parameters, both Adam optimisers' slots, the
// shuffling RNG and the dropout counter; resuming from it gives the weights an uninterrupted run
// with the same seed reaches.
import * as tf from '@tensorflow/tfjs-core'
import { parseSafetensors, serializeSafetensors, toFloat32, type TensorToWrite } from '@iisan/safetensors'
import { HostAdam } from './host-adam.ts'
import type { RankingMetrics } from './metrics.ts'
import type { ParamGroup } from './params.ts'

export const TRAINING_STATE_FORMAT = 'iisan-platform/training-state-v1'

type HostValues = Map<string, { shape: number[]; values: Float32Array }>

export interface EpochSummary {
  epoch: number
  trainLoss: number
  validation: RankingMetrics
  seconds: number
  evalSeconds: number
  stepsPerSecond: number
}

/** What the trainer knows besides tensors. Plain JSON. */
export interface TrainerProgress {
  /** epochs completed */
  epoch: number
  epochs: EpochSummary[]
  best: { metric: number; epoch: number; validation: RankingMetrics }
  /** state of the shuffling generator after the last completed epoch */
  rngState: number
  dropoutCalls: number
  /** identifies the data the run was on: a checkpoint of other data must not be resumed */
  dataFingerprint: string
}

export interface TrainingState extends TrainerProgress {
  params: HostValues
  bestParams: HostValues
  optimizers: Partial<Record<ParamGroup, OptimizerSlots>>
}

/**
 * Adam's state: the step count, the running β powers and one m and one v per variable, in order.
 * StepwiseAdam (slots on the tfjs heap) and HostAdam (slots in host memory) both save and read this
 * layout, so the file format does not say which one wrote it.
 */
export interface OptimizerSlots {
  iterations: number
  accBeta1: number
  accBeta2: number
  /** first moments then second moments, in the order the optimiser created them */
  slots: { shape: number[]; values: Float32Array }[]
}

// tfjs keeps the running β powers private; setWeights recomputes them with pow(), which differs
// from the repeated products in the last float32 bit, so we carry the exact values across.
interface AdamInternals {
  accBeta1: tf.Variable
  accBeta2: tf.Variable
}

export async function optimizerSlots(optimizer: tf.Optimizer): Promise<OptimizerSlots> {
  // its slots are already host arrays: getWeights would copy all of them onto the heap at once
  if (optimizer instanceof HostAdam) return optimizer.exportSlots()
  const [iterations, ...weights] = await optimizer.getWeights()
  const count = (await iterations.tensor.data())[0]
  iterations.tensor.dispose()
  const internals = optimizer as unknown as AdamInternals
  return {
    iterations: count,
    accBeta1: internals.accBeta1.dataSync()[0],
    accBeta2: internals.accBeta2.dataSync()[0],
    slots: weights.map((w) => ({ shape: w.tensor.shape, values: w.tensor.dataSync() as Float32Array })),
  }
}

export async function restoreOptimizerSlots(optimizer: tf.Optimizer, saved: OptimizerSlots): Promise<void> {
  if (optimizer instanceof HostAdam) return optimizer.importSlots(saved)
  const tensors = [tf.scalar(saved.iterations, 'int32'), ...saved.slots.map((s) => tf.tensor(s.values, s.shape))]
  // names are only labels in tfjs' Adam: slots are matched to variables by position
  await optimizer.setWeights(tensors.map((tensor, i) => ({ name: `slot${i}`, tensor })))
  tf.dispose(tensors)
  const internals = optimizer as unknown as AdamInternals
  internals.accBeta1.assign(tf.scalar(saved.accBeta1))
  internals.accBeta2.assign(tf.scalar(saved.accBeta2))
}

export function serializeTrainingState(state: TrainingState): Uint8Array {
  const tensors: Record<string, TensorToWrite> = {}
  const put = (name: string, shape: number[], data: Float32Array) => {
    tensors[name] = { dtype: 'F32', shape, data }
  }
  for (const [name, v] of state.params) put(`param/${name}`, v.shape, v.values)
  // after an improving epoch the best parameters are the current ones: store them once
  const bestIsCurrent = state.bestParams === state.params
  if (!bestIsCurrent) for (const [name, v] of state.bestParams) put(`best/${name}`, v.shape, v.values)
  const optimizers: Record<string, Omit<OptimizerSlots, 'slots'> & { slots: number }> = {}
  for (const [group, o] of Object.entries(state.optimizers)) {
    o.slots.forEach((s, i) => put(`adam/${group}/${i}`, s.shape, s.values))
    optimizers[group] = { iterations: o.iterations, accBeta1: o.accBeta1, accBeta2: o.accBeta2, slots: o.slots.length }
  }
  const progress: TrainerProgress = {
    epoch: state.epoch,
    epochs: state.epochs,
    best: state.best,
    rngState: state.rngState,
    dropoutCalls: state.dropoutCalls,
    dataFingerprint: state.dataFingerprint,
  }
  return serializeSafetensors(tensors, {
    format: TRAINING_STATE_FORMAT,
    progress: JSON.stringify(progress),
    optimizers: JSON.stringify(optimizers),
    bestIsCurrent: String(bestIsCurrent),
  })
}

export function parseTrainingState(bytes: Uint8Array): TrainingState {
  const { metadata, tensors } = parseSafetensors(bytes)
  if (metadata.format !== TRAINING_STATE_FORMAT) throw new Error(`not a training state (format ${metadata.format ?? 'missing'})`)
  const progress = JSON.parse(metadata.progress) as TrainerProgress
  const optimizerMeta = JSON.parse(metadata.optimizers) as Record<ParamGroup, Omit<OptimizerSlots, 'slots'> & { slots: number }>
  const params: HostValues = new Map()
  const bestParams: HostValues = new Map()
  const tensor = (name: string) => {
    const entry = tensors.get(name)
    if (!entry) throw new Error(`training state lacks ${name}`)
    return { shape: entry.shape, values: toFloat32(entry) }
  }
  for (const name of tensors.keys()) {
    if (name.startsWith('param/')) params.set(name.slice(6), tensor(name))
    else if (name.startsWith('best/')) bestParams.set(name.slice(5), tensor(name))
  }
  const optimizers: Partial<Record<ParamGroup, OptimizerSlots>> = {}
  for (const [group, o] of Object.entries(optimizerMeta) as [ParamGroup, (typeof optimizerMeta)[ParamGroup]][]) {
    optimizers[group] = { ...o, slots: Array.from({ length: o.slots }, (_, i) => tensor(`adam/${group}/${i}`)) }
  }
  return { ...progress, params, bestParams: metadata.bestIsCurrent === 'true' ? params : bestParams, optimizers }
}

// A sequential recommender = an item encoder + the SASRec user encoder, trained with the
// in-batch loss. One class for every method; the method (methods/registry.ts) decides only the
// item encoder.
import * as tf from '@tensorflow/tfjs-core'
import { spreadRows, type ItemEncoder } from './item-encoder.ts'
import { inBatchSoftmaxLoss, inBatchTargets, logPopularity, targetTensors, validRowsOnly } from './loss.ts'
import type { ModelConfigBase, MethodInputs } from './methods/method.ts'
import { getMethod } from './methods/registry.ts'
import { Params } from './params.ts'
import { UserEncoder } from './user-encoder.ts'

export { PAPER_IISAN, iisanConfig } from './methods/iisan.ts'
export { sasRecIdConfig, type SasRecIdConfig } from './methods/sasrec-id.ts'

/** Any method's model config: the user encoder, N, the seed, and the method's own part. */
export type RecommenderConfig = ModelConfigBase

/** The item side a config asks for; without inputs (serving), one that only restores a checkpoint. */
export function createItemEncoder(config: RecommenderConfig, params: Params, inputs?: MethodInputs): ItemEncoder {
  return getMethod(config.method).createItemEncoder(config, params, inputs)
}

export class SequentialRecommender {
  readonly params: Params
  readonly userEncoder: UserEncoder
  readonly itemEncoder: ItemEncoder

  constructor(
    readonly config: RecommenderConfig,
    inputs?: MethodInputs,
  ) {
    this.params = new Params(config.seed)
    this.itemEncoder = createItemEncoder(config, this.params, inputs)
    this.userEncoder = new UserEncoder(config, this.params)
  }

  get maxSeqLen(): number {
    return this.config.maxSeqLen
  }

  /** Training loss on B windows of T+1 ids. Call inside tf.variableGrads / tidy. */
  loss(windows: Int32Array[], logProb: Float32Array): tf.Scalar {
    return this.lossOf(windows, logProb, this.itemEncoder.embed(this.slotsOf(windows), true))
  }

  /**
   * A training step's loss and the gradients of every parameter it reaches (by variable name).
   * Call inside tidy. One tape over `loss`; or, for an item encoder with forwardForStep, two
   * passes with the same result: the tape over the user side with the items' embeddings a leaf
   * (the loss, the user side's gradients and dL/dE), then the item side's gradients from the
   * encoder's chunked pass 2.
   */
  lossAndGrads(windows: Int32Array[], logProb: Float32Array): { value: tf.Scalar; grads: tf.NamedTensorMap } {
    const slots = this.slotsOf(windows)
    const step = this.itemEncoder.forwardForStep?.(slots)
    if (!step) return tf.variableGrads(() => this.lossOf(windows, logProb, this.itemEncoder.embed(slots, true)))
    const variables = this.params.entries().map(([, v]) => v)
    const { value, grads } = tf.engine().gradients(() => this.lossOf(windows, logProb, spreadRows(step.unique, step.slot)), [step.unique, ...variables], undefined, true)
    const [dUnique, ...userGrads] = grads
    const named: tf.NamedTensorMap = {}
    variables.forEach((v, i) => {
      if (userGrads[i]) named[v.name] = userGrads[i]
    })
    for (const [name, grad] of Object.entries(step.backward(dUnique as tf.Tensor2D))) named[name] = named[name] ? tf.add(named[name], grad) : grad
    return { value, grads: named }
  }

  /** The in-batch loss from the windows' item embeddings [B·(T+1), D] (the slots of slotsOf). */
  private lossOf(windows: Int32Array[], logProb: Float32Array, candidateEmb: tf.Tensor2D): tf.Scalar {
    const B = windows.length
    const W = this.maxSeqLen + 1
    const T = this.maxSeqLen
    const D = this.config.embeddingDim
    const inputEmb = tf.slice(tf.reshape(candidateEmb, [B, W, D]), [0, 0, 0], [B, T, D]) as tf.Tensor3D
    const valid = tf.tensor2d(
      windows.map((w) => Array.from(w.subarray(0, T), (id) => (id !== 0 ? 1 : 0))),
      [B, T],
    )
    const states = tf.reshape(this.userEncoder.forward(inputEmb, valid, true), [B * T, D]) as tf.Tensor2D
    // Score only the rows that predict a real item (padding rows would be averaged out anyway).
    const targets = validRowsOnly(inBatchTargets(windows))
    const validStates = tf.gather(states, tf.tensor1d(targets.rowIndex, 'int32')) as tf.Tensor2D
    return inBatchSoftmaxLoss(validStates, candidateEmb, tf.tensor1d(logPopularity(this.slotsOf(windows), logProb)), targetTensors(targets))
  }

  /** B windows of T+1 ids → their ids in one row-major [B·(T+1)] array. */
  private slotsOf(windows: Int32Array[]): Int32Array {
    const W = this.maxSeqLen + 1
    const slots = new Int32Array(windows.length * W)
    windows.forEach((w, b) => slots.set(w, b * W))
    return slots
  }

  /**
   * User states for left-padded windows of T ids, from a precomputed item matrix [N+1, D]
   * (inference: no item-encoder work). Returns [n, D], the state after the last item.
   */
  userStates(windows: Int32Array[], itemMatrix: tf.Tensor2D): tf.Tensor2D {
    return tf.tidy(() => {
      const n = windows.length
      const T = this.maxSeqLen
      const ids = new Int32Array(n * T)
      windows.forEach((w, i) => ids.set(w, i * T))
      const emb = tf.reshape(tf.gather(itemMatrix, tf.tensor1d(ids, 'int32')), [n, T, this.config.embeddingDim]) as tf.Tensor3D
      const valid = tf.cast(tf.notEqual(tf.tensor2d(ids, [n, T], 'int32'), 0), 'float32') as tf.Tensor2D
      return this.userEncoder.lastStates(emb, valid)
    })
  }

  itemMatrix(): tf.Tensor2D {
    return tf.tidy(() => this.itemEncoder.embedAll())
  }

  /** itemMatrix on the item encoder's faster inference runtime where it has one (evaluations). */
  async itemMatrixForInference(): Promise<tf.Tensor2D> {
    return (await this.itemEncoder.embedAllOnRuntime?.()) ?? this.itemMatrix()
  }

  /** Before training: lets the item encoder move its training pass to a faster runtime (ItemEncoder.prepareTraining). */
  async prepareTraining(): Promise<void> {
    await this.itemEncoder.prepareTraining?.()
  }

  /** Before a training step's forward pass, outside the gradient tape: the item encoder's preparation for these windows. */
  prepare(windows: Int32Array[]): void {
    this.itemEncoder.prepare?.(this.slotsOf(windows))
  }

  dispose(): void {
    this.itemEncoder.dispose?.()
    this.params.dispose()
  }
}

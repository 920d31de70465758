// Adam whose two moment slots live in host memory (one Float32Array each per variable), not on
// the tfjs backend. Full fine-tuning of BERT-base + ViT-B/16 has 196 M weights: weights, gradients
// and Adam's m and v at 4 bytes each are 3.1 GB, and the wasm32 heap holds 4 GB in all, so with the
// slots on the heap FFT's second step (the first with slots) runs out of memory next to its
// activations. Here the heap holds only the weights, the step's gradients and activations, and one
// variable's new value at a time; the slots (1.6 GB for FFT) sit in ArrayBuffers outside it.
//
// The arithmetic is StepwiseAdam's (tfjs' Adam with PyTorch's ε), operation by operation in the
// same order, each result rounded to float32 with Math.fround as a float32 kernel rounds it: every
// operation is one IEEE +, ×, ÷ or √ of float32 values, which double precision followed by one
// rounding to float32 reproduces exactly. The running β powers are float32 repeated products, as
// tfjs keeps them. test/host-adam.test.ts compares it with StepwiseAdam on wasm and cpu.
import * as tf from '@tensorflow/tfjs-core'
import type { OptimizerSlots } from './training-state.ts'

const f32 = Math.fround

interface Slot {
  shape: number[]
  m: Float32Array
  v: Float32Array
}

export class HostAdam extends tf.Optimizer {
  static className = 'HostAdam'

  // tf.Optimizer answers instanceof by duck typing (any object with minimize and applyGradients),
  // and subclasses inherit that: without this, a StepwiseAdam would pass `instanceof HostAdam`
  static override [Symbol.hasInstance](instance: unknown): boolean {
    return typeof instance === 'object' && instance !== null && Object.prototype.isPrototypeOf.call(HostAdam.prototype, instance)
  }

  /** β1^t and β2^t after t steps, as float32 (tfjs' accBeta1 / accBeta2) */
  private accBeta1: number
  private accBeta2: number
  /**
   * By position in the gradient map, as tfjs' Adam matches its slots (trainer.applyGradients lists
   * every variable of the group in the same order each step, null where there is no gradient).
   */
  private slots: Slot[] = []

  constructor(
    readonly learningRate: number,
    readonly beta1 = 0.9,
    readonly beta2 = 0.999,
    readonly epsilon = 1e-8,
  ) {
    super()
    this.accBeta1 = f32(beta1)
    this.accBeta2 = f32(beta2)
  }

  /**
   * One variable at a time: read its gradient and weight to the host, update m and v in place,
   * write the new weight back with assign. The only tensor this creates is the new weight, freed
   * (replacing the old one) before the next variable starts.
   */
  override applyGradients(variableGradients: Parameters<tf.Optimizer['applyGradients']>[0]): void {
    const entries: [string, tf.Tensor | null][] = Array.isArray(variableGradients)
      ? variableGradients.map((v) => [v.name, v.tensor])
      : Object.entries(variableGradients)
    // the scalars StepwiseAdam builds as float32 tensors: 1 - β^t, (1 - β), -lr, ε, β
    const oneMinusAccBeta1 = f32(1 - this.accBeta1)
    const oneMinusAccBeta2 = f32(1 - this.accBeta2)
    const beta1 = f32(this.beta1)
    const beta2 = f32(this.beta2)
    const oneMinusBeta1 = f32(1 - this.beta1)
    const oneMinusBeta2 = f32(1 - this.beta2)
    const epsilon = f32(this.epsilon)
    const negativeRate = f32(-this.learningRate)
    entries.forEach(([name, gradient], i) => {
      const variable = tf.engine().registeredVariables[name]
      if (!variable) throw new Error(`HostAdam: no variable named ${JSON.stringify(name)}`)
      const slot = (this.slots[i] ??= { shape: variable.shape, m: new Float32Array(variable.size), v: new Float32Array(variable.size) })
      if (slot.m.length !== variable.size) throw new Error(`HostAdam: slot ${i} holds ${slot.m.length} values, variable ${name} has ${variable.size} (the gradient map changed order)`)
      if (gradient == null) return // no gradient this step: left alone, as PyTorch does
      const g = gradient.dataSync() as Float32Array
      const w = variable.dataSync() as Float32Array
      // a new array: on the cpu backend dataSync returns the tensor's own buffer
      const next = new Float32Array(w.length)
      const { m, v } = slot
      for (let j = 0; j < next.length; j++) {
        const gj = g[j]
        const mj = f32(f32(m[j] * beta1) + f32(gj * oneMinusBeta1))
        const vj = f32(f32(v[j] * beta2) + f32(f32(gj * gj) * oneMinusBeta2))
        m[j] = mj
        v[j] = vj
        const mHat = f32(mj / oneMinusAccBeta1)
        const vHat = f32(vj / oneMinusAccBeta2)
        const ratio = f32(mHat / f32(f32(Math.sqrt(vHat)) + epsilon))
        next[j] = f32(f32(ratio * negativeRate) + w[j])
      }
      const value = tf.tensor(next, variable.shape, 'float32')
      variable.assign(value)
      value.dispose()
    })
    this.accBeta1 = f32(this.accBeta1 * beta1)
    this.accBeta2 = f32(this.accBeta2 * beta2)
    this.incrementIterations()
  }

  /**
   * The slots in a training state's layout (training-state.ts): first moments then second
   * moments, by position. Copies, so a kept state does not change as training goes on.
   */
  exportSlots(): OptimizerSlots {
    return {
      iterations: this.iterations,
      accBeta1: this.accBeta1,
      accBeta2: this.accBeta2,
      slots: [...this.slots.map((s) => ({ shape: [...s.shape], values: s.m.slice() })), ...this.slots.map((s) => ({ shape: [...s.shape], values: s.v.slice() }))],
    }
  }

  /** The inverse of exportSlots (also reads a StepwiseAdam's saved slots: the layout is the same). */
  importSlots(saved: OptimizerSlots): void {
    if (saved.slots.length % 2 !== 0) throw new Error(`an Adam state holds an m and a v per variable; got ${saved.slots.length} slots`)
    const half = saved.slots.length / 2
    this.slots = saved.slots.slice(0, half).map((m, i) => {
      const v = saved.slots[half + i]
      if (m.values.length !== v.values.length) throw new Error(`Adam slot ${i}: m has ${m.values.length} values, v ${v.values.length}`)
      return { shape: [...m.shape], m: m.values.slice(), v: v.values.slice() }
    })
    this.iterations_ = saved.iterations
    this.accBeta1 = saved.accBeta1
    this.accBeta2 = saved.accBeta2
  }

  override dispose(): void {
    this.slots = []
  }

  override getConfig(): tf.serialization.ConfigDict {
    return { learningRate: this.learningRate, beta1: this.beta1, beta2: this.beta2, epsilon: this.epsilon }
  }
}

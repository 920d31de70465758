// Named trainable parameters, their initialisers and learning-rate groups.
import * as tf from '@tensorflow/tfjs-core'

/**
 * Learning-rate groups. IISAN's five are the authors' (Code_Cached/run.py builds them from
 * parameter names; docs/ARCHITECTURE.md lists which of ours falls where):
 *   textEncoder   the text tower's F                                   5e-5
 *   imageEncoder  the image tower's F and gates                        1e-4
 *   textAdapters  the text tower's SANBs (+ our missing-text states)   1e-4
 *   imageAdapters the image and inter towers' SANBs (+ missing-image)  1e-4
 *   recsys        user encoder, P projections, the inter tower's F,
 *                 text and inter gates, fusion                         2e-4
 * ID-SASRec has two: its item-ID table (itemIds, 1e-4) and recsys (2e-4).
 */
export const PARAM_GROUPS = ['itemIds', 'textEncoder', 'imageEncoder', 'textAdapters', 'imageAdapters', 'recsys'] as const
export type ParamGroup = (typeof PARAM_GROUPS)[number]

/**
 * `torchLinear`: PyTorch's nn.Linear default, U(±1/√fan_in) for weight and bias alike (what the
 * authors' projections and fusion keep); `fanIn` is the layer's input width.
 */
export type Initialiser = 'xavier' | 'zeros' | 'ones' | { normalStd: number } | { torchLinear: number }

let instanceCounter = 0

/**
 * A model's parameters. tfjs registers variables by globally unique name, so each store prefixes
 * its names; `get`/`entries` use the short names that checkpoints store.
 */
export class Params {
  private readonly variables = new Map<string, { variable: tf.Variable; group: ParamGroup }>()
  private readonly prefix = `m${++instanceCounter}`
  private seed: number

  constructor(seed = 42) {
    this.seed = seed
  }

  /** dropout masks drawn so far: part of a resumable training state */
  dropoutCalls = 0

  /** A fresh seed for each dropout mask, derived from the model seed: runs are reproducible. */
  nextDropoutSeed(): number {
    return (this.seed * 1_000_003 + ++this.dropoutCalls) % 2 ** 31
  }

  add(name: string, shape: number[], init: Initialiser, group: ParamGroup): tf.Variable {
    if (this.variables.has(name)) throw new Error(`parameter ${name} defined twice`)
    const value = tf.tidy(() => initialValue(shape, init, this.seed++))
    const variable = tf.variable(value, true, `${this.prefix}/${name}`)
    value.dispose()
    this.variables.set(name, { variable, group })
    return variable
  }

  /** A [rows, cols] parameter, typed as such (models hold their parameters as typed fields). */
  matrix(name: string, shape: [number, number], init: Initialiser, group: ParamGroup): tf.Variable<tf.Rank.R2> {
    return this.add(name, shape, init, group) as tf.Variable<tf.Rank.R2>
  }

  /** A [n] parameter (biases, LayerNorm gains, gates). */
  vector(name: string, length: number, init: Initialiser, group: ParamGroup): tf.Variable<tf.Rank.R1> {
    return this.add(name, [length], init, group) as tf.Variable<tf.Rank.R1>
  }

  /**
   * Takes over a variable built elsewhere (a backbone weight loaded from a checkpoint, whose
   * initial value is not an initialiser of ours). The store disposes it with the rest.
   */
  adopt(name: string, variable: tf.Variable, group: ParamGroup): tf.Variable {
    if (this.variables.has(name)) throw new Error(`parameter ${name} defined twice`)
    this.variables.set(name, { variable, group })
    return variable
  }

  get(name: string): tf.Variable {
    const entry = this.variables.get(name)
    if (!entry) throw new Error(`unknown parameter ${name}`)
    return entry.variable
  }

  entries(): [string, tf.Variable][] {
    return [...this.variables].map(([name, { variable }]) => [name, variable])
  }

  /** The groups that have parameters, in a fixed order (PARAM_GROUPS'). */
  groups(): ParamGroup[] {
    const present = new Set([...this.variables.values()].map((e) => e.group))
    return PARAM_GROUPS.filter((g) => present.has(g))
  }

  /** Parameter names by group, e.g. to show which rate each parameter trains at. */
  namesByGroup(): Partial<Record<ParamGroup, string[]>> {
    const out: Partial<Record<ParamGroup, string[]>> = {}
    for (const [name, { group }] of this.variables) (out[group] ??= []).push(name)
    return out
  }

  inGroup(group: ParamGroup): tf.Variable[] {
    return [...this.variables.values()].filter((e) => e.group === group).map((e) => e.variable)
  }

  /** Maps a tfjs gradient key (the variable's full name) back to its group. */
  groupOf(fullName: string): ParamGroup | undefined {
    for (const { variable, group } of this.variables.values()) if (variable.name === fullName) return group
    return undefined
  }

  count(): number {
    let total = 0
    for (const { variable } of this.variables.values()) total += variable.size
    return total
  }

  /** Host copies of every value (for keeping the best epoch and for checkpoints). */
  snapshot(): Map<string, { shape: number[]; values: Float32Array }> {
    const out = new Map<string, { shape: number[]; values: Float32Array }>()
    for (const [name, { variable }] of this.variables) out.set(name, { shape: variable.shape, values: variable.dataSync() as Float32Array })
    return out
  }

  restore(values: Map<string, { shape: number[]; values: Float32Array }>): void {
    for (const [name, { variable }] of this.variables) {
      const saved = values.get(name)
      if (!saved) throw new Error(`checkpoint lacks parameter ${name}`)
      if (saved.shape.join('x') !== variable.shape.join('x')) {
        throw new Error(`parameter ${name}: checkpoint shape ${saved.shape.join('x')} ≠ model shape ${variable.shape.join('x')}`)
      }
      tf.tidy(() => variable.assign(tf.tensor(saved.values, saved.shape)))
    }
  }

  dispose(): void {
    for (const { variable } of this.variables.values()) variable.dispose()
    this.variables.clear()
  }
}

function initialValue(shape: number[], init: Initialiser, seed: number): tf.Tensor {
  if (init === 'zeros') return tf.zeros(shape)
  if (init === 'ones') return tf.ones(shape)
  if (init === 'xavier') {
    // torch.nn.init.xavier_normal_ on a [fan_out, fan_in] weight; our dense weights are stored
    // [in, out] and embeddings [rows, dim] — the sum fan_in + fan_out is the same either way.
    const fanSum = shape.length === 1 ? shape[0] * 2 : shape[0] + shape[shape.length - 1]
    return tf.randomNormal(shape, 0, Math.sqrt(2 / fanSum), 'float32', seed)
  }
  if ('torchLinear' in init) {
    const bound = 1 / Math.sqrt(init.torchLinear)
    return tf.randomUniform(shape, -bound, bound, 'float32', seed)
  }
  return tf.randomNormal(shape, 0, init.normalStd, 'float32', seed)
}

// ---- stateless building blocks shared by the user encoder and the side network ----

/** x [n, in] · W [in, out] + b [out]. */
export function linear(x: tf.Tensor2D, weight: tf.Tensor2D, bias?: tf.Tensor1D): tf.Tensor2D {
  const y = tf.matMul(x, weight) as tf.Tensor2D
  return bias ? (tf.add(y, bias) as tf.Tensor2D) : y
}

/** LayerNorm over the last axis: (x, gamma, beta, eps), the one the backbones use too. */
export { layerNorm } from '@iisan/tensor-ops'

export function dropout<T extends tf.Tensor>(x: T, rate: number, training: boolean, seed?: number): T {
  return training && rate > 0 ? (tf.dropout(x, rate, undefined, seed) as T) : x
}

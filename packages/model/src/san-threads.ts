// Cached IISAN's training step on more than one thread (issue 12; docs/ARCHITECTURE.md, "Backbone
// passes on more than one core"). tfjs-wasm computes on one core per thread and the SAN is most of
// a step, so a step's distinct items are split into shares: the step's own thread embeds the first
// share, each SAN thread (san-thread.ts) the next one — the SAN and the fusion are a row-wise
// function of the same parameters, so the rows are the ones one thread computes. The user side and
// the in-batch softmax then run once over all the rows, exactly as in one thread. dL/d(rows) of a
// share goes back to its thread, whose tape gives the share's parameter gradients; they are added
// to the step's own, and the step's thread alone applies Adam. So the parameters, the optimiser
// state, checkpoints, resumable states and evaluation stay where they always were: a SAN thread
// only holds a copy of the SAN's parameters, refreshed before each forward pass.
//
// A training step is synchronous, so everything crosses in shared memory and the step's thread
// blocks on Atomics: the cached states once (moved into shared memory in place: one copy per
// process), then per step the share's ids, the parameters that changed, the rows, dL/d(rows) and
// the gradients.
import { Worker } from 'node:worker_threads'
import * as tf from '@tensorflow/tfjs-core'
import { wasmValues } from './backend.ts'
import { statesForThread, type CachedStates, type Modality, type ModalityStates, type ThreadModalityStates } from './cached-states.ts'
import type { IisanConfig } from './iisan.ts'

/** Slots of a thread's control array. */
export const CONTROL = {
  /** sequence number of the latest request (the step's thread writes it) */
  request: 0,
  /** OP of that request */
  op: 1,
  /** items in a forward request's share */
  count: 2,
  /** sequence number of the latest request answered (the SAN thread writes it) */
  reply: 3,
  /** 0: done; 1: failed, `message` says why */
  status: 4,
  messageLength: 5,
  /** 0 while starting, 1 ready, 2 failed to start */
  ready: 6,
  size: 7,
} as const

export const OP = { forward: 1, backward: 2, stop: 3 } as const

/** One SAN thread's view of the shared memory. */
export interface SanThreadBuffers {
  control: Int32Array
  /** UTF-8 of the last failure */
  message: Uint8Array
  /** the share's item ids (forward) */
  ids: Int32Array
  /** [share, D]: the share's rows (forward reply), then dL/d(rows) (backward request) */
  rows: Float32Array
  /** every SAN parameter at its offset; shared by all threads, written by the step's thread */
  params: Float32Array
  /** per parameter: bumped by the step's thread each time it writes the parameter's values */
  versions: Int32Array
  /** this thread's gradients, at the parameters' offsets */
  grads: Float32Array
  /** per parameter: 1 where this thread's share reached it (it has a gradient) */
  hasGrad: Int32Array
}

/** What a SAN thread starts with. */
export interface SanThreadData {
  config: IisanConfig
  /** tfjs' name of the step thread's backend: the thread computes on the same one */
  backend: string
  states: Record<Modality, ThreadModalityStates>
  /** the item encoder's parameters, in the order of `params` and `grads` */
  layout: { name: string; shape: number[] }[]
  buffers: SanThreadBuffers
}

/** A SAN thread is gone: the step cannot finish without its share. */
export class SanThreadStopped extends Error {
  constructor(index: number, why: string) {
    super(`SAN training thread ${index} stopped (${why}): the training step cannot finish without its share of the items`)
    this.name = 'SanThreadStopped'
  }
}

const BOOT = new URL('./san-thread-boot.mjs', import.meta.url)
// loading tsx, the backend and a replica of the SAN in a new thread takes seconds, not minutes
const START_TIMEOUT_MS = 120_000
// A share takes well under a second at the paper's batch. The step's thread cannot see a thread's
// exit while it blocks (that event needs its event loop), so a thread that dies in mid-step is
// noticed by its silence.
const REPLY_TIMEOUT_MS = 120_000
const POLL_MS = 1000

interface Helper {
  index: number
  worker: Worker
  buffers: SanThreadBuffers
  /** why it stopped, once its exit has been seen (between steps) */
  stopped?: string
  /** sequence number of the latest request sent */
  sent: number
  /** the op it is working on, or was last asked for */
  op: number
  /** items in its current share */
  count: number
}

/**
 * The SAN threads of one item encoder and the step thread's side of their protocol. Per step:
 * forward(shares) → rows() → (backprop) backward(dy) → gradients(reached).
 */
export class SanThreads {
  private readonly helpers: Helper[]
  private readonly offsets: number[] = []
  /** each parameter's buffer when its values were last written: assign() gives a variable a new one */
  private readonly shipped: (object | null)[]
  private readonly params: Float32Array
  private readonly versions: Int32Array
  /** D */
  private readonly width: number
  private started = false

  constructor(
    count: number,
    config: IisanConfig,
    states: CachedStates,
    private readonly variables: [string, tf.Variable][],
  ) {
    shareInPlace(states.text)
    shareInPlace(states.image)
    this.width = config.embeddingDim
    let total = 0
    for (const [, v] of variables) {
      this.offsets.push(total)
      total += v.size
    }
    this.shipped = variables.map(() => null)
    this.params = new Float32Array(new SharedArrayBuffer(total * 4))
    this.versions = new Int32Array(new SharedArrayBuffer(variables.length * 4))
    // a share never holds more items than the store
    const capacity = states.text.rowOf.length
    const backend = tf.getBackend()
    this.helpers = Array.from({ length: count }, (_, i) => {
      const buffers: SanThreadBuffers = {
        control: new Int32Array(new SharedArrayBuffer(CONTROL.size * 4)),
        message: new Uint8Array(new SharedArrayBuffer(4096)),
        ids: new Int32Array(new SharedArrayBuffer(capacity * 4)),
        rows: new Float32Array(new SharedArrayBuffer(capacity * config.embeddingDim * 4)),
        params: this.params,
        versions: this.versions,
        grads: new Float32Array(new SharedArrayBuffer(total * 4)),
        hasGrad: new Int32Array(new SharedArrayBuffer(variables.length * 4)),
      }
      const data: SanThreadData = { config, backend, states: { text: statesForThread(states.text), image: statesForThread(states.image) }, layout: variables.map(([name, v]) => ({ name, shape: v.shape })), buffers }
      const worker = new Worker(BOOT, { workerData: data, stdout: false, stderr: false })
      const helper: Helper = { index: i + 1, worker, buffers, sent: 0, op: 0, count: 0 }
      worker.on('error', (err) => {
        helper.stopped ??= err.message
      })
      worker.on('exit', (code) => {
        helper.stopped ??= `exit code ${code}`
      })
      // an encoder that is never disposed must not keep the process alive
      worker.unref()
      return helper
    })
  }

  /** SAN threads besides the step's own. */
  get count(): number {
    return this.helpers.length
  }

  /** The threads themselves (tests stop one to see the step fail). */
  get workers(): Worker[] {
    return this.helpers.map((h) => h.worker)
  }

  /** Sends shares[i] to thread i + 1 and the parameters that changed since the last step. */
  forward(shares: Int32Array[]): void {
    if (shares.length !== this.helpers.length) throw new Error(`${shares.length} shares for ${this.helpers.length} SAN threads`)
    this.start()
    this.shipParameters()
    this.helpers.forEach((h, i) => {
      h.buffers.ids.set(shares[i])
      h.count = shares[i].length
      Atomics.store(h.buffers.control, CONTROL.count, h.count)
      this.send(h, OP.forward)
    })
  }

  /** The threads' rows, in share order: [Σ shares, D]. */
  rows(): tf.Tensor2D {
    const D = this.width
    const total = this.helpers.reduce((s, h) => s + h.count, 0)
    const out = new Float32Array(total * D)
    let at = 0
    for (const h of this.helpers) {
      this.waitFor(h, 'forward pass')
      out.set(h.buffers.rows.subarray(0, h.count * D), at)
      at += h.count * D
    }
    return tf.tensor2d(out, [total, D])
  }

  /** dL/d(rows) [Σ shares, D] back to the threads, which start their backward pass. */
  backward(dy: tf.Tensor2D): void {
    const D = this.width
    const values = dy.dataSync() as Float32Array
    let at = 0
    for (const h of this.helpers) {
      if (h.op !== OP.forward) throw new Error(`SAN thread ${h.index} has no forward pass to take back`)
      h.buffers.rows.set(values.subarray(at, at + h.count * D))
      at += h.count * D
      this.send(h, OP.backward)
    }
  }

  /**
   * The threads' gradients of the parameters `reached` (indices into the encoder's parameters),
   * summed in thread order: every one must have one (the caller knows which its shares reach).
   */
  gradients(reached: number[]): tf.Tensor[] {
    for (const h of this.helpers) {
      if (h.op !== OP.backward) throw new Error(`SAN thread ${h.index} was not asked for a backward pass`)
      this.waitFor(h, 'backward pass')
    }
    return reached.map((i) => {
      const [name, variable] = this.variables[i]
      const parts = this.helpers.filter((h) => h.buffers.hasGrad[i])
      if (parts.length === 0) throw new Error(`no SAN thread returned a gradient for ${name}`)
      const of = (h: Helper) => tensorOfShared(h.buffers.grads.subarray(this.offsets[i], this.offsets[i] + variable.size), variable.shape)
      return parts.slice(1).reduce((sum, h) => tf.add(sum, of(h)), of(parts[0]))
    })
  }

  dispose(): void {
    for (const h of this.helpers) {
      if (!h.stopped) this.send(h, OP.stop)
      void h.worker.terminate()
    }
  }

  /** Waits (once) until every thread has built its replica of the SAN. */
  private start(): void {
    if (this.started) return
    for (const h of this.helpers) {
      const deadline = performance.now() + START_TIMEOUT_MS
      const { control } = h.buffers
      while (Atomics.load(control, CONTROL.ready) === 0) {
        if (h.stopped) throw new SanThreadStopped(h.index, h.stopped)
        if (performance.now() > deadline) throw new SanThreadStopped(h.index, `not started after ${START_TIMEOUT_MS / 1000} s`)
        Atomics.wait(control, CONTROL.ready, 0, POLL_MS)
      }
      if (Atomics.load(control, CONTROL.ready) !== 1) throw new SanThreadStopped(h.index, `it failed to start: ${failureOf(h.buffers)}`)
    }
    this.started = true
  }

  /** Writes the values of every parameter assigned since they were last written. */
  private shipParameters(): void {
    this.variables.forEach(([, variable], i) => {
      const buffer = (variable as unknown as { dataId: object }).dataId
      if (this.shipped[i] === buffer) return
      this.params.set(wasmValues(variable) ?? (variable.dataSync() as Float32Array), this.offsets[i])
      this.shipped[i] = buffer
      Atomics.add(this.versions, i, 1)
    })
  }

  private send(h: Helper, op: number): void {
    if (h.stopped) throw new SanThreadStopped(h.index, h.stopped)
    h.op = op
    h.sent++
    Atomics.store(h.buffers.control, CONTROL.op, op)
    Atomics.store(h.buffers.control, CONTROL.request, h.sent)
    Atomics.notify(h.buffers.control, CONTROL.request)
  }

  private waitFor(h: Helper, what: string): void {
    const { control } = h.buffers
    const deadline = performance.now() + REPLY_TIMEOUT_MS
    for (;;) {
      const reply = Atomics.load(control, CONTROL.reply)
      if (reply === h.sent) break
      if (h.stopped) throw new SanThreadStopped(h.index, h.stopped)
      if (performance.now() > deadline) throw new SanThreadStopped(h.index, `no answer to its ${what} in ${REPLY_TIMEOUT_MS / 1000} s`)
      Atomics.wait(control, CONTROL.reply, reply, POLL_MS)
    }
    if (Atomics.load(control, CONTROL.status) !== 0) throw new Error(`SAN training thread ${h.index} failed its ${what}: ${failureOf(h.buffers)}`)
  }
}

/**
 * A tensor of values in shared memory that a later step overwrites: wasm copies them into its heap
 * as it makes the tensor; the cpu backend would keep the array itself, so it gets a copy.
 */
export function tensorOfShared(values: Float32Array, shape: number[]): tf.Tensor {
  return tf.tensor(tf.getBackend() === 'wasm' ? values : values.slice(), shape)
}

/** The failure a thread wrote. */
export function failureOf(buffers: Pick<SanThreadBuffers, 'control' | 'message'>): string {
  return new TextDecoder().decode(buffers.message.slice(0, Atomics.load(buffers.control, CONTROL.messageLength)))
}

/** Writes a failure for the step's thread to read (the status or ready slot is set by the caller). */
export function writeFailure(buffers: Pick<SanThreadBuffers, 'control' | 'message'>, err: unknown): void {
  const text = new TextEncoder().encode(err instanceof Error ? err.message : String(err)).slice(0, buffers.message.length)
  buffers.message.set(text)
  Atomics.store(buffers.control, CONTROL.messageLength, text.length)
}

/**
 * Moves a store's arrays into shared memory, in place — the caller's store object too, so the
 * process keeps one copy (0.4 GB per modality for Scientific at base shapes) that every thread
 * reads. A rows file is shared already: the threads read it through the same descriptor.
 */
function shareInPlace(states: ModalityStates): void {
  if (ArrayBuffer.isView(states.data)) states.data = sharedCopy(states.data)
  states.rowOf = sharedCopy(states.rowOf)
}

function sharedCopy<T extends Float32Array | Uint16Array | Int32Array>(values: T): T {
  if (values.buffer instanceof SharedArrayBuffer) return values
  const Kind = values.constructor as new (buffer: SharedArrayBuffer) => T
  const copy = new Kind(new SharedArrayBuffer(values.byteLength))
  ;(copy as Float32Array).set(values as Float32Array)
  return copy
}

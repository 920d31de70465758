// One SAN training thread (san-threads.ts): its own tensor backend and a replica of the item
// encoder over the shared cached states. Per step it embeds its share of the step's items with
// the parameters the step's thread wrote, answers with the rows, and keeps the tape until
// dL/d(rows) comes back; then it answers with its share's parameter gradients. It never updates a
// parameter: Adam runs on the step's thread only.
import { workerData } from 'node:worker_threads'
import * as tf from '@tensorflow/tfjs-core'
import { initBackend, wasmValues, type BackendName } from './backend.ts'
import { IisanItemEncoder, StoredStates } from './iisan.ts'
import { attachStates } from './cached-states.ts'
import { Params } from './params.ts'
import { CONTROL, OP, tensorOfShared, writeFailure, type SanThreadBuffers, type SanThreadData } from './san-threads.ts'

/** A new request came instead of the backward pass (the step took no gradient): drop the tape. */
class Superseded extends Error {
  constructor(readonly request: number) {
    super('superseded')
  }
}

// tfjs' backend names (tf.getBackend()) → initBackend's
const BACKEND_OF: Record<string, BackendName> = { wasm: 'wasm', cpu: 'cpu', tensorflow: 'node' }

class SanThread {
  private readonly control: Int32Array
  private readonly offsets: number[] = []
  /** the version of each parameter's values this replica holds */
  private readonly loaded: Int32Array
  private answered = 0

  private constructor(
    private readonly buffers: SanThreadBuffers,
    private readonly encoder: IisanItemEncoder,
    private readonly variables: tf.Variable[],
    private readonly width: number,
  ) {
    this.control = buffers.control
    let offset = 0
    for (const v of variables) {
      this.offsets.push(offset)
      offset += v.size
    }
    this.loaded = new Int32Array(variables.length)
  }

  static async start(data: SanThreadData): Promise<SanThread> {
    process.env.TF_BACKEND_QUIET = '1'
    const backend = BACKEND_OF[data.backend]
    if (!backend) throw new Error(`no SAN thread on the ${data.backend} backend`)
    await initBackend({ prefer: backend })
    const params = new Params(data.config.seed)
    const encoder = new IisanItemEncoder(data.config, params, new StoredStates({ text: attachStates(data.states.text), image: attachStates(data.states.image) }))
    const variables = data.layout.map(({ name, shape }) => {
      const v = params.get(name)
      if (v.shape.join('x') !== shape.join('x')) throw new Error(`parameter ${name} is ${v.shape.join('x')} here, ${shape.join('x')} on the step's thread`)
      return v
    })
    if (variables.length !== params.entries().length) throw new Error('the replica has parameters the step thread did not send')
    return new SanThread(data.buffers, encoder, variables, data.config.embeddingDim)
  }

  /** Answers requests until told to stop. */
  serve(): void {
    let request = this.next()
    for (;;) {
      const op = Atomics.load(this.control, CONTROL.op)
      if (op === OP.stop) return
      try {
        if (op !== OP.forward) throw new Error(`a request ${op} without a forward pass before it`)
        this.step(request)
        request = this.next()
      } catch (err) {
        if (err instanceof Superseded) {
          request = err.request
          continue
        }
        writeFailure(this.buffers, err)
        this.reply(Atomics.load(this.control, CONTROL.request), 1)
        request = this.next()
      }
    }
  }

  /** One step's forward pass, then (when asked) its backward pass, on one tape. */
  private step(request: number): void {
    this.loadParameters()
    const n = Atomics.load(this.control, CONTROL.count)
    const ids = this.buffers.ids.slice(0, n)
    const D = this.width
    tf.tidy(() => {
      // the tape's output is Σ rows ⊙ dL/d(rows): its gradients are the vector-Jacobian products
      // the step's thread would have taken through these rows
      const { grads } = tf.engine().gradients(
        () => {
          const rows = this.encoder.embedUnique(ids) // [n, D]
          this.buffers.rows.set(rows.dataSync() as Float32Array)
          this.reply(request, 0)
          const next = this.next()
          if (Atomics.load(this.control, CONTROL.op) !== OP.backward) throw new Superseded(next)
          const dRows = tensorOfShared(this.buffers.rows.subarray(0, n * D), [n, D])
          return tf.sum(tf.mul(rows, dRows))
        },
        this.variables,
        undefined,
        true,
      )
      grads.forEach((g, i) => {
        this.buffers.hasGrad[i] = g ? 1 : 0
        if (g) this.buffers.grads.set(wasmValues(g) ?? (g.dataSync() as Float32Array), this.offsets[i])
      })
    })
    this.reply(Atomics.load(this.control, CONTROL.request), 0)
  }

  /** The values of every parameter written since this replica last read it. */
  private loadParameters(): void {
    this.variables.forEach((v, i) => {
      const version = Atomics.load(this.buffers.versions, i)
      if (version === this.loaded[i]) return
      const values = this.buffers.params.subarray(this.offsets[i], this.offsets[i] + v.size)
      // a new tensor: overwriting the old wasm buffer in place gave wrong products (the matMul
      // seems to keep weights packed per tensor)
      tf.tidy(() => v.assign(tensorOfShared(values, v.shape)))
      this.loaded[i] = version
    })
  }

  /** Blocks until a request newer than the last one answered. */
  private next(): number {
    for (;;) {
      const request = Atomics.load(this.control, CONTROL.request)
      if (request !== this.answered) return request
      Atomics.wait(this.control, CONTROL.request, request)
    }
  }

  private reply(request: number, status: 0 | 1): void {
    this.answered = request
    Atomics.store(this.control, CONTROL.status, status)
    Atomics.store(this.control, CONTROL.reply, request)
    Atomics.notify(this.control, CONTROL.reply)
  }
}

async function main(data: SanThreadData): Promise<void> {
  let thread: SanThread
  try {
    thread = await SanThread.start(data)
  } catch (err) {
    writeFailure(data.buffers, err)
    Atomics.store(data.buffers.control, CONTROL.ready, 2)
    Atomics.notify(data.buffers.control, CONTROL.ready)
    throw err
  }
  Atomics.store(data.buffers.control, CONTROL.ready, 1)
  Atomics.notify(data.buffers.control, CONTROL.ready)
  thread.serve()
}

await main(workerData as SanThreadData)

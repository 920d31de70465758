// Which runtime runs the frozen backbones' inference passes, and the ONNX Runtime side of it.
//
// tfjs-wasm runs a forward pass on one core at 128-bit SIMD; ONNX Runtime (onnxruntime-node, its
// CPU binaries ship in the npm package) runs the same graph with MLAS's AVX2/AVX-512 GEMMs on every
// core: 3× tfjs and above PyTorch's items/s on the BERT-base shapes (docs/ARCHITECTURE.md, issue 12).
// So ONNX is the default wherever its addon loads; tfjs stays the fallback (no prebuilt binary for
// the platform) and the runtime of every training path, which needs gradients.
//
// BACKBONE_RUNTIME=onnx|tfjs picks one explicitly: `onnx` fails loudly when the addon does not
// load, `tfjs` never touches it. Unset: onnx, else tfjs with a warning naming the reason.
import { createRequire } from 'node:module'
import os from 'node:os'
import type * as Ort from 'onnxruntime-node'
import { BackboneConfigError } from '../config.ts'

export const BACKBONE_RUNTIMES = ['onnx', 'tfjs'] as const
export type BackboneRuntimeName = (typeof BACKBONE_RUNTIMES)[number]

export type OrtModule = typeof Ort

export type ResolvedRuntime = { name: 'onnx'; ort: OrtModule } | { name: 'tfjs' }

/** BACKBONE_RUNTIME as given (case-insensitive); undefined when unset or empty. */
export function requestedRuntime(env: NodeJS.ProcessEnv = process.env): BackboneRuntimeName | undefined {
  const raw = env.BACKBONE_RUNTIME?.trim().toLowerCase()
  if (!raw) return undefined
  if (!(BACKBONE_RUNTIMES as readonly string[]).includes(raw)) {
    throw new BackboneConfigError(`BACKBONE_RUNTIME=${env.BACKBONE_RUNTIME} is not supported (expected ${BACKBONE_RUNTIMES.join(' or ')})`)
  }
  return raw as BackboneRuntimeName
}

/**
 * The runtime a backbone loads into: `requested` (an option, else BACKBONE_RUNTIME), or by default
 * ONNX when onnxruntime-node loads and tfjs otherwise (`warn` gets the reason once per load).
 */
export async function resolveRuntime(
  requested: BackboneRuntimeName | undefined = requestedRuntime(),
  warn: (message: string) => void = (m) => console.warn(m),
): Promise<ResolvedRuntime> {
  if (requested === 'tfjs') return { name: 'tfjs' }
  let ort: OrtModule
  try {
    ort = await import('onnxruntime-node')
  } catch (err) {
    const reason = err instanceof Error ? err.message.split('\n')[0] : String(err)
    if (requested === 'onnx') throw new Error(`the onnx backbone runtime was asked for (BACKBONE_RUNTIME=onnx), but onnxruntime-node does not load here: ${reason}`)
    warn(`backbones: onnxruntime-node does not load (${reason}); running the backbones on tfjs (BACKBONE_RUNTIME=tfjs silences this)`)
    return { name: 'tfjs' }
  }
  return { name: 'onnx', ort }
}

/** One ONNX graph in an ORT session, run with int64 / float32 inputs and float32 outputs. */
export class OrtGraph {
  private constructor(
    private readonly ort: OrtModule,
    private readonly session: Ort.InferenceSession,
  ) {}

  static async create(ort: OrtModule, model: Uint8Array): Promise<OrtGraph> {
    const session = await ort.InferenceSession.create(model, {
      intraOpNumThreads: os.availableParallelism(),
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
      // ORT's pool threads busy-wait between ops by default; on cores shared with the API and
      // the worker that spinning took cycles from our own GEMMs (measured ~10% slower)
      extra: { session: { 'intra_op.allow_spinning': '0' } },
    })
    return new OrtGraph(ort, session)
  }

  /**
   * feeds: name → [values, dims] (a Uint16Array holds float16 bit patterns); returns the
   * requested outputs' float32 data.
   */
  async run(feeds: Feeds, outputs: string[]): Promise<Float32Array[]> {
    const result = await this.session.run(tensorsOf(this.ort, feeds), outputs)
    return outputs.map((name) => result[name].data as Float32Array)
  }

  release(): Promise<void> {
    return this.session.release()
  }
}

/** name → [values, dims]; a Uint16Array holds float16 bit patterns. */
export type Feeds = Record<string, [BigInt64Array | Float32Array | Int32Array | Uint16Array, number[]]>

function tensorsOf(ort: OrtModule, feeds: Feeds): Record<string, Ort.Tensor> {
  const tensors: Record<string, Ort.Tensor> = {}
  for (const [name, [values, dims]] of Object.entries(feeds)) tensors[name] = values instanceof Uint16Array ? new ort.Tensor('float16', values, dims) : new ort.Tensor(values, dims)
  return tensors
}

/** What SyncOrtSession uses of onnxruntime-node's native session (its dist/binding.d.ts). */
interface NativeSession {
  loadModel(buffer: ArrayBufferLike, byteOffset: number, byteLength: number, options: Ort.InferenceSession.SessionOptions): Promise<void> | void
  run(feeds: Record<string, Ort.Tensor>, fetches: Record<string, null>, options: object): Record<string, Ort.Tensor>
  dispose(): void
}

/**
 * One ONNX graph in an ORT session whose run blocks until it is done. onnxruntime-node's public
 * run is a promise, but its native session runs synchronously (the package calls it from a
 * setImmediate); a tfjs training step is synchronous from its forward pass to its gradients, so
 * the SAN's training graphs are run this way. `threads`: ORT's intra-op threads.
 */
export class SyncOrtSession {
  private constructor(
    private readonly ort: OrtModule,
    private native: NativeSession | null,
  ) {}

  static async create(ort: OrtModule, model: Uint8Array, threads: number): Promise<SyncOrtSession> {
    // the package's own binding module, so its once-per-process initialisation is shared
    const { binding, initOrt } = createRequire(import.meta.url)('onnxruntime-node/dist/binding.js') as {
      binding: { InferenceSession: new () => NativeSession }
      initOrt: () => void
    }
    initOrt()
    const native = new binding.InferenceSession()
    await native.loadModel(model.buffer, model.byteOffset, model.byteLength, {
      intraOpNumThreads: threads,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
      extra: { session: { 'intra_op.allow_spinning': '0' } },
    })
    return new SyncOrtSession(ort, native)
  }

  /** As OrtGraph.run, synchronously; an int32 output comes back as an Int32Array. */
  run<T extends Float32Array | Int32Array = Float32Array>(feeds: Feeds, outputs: string[]): T[] {
    if (!this.native) throw new Error('this ONNX Runtime session was released')
    const result = this.native.run(tensorsOf(this.ort, feeds), Object.fromEntries(outputs.map((name) => [name, null])), {})
    return outputs.map((name) => result[name].data as T)
  }

  release(): void {
    this.native?.dispose()
    this.native = null
  }
}

/** 1/0 int32 rows as ONNX's int64. */
export function int64(values: Int32Array): BigInt64Array {
  const out = new BigInt64Array(values.length)
  for (let i = 0; i < values.length; i++) out[i] = BigInt(values[i])
  return out
}

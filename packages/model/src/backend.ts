// Tensor-backend selection and the wasm fixes training depends on.
//
// Preference order (docs/ARCHITECTURE.md): tfjs-node-gpu → tfjs-node → wasm → cpu. The native packages are
// optional dependencies whose install downloads libtensorflow; where that failed they are absent
// or broken, so each is tried and skipped. The chosen backend is logged once per process.
import * as tf from '@tensorflow/tfjs-core'
// tfjs-core ships gradients separately; the union package registers them all.
import '@tensorflow/tfjs' // registers every op's gradient (tfjs-core's ESM-only register_all_gradients cannot load in Node)
import type { KernelConfig, KernelFunc, TensorInfo } from '@tensorflow/tfjs-core'

/** Preference names (as in TF_BACKEND); both native packages register tfjs's 'tensorflow' backend. */
export type BackendName = 'node-gpu' | 'node' | 'wasm' | 'cpu'

interface BackendLogger {
  info(obj: object, msg: string): void
}

let selected: Promise<BackendName> | undefined

/**
 * Initialises the best available backend once per process. `TF_BACKEND=node-gpu|node|wasm|cpu`
 * forces one (tests use it to compare backends).
 */
export function initBackend(options: { prefer?: BackendName; logger?: BackendLogger } = {}): Promise<BackendName> {
  selected ??= chooseBackend(options.prefer ?? (process.env.TF_BACKEND as BackendName | undefined)).then((name) => {
    const info = { backend: name, kernelsPatched: name === 'wasm' }
    if (options.logger) options.logger.info(info, 'tensor backend selected')
    else if (process.env.TF_BACKEND_QUIET !== '1') console.error(`[iisan] tensor backend: ${name}`)
    return name
  })
  return selected
}

async function chooseBackend(prefer?: BackendName): Promise<BackendName> {
  const candidates: BackendName[] = prefer ? [prefer] : ['node-gpu', 'node', 'wasm', 'cpu']
  for (const name of candidates) {
    if (await tryBackend(name)) return name
  }
  throw new Error(`no tensor backend could be initialised (tried ${candidates.join(', ')})`)
}

async function tryBackend(name: BackendName): Promise<boolean> {
  try {
    if (name === 'node-gpu' || name === 'node') {
      if (!(await importOptional(name === 'node-gpu' ? '@tensorflow/tfjs-node-gpu' : '@tensorflow/tfjs-node'))) return false
    } else if (name === 'wasm') {
      await import('@tensorflow/tfjs-backend-wasm')
    } else {
      await import('@tensorflow/tfjs-backend-cpu')
    }
    if (!(await tf.setBackend(name === 'node-gpu' || name === 'node' ? 'tensorflow' : name))) return false
    await tf.ready()
    if (name === 'wasm') patchWasmKernels()
    return true
  } catch {
    return false
  }
}

async function importOptional(specifier: string): Promise<boolean> {
  try {
    await import(specifier)
    return true
  } catch {
    return false
  }
}

let patched = false

/** Registers the wasm kernels our training graphs need. Idempotent. */
export function patchWasmKernels(): void {
  if (patched) return
  patched = true
  registerUnsortedSegmentSum()
  registerFastTransposedBatchMatMul()
  registerSharedIdentity()
  wasmHeapMeter()
}

interface WasmBackendLike {
  readSync(dataId: object): ArrayLike<number>
  makeOutput(shape: number[], dtype: tf.DataType): TensorInfo
  typedArrayFromHeap(info: TensorInfo): Float32Array | Int32Array
  disposeData(dataId: object): void
  incRef(dataId: object): void
}

/**
 * A float32 tensor's values without a copy, where the backend keeps them in JS-visible memory: on
 * wasm a view of its heap (valid only until the heap next grows, i.e. until the next tfjs call that
 * may allocate: read it at once, never keep it), on cpu the backend's own array. Undefined on other
 * backends, whose values live elsewhere (a caller then needs a copy).
 */
export function valuesInPlace(t: tf.Tensor): Float32Array | undefined {
  if (t.dtype !== 'float32' || t.isDisposed) return undefined
  const backend = tf.backend() as unknown as WasmBackendLike
  try {
    if (tf.getBackend() === 'wasm') return backend.typedArrayFromHeap(t) as Float32Array
    if (tf.getBackend() === 'cpu') {
      const values = backend.readSync(t.dataId)
      return values instanceof Float32Array ? values : undefined
    }
  } catch {
    // the tensor is held by a backend other than the active one
  }
  return undefined
}

/**
 * Identity is what tf.clone runs, and the gradient tape clones every tensor a backward pass needs
 * (engine.saveTensorsForBackwardMode). tfjs-backend-wasm 4.22 copies the buffer there, so every
 * weight, input and activation a step's tape keeps existed twice on the wasm heap (a BERT-base
 * step: gigabytes). The cpu backend shares the buffer and counts a reference instead, as wasm's
 * own Reshape already does; no wasm kernel writes into its inputs, so sharing is safe. The buffer
 * is freed when its last tensor is (the backend's refCount).
 */
function registerSharedIdentity(): void {
  const kernelFunc: KernelFunc = ({ inputs, backend }) => {
    const x = inputs.x as TensorInfo
    ;(backend as unknown as WasmBackendLike).incRef(x.dataId)
    return { dataId: x.dataId, shape: x.shape, dtype: x.dtype }
  }
  tf.unregisterKernel('Identity', 'wasm')
  tf.registerKernel({ kernelName: 'Identity', backendName: 'wasm', kernelFunc })
}

interface WasmModuleLike {
  HEAPU8: Uint8Array
  _malloc(bytes: number): number
  _free(pointer: number): void
  asm?: { malloc(bytes: number): number; free(pointer: number): void }
}

export interface WasmHeapMeter {
  /** bytes the backend has allocated on the wasm heap and not freed (tensor buffers), since the meter started */
  live(): number
  /** the highest `live` since the meter started or since the last resetPeak */
  peak(): number
  resetPeak(): void
  /** the size of the wasm heap itself: it grows on demand and never shrinks (4 GB at most) */
  heapBytes(): number
}

let meter: WasmHeapMeter | undefined

/** The wasm heap ran out (it holds at most 4 GB): what was being allocated, and how much was live. */
export class WasmOutOfMemory extends Error {
  constructor(bytes: number, live: number) {
    super(`out of wasm memory: ${(bytes / 2 ** 20).toFixed(1)} MB more did not fit next to ${(live / 2 ** 20).toFixed(0)} MB of tensors (the wasm heap holds at most 4 GB; use smaller batches or chunks)`)
    this.name = 'WasmOutOfMemory'
  }
}

/**
 * Counts what the wasm backend mallocs and frees (its tensor buffers; not what kernels allocate
 * inside the module), from the first call on — patchWasmKernels makes that call. tf.memory()'s
 * numBytes cannot tell: it counts every tensor in full, buffers that tensors share included.
 * Null on another backend.
 */
export function wasmHeapMeter(): WasmHeapMeter | null {
  if (tf.getBackend() !== 'wasm') return null
  meter ??= watchWasmHeap((tf.backend() as unknown as { wasm: WasmModuleLike }).wasm)
  return meter
}

/**
 * Wraps the module's malloc/free as the backend calls them: counts the bytes, and turns a failed
 * allocation (malloc's 0, which tfjs does not check: the kernel then writes out of bounds or over
 * live data) into a WasmOutOfMemory.
 */
function watchWasmHeap(wasm: WasmModuleLike): WasmHeapMeter {
  const sizes = new Map<number, number>()
  let live = 0
  let peak = 0
  // the module's own exports: emscripten's _malloc/_free are stubs that replace themselves with
  // these on first use, which would also replace the wrappers below
  const malloc = wasm.asm?.malloc ?? wasm._malloc.bind(wasm)
  const free = wasm.asm?.free ?? wasm._free.bind(wasm)
  wasm._malloc = (bytes: number) => {
    const pointer = malloc(bytes)
    if (pointer === 0 && bytes > 0) throw new WasmOutOfMemory(bytes, live)
    sizes.set(pointer >>> 0, bytes)
    live += bytes
    peak = Math.max(peak, live)
    return pointer
  }
  wasm._free = (pointer: number) => {
    const bytes = sizes.get(pointer >>> 0)
    if (bytes !== undefined) {
      sizes.delete(pointer >>> 0)
      live -= bytes
    }
    free(pointer)
  }
  return {
    live: () => live,
    peak: () => peak,
    resetPeak: () => {
      peak = live
    },
    heapBytes: () => wasm.HEAPU8.length,
  }
}

/**
 * UnsortedSegmentSum is the gradient of `gather` (embedding lookups) and has no wasm kernel in
 * tfjs 4.22. It is a scatter-add, memory-bound and tiny next to the matMuls, so a plain loop over
 * the wasm heap is enough. Out-of-range segment ids are dropped, as TensorFlow does.
 */
function registerUnsortedSegmentSum(): void {
  const kernelFunc: KernelFunc = ({ inputs, attrs, backend }) => {
    const wasm = backend as unknown as WasmBackendLike
    const x = inputs.x as TensorInfo
    const segmentIds = inputs.segmentIds as TensorInfo
    const numSegments = (attrs as { numSegments: number }).numSegments
    if (x.dtype !== 'float32' && x.dtype !== 'int32') throw new Error(`UnsortedSegmentSum: unsupported dtype ${x.dtype}`)
    const rowSize = x.shape.slice(segmentIds.shape.length).reduce((a, b) => a * b, 1)
    const values = wasm.readSync(x.dataId)
    const ids = wasm.readSync(segmentIds.dataId)
    const out = wasm.makeOutput([numSegments, ...x.shape.slice(segmentIds.shape.length)], x.dtype)
    const outValues = wasm.typedArrayFromHeap(out)
    outValues.fill(0)
    for (let i = 0; i < ids.length; i++) {
      const segment = ids[i]
      if (segment < 0 || segment >= numSegments) continue
      const src = i * rowSize
      const dst = segment * rowSize
      for (let j = 0; j < rowSize; j++) outValues[dst + j] += values[src + j]
    }
    return out
  }
  tf.registerKernel({ kernelName: 'UnsortedSegmentSum', backendName: 'wasm', kernelFunc })
}

/**
 * On wasm, BatchMatMul with transposeA/transposeB leaves XNNPACK's fast path (10–15× slower,
 * docs/DEVELOPMENT.md), and every dense layer's gradient asks for exactly that. Transposing the operand
 * explicitly first costs far less than the slow path, so the re-registered kernel does that and
 * then calls the original kernel (whose setupFunc must be kept: it binds the wasm function).
 */
function registerFastTransposedBatchMatMul(): void {
  const original = tf.getKernel('BatchMatMul', 'wasm')
  const transpose = tf.getKernel('Transpose', 'wasm')
  if (!original || !transpose) return
  const kernelFunc: KernelFunc = (args) => {
    const { inputs, attrs, backend } = args
    const { transposeA, transposeB } = attrs as { transposeA: boolean; transposeB: boolean }
    if (!transposeA && !transposeB) return original.kernelFunc(args)
    const wasm = backend as unknown as WasmBackendLike
    const swapLastTwo = (x: TensorInfo): TensorInfo => {
      const rank = x.shape.length
      const perm = [...Array(rank).keys()]
      ;[perm[rank - 2], perm[rank - 1]] = [perm[rank - 1], perm[rank - 2]]
      return transpose.kernelFunc({ inputs: { x }, attrs: { perm }, backend }) as TensorInfo
    }
    const a = transposeA ? swapLastTwo(inputs.a as TensorInfo) : (inputs.a as TensorInfo)
    const b = transposeB ? swapLastTwo(inputs.b as TensorInfo) : (inputs.b as TensorInfo)
    try {
      return original.kernelFunc({ inputs: { a, b }, attrs: { ...attrs, transposeA: false, transposeB: false }, backend })
    } finally {
      if (transposeA) wasm.disposeData(a.dataId)
      if (transposeB) wasm.disposeData(b.dataId)
    }
  }
  tf.unregisterKernel('BatchMatMul', 'wasm')
  const replacement: KernelConfig = { ...original, kernelFunc }
  tf.registerKernel(replacement)
}

/**
 * A float32 tensor's values as a view of the wasm heap (valid until an allocation grows the heap);
 * null on another backend. For copies to and from shared memory: for the SAN's 4 M parameters
 * dataSync plus a copy, or a new tensor per parameter, cost 8–20 ms where copying the view
 * costs 1.5 ms.
 */
export function wasmValues(t: tf.Tensor): Float32Array | null {
  if (tf.getBackend() !== 'wasm' || t.dtype !== 'float32') return null
  return (tf.backend() as unknown as WasmBackendLike).typedArrayFromHeap(t) as Float32Array
}

export { tf }

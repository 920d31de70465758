// tf.profile that fails with the failing kernel's own error.
//
// Under tf.profile the engine times every kernel through the backend's `time(f)`, which on the
// wasm and cpu backends is an async function: an error thrown by the kernel (the wasm heap running
// out, say) becomes a rejected promise that nothing awaits, and the engine then fails on the
// kernel's missing outputs with "Cannot read properties of undefined (reading 'map')", and goes on
// profiling every later kernel. bench:methods profiles a base-size step whose heap runs out, and
// reported that TypeError instead of the out-of-memory error.
import * as tf from '@tensorflow/tfjs-core'

/** What tf.profile reports (tfjs-core does not export the type from its entry point). */
export type ProfileInfo = Awaited<ReturnType<typeof tf.profile>>

interface TimedBackend {
  time(f: () => void): Promise<{ kernelMs: number }>
}

/** The engine's own state: tf.profile sets `profiling` and clears it only when the query succeeds. */
interface EngineState {
  profiling: boolean
}

/**
 * `tf.profile(query)`, except that a kernel's error reaches the caller as itself. For the
 * duration, the backend times kernels synchronously, so the error propagates out of the kernel
 * call instead of into an unawaited promise.
 */
export async function profileKernels(query: () => tf.TensorContainer | Promise<tf.TensorContainer>): Promise<ProfileInfo> {
  const backend = tf.backend() as unknown as TimedBackend
  const hadOwnTime = Object.prototype.hasOwnProperty.call(backend, 'time')
  const asyncTime = backend.time
  backend.time = (f) => {
    const start = performance.now()
    f()
    return Promise.resolve({ kernelMs: performance.now() - start })
  }
  try {
    return await tf.profile(query)
  } catch (err) {
    ;(tf.engine().state as unknown as EngineState).profiling = false
    throw err
  } finally {
    if (hadOwnTime) backend.time = asyncTime
    else delete (backend as Partial<TimedBackend>).time
  }
}

// Backbones run inference only, so any tfjs backend with the forward kernels will do. If the
// host process already picked one (the model package prefers tfjs-node → wasm → cpu), reuse it
// rather than switching the global engine under its feet; otherwise default to wasm, the
// fastest backend that installs everywhere.
import * as tf from '@tensorflow/tfjs-core'

let ready: Promise<string> | undefined

export function ensureBackend(): Promise<string> {
  ready ??= (async () => {
    const current = tf.engine().backendName
    if (current) return current
    const forced = process.env.TF_BACKEND
    if (forced === 'cpu') {
      await import('@tensorflow/tfjs-backend-cpu')
      await tf.setBackend('cpu')
    } else {
      await import('@tensorflow/tfjs-backend-wasm')
      if (!(await tf.setBackend('wasm'))) throw new Error('could not initialise the tfjs wasm backend')
    }
    await tf.ready()
    return tf.getBackend()
  })()
  return ready
}

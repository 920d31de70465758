// `node --import ./test/helpers/without-onnxruntime.mjs …`: the process behaves as on a platform
// without onnxruntime-node's prebuilt binary — importing it fails — so the backbones' fallback to
// tfjs can be exercised for real (test/backbones-onnx.test.ts).
import { register } from 'node:module'

register(
  'data:text/javascript,' +
    encodeURIComponent(`export async function resolve(specifier, context, next) {
  if (specifier === 'onnxruntime-node') throw new Error('no onnxruntime-node binary for this platform')
  return next(specifier, context)
}`),
)

import { GraphBuilder } from '@iisan/backbones/onnx/graph'
import { createRequire } from 'node:module'
const require = createRequire(import.meta.url)
const { binding, initOrt } = require('onnxruntime-node/dist/binding.js')
const { Tensor } = require('onnxruntime-common')
const n = 257, d = 768, r = 64, K = 21
const g = new GraphBuilder({ read: () => { throw new Error() } })
let x = g.input('x', 'float', ['n', d])
for (let k = 0; k < K; k++) {
  const wd = g.input(`wd${k}`, 'float', [d, r]); const wu = g.input(`wu${k}`, 'float', [r, d])
  const h = g.op('Relu', [g.op('MatMul', [x, wd])])
  // forward + "backward-like" extra matmuls: dh = dy·wuT, dWd = xT·dh, dWu = hT·dy, dx = dh·wdT
  const y = g.op('Add', [x, g.op('MatMul', [h, wu])])
  const dh = g.op('MatMul', [y, g.op('Transpose', [wu])])
  const dWd = g.op('MatMul', [g.op('Transpose', [x]), dh])
  const dWu = g.op('MatMul', [g.op('Transpose', [h]), y])
  const dx = g.op('MatMul', [dh, g.op('Transpose', [wd])])
  g.output(dWd, `gd${k}`, [d, r]); g.output(dWu, `gu${k}`, [r, d])
  x = g.op('Add', [y, dx])
}
g.output(x, 'out', ['n', d])
const model = g.encode('p')
initOrt()
for (const threads of [1, 2]) {
  const s = new binding.InferenceSession()
  await s.loadModel(model.buffer, model.byteOffset, model.byteLength, { intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all', extra: { session: { 'intra_op.allow_spinning': threads > 1 ? '1' : '0' } } })
  const feeds: Record<string, any> = { x: new Tensor(Float32Array.from({ length: n * d }, () => Math.random() - 0.5), [n, d]) }
  for (let k = 0; k < K; k++) { feeds[`wd${k}`] = new Tensor(Float32Array.from({ length: d * r }, () => (Math.random() - 0.5) * 0.02), [d, r]); feeds[`wu${k}`] = new Tensor(Float32Array.from({ length: d * r }, () => (Math.random() - 0.5) * 0.02), [r, d]) }
  const fetches: Record<string, null> = { out: null }
  for (let k = 0; k < K; k++) { fetches[`gd${k}`] = null; fetches[`gu${k}`] = null }
  const times = []
  for (let i = 0; i < 12; i++) { const t = performance.now(); const out = s.run(feeds, fetches, {}); times.push(performance.now() - t); if (i == 0) console.log(Object.keys(out).length, out.out.dims) }
  times.sort((a, b) => a - b)
  const flops = K * 6 * 2 * n * d * r
  console.log(`threads ${threads}: median ${times[6].toFixed(1)} ms, ${(flops / times[6] / 1e6).toFixed(1)} GFLOP/s`)
}

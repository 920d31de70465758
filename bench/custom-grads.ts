// GELU and LayerNorm with hand-written gradients (packages/tensor-ops) against autodiff of the
// same expressions, at the shapes of a base-size fine-tuning step (issue 10): one run, the two
// forms interleaved so the machine's noise falls on both alike.
//   1. each op alone, forward + backward: median ms and the peak tensor bytes of the call;
//   2. a stack of transformer FFN sub-layers, LayerNorm(x + W₂·GELU(W₁·x + b₁) + b₂), whose
//      weights train (FFT): the peak tensor bytes of a forward + backward. This is where the
//      tape's contents show: autodiff keeps every intermediate of both expressions per layer until
//      the backward pass reaches it.
// Prints a table; writes bench/results/custom-grads.json.
//   npx tsx bench/custom-grads.ts [--rows 1800] [--width 768] [--layers 6] [--reps 9]
// --rows defaults to a ViT-B/16 batch of ≈ 9 images × 197 tokens (bench:methods' base rows).
import fs from 'node:fs'
import path from 'node:path'
import { initBackend, tf } from '@iisan/model'
import { fail, parseOptions, positiveInt } from '@iisan/pipeline/cli/args'
import { gelu, geluExpression, layerNorm, layerNormExpression } from '@iisan/tensor-ops'
import { loadAverage, machine, machineLine } from './lib/machine.ts'
import { median } from './lib/stats.ts'

const USAGE = 'usage: npx tsx bench/custom-grads.ts [--rows N] [--width N] [--layers N] [--reps N]'
const { values } = parseOptions(
  { rows: { type: 'string', default: '1800' }, width: { type: 'string', default: '768' }, layers: { type: 'string', default: '6' }, reps: { type: 'string', default: '9' } },
  USAGE,
)
const rows = positiveInt('rows', values.rows)
const d = positiveInt('width', values.width)
const layers = positiveInt('layers', values.layers)
const reps = positiveInt('reps', values.reps)
if (d % 2 !== 0) fail(`--width must be even (got ${d})`)

await initBackend({ prefer: 'wasm' })
console.error(machineLine())

type Forms = { gelu: (x: tf.Tensor) => tf.Tensor; layerNorm: typeof layerNorm }
const FORMS: Record<'hand-written' | 'autodiff', Forms> = {
  'hand-written': { gelu, layerNorm },
  autodiff: { gelu: geluExpression, layerNorm: layerNormExpression },
}

const hidden = tf.randomNormal([rows, 4 * d], 0, 1, 'float32', 1) as tf.Tensor2D
const states = tf.randomNormal([rows, d], 0, 1, 'float32', 2) as tf.Tensor2D
const gamma = tf.randomNormal([d], 1, 0.1, 'float32', 3)
const beta = tf.randomNormal([d], 0, 0.1, 'float32', 4)
const stack = Array.from({ length: layers }, (_, l) => ({
  w1: tf.variable(tf.randomNormal([d, 4 * d], 0, 0.02, 'float32', 10 + l)),
  b1: tf.variable(tf.zeros([4 * d])),
  w2: tf.variable(tf.randomNormal([4 * d, d], 0, 0.02, 'float32', 50 + l)),
  b2: tf.variable(tf.zeros([d])),
  gamma: tf.variable(tf.ones([d])),
  beta: tf.variable(tf.zeros([d])),
}))

const cases = {
  gelu: (f: Forms) => tf.grads((x: tf.Tensor) => f.gelu(x))([hidden]),
  layerNorm: (f: Forms) => tf.grads((x: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => f.layerNorm(x, g, b, 1e-12))([states, gamma, beta]),
  [`${layers} FFN sub-layers`]: (f: Forms) => {
    const { grads, value } = tf.variableGrads(() =>
      tf.sum(
        stack.reduce<tf.Tensor2D>((x, p) => {
          const inner = f.gelu(tf.add(tf.matMul(x, p.w1), p.b1))
          return f.layerNorm(tf.add(x, tf.add(tf.matMul(inner as tf.Tensor2D, p.w2), p.b2)), p.gamma, p.beta, 1e-12) as tf.Tensor2D
        }, states),
      ) as tf.Scalar,
    )
    return [value, ...Object.values(grads)]
  },
} satisfies Record<string, (f: Forms) => tf.Tensor[]>

const run = (what: keyof typeof cases, form: Forms): number => {
  const start = performance.now()
  const out = cases[what](form)
  out.forEach((t) => t.dataSync())
  const ms = performance.now() - start
  out.forEach((t) => t.dispose())
  return ms
}

const times = new Map<string, number[]>()
for (let rep = 0; rep < reps + 1; rep++)
  for (const what of Object.keys(cases) as (keyof typeof cases)[])
    for (const [name, form] of Object.entries(FORMS)) {
      const ms = run(what, form)
      if (rep > 0) times.set(`${what}|${name}`, [...(times.get(`${what}|${name}`) ?? []), ms]) // the first round warms up
    }

const results = []
for (const what of Object.keys(cases) as (keyof typeof cases)[])
  for (const [name, form] of Object.entries(FORMS)) {
    const before = tf.memory().numBytes
    const info = await tf.profile(() => {
      cases[what](form).forEach((t) => t.dispose())
    })
    results.push({ what, form: name, medianMs: median(times.get(`${what}|${name}`)!), peakTensorBytes: info.peakBytes - before })
  }

const mb = (b: number) => (b / 2 ** 20).toFixed(1)
console.log(`Hand-written gradients vs autodiff, forward + backward, rows ${rows}, width ${d} (FFN ${4 * d}), ${reps} interleaved reps; ${machineLine()}`)
console.log('| what | form | median ms | peak tensor MB above the inputs | ms ratio | peak ratio |')
console.log('| --- | --- | ---: | ---: | ---: | ---: |')
for (const r of results) {
  const base = results.find((o) => o.what === r.what && o.form === 'autodiff')!
  console.log(`| ${r.what} | ${r.form} | ${r.medianMs.toFixed(1)} | ${mb(r.peakTensorBytes)} | ${(r.medianMs / base.medianMs).toFixed(2)} | ${(r.peakTensorBytes / base.peakTensorBytes).toFixed(2)} |`)
}
const out = path.join(import.meta.dirname, 'results', 'custom-grads.json')
fs.writeFileSync(
  out,
  JSON.stringify({ date: new Date().toISOString(), command: `npx tsx bench/custom-grads.ts ${process.argv.slice(2).join(' ')}`.trim(), machine: machine(), loadAverage: loadAverage(), rows, width: d, layers, reps, results }, null, 2) + '\n',
)
console.log(`wrote ${path.relative(process.cwd(), out)}`)

// `npx tsx bench/profile-step.ts [--method iisan|sasrec-id] [--top N]` (methods that read ids or cached states): where one training step's time goes, per
// kernel and shape (tf.profile), on random base-shaped states and real Scientific batches.
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { SequentialRecommender, createModelOptimizers, defaultTrainingConfig, initBackend, logProbabilities, mulberry32, protocolFromTsv, tf, trainStep, type ParamGroup } from '@iisan/model'
import { SCIENTIFIC_DIR } from '@iisan/pipeline'
import { fail, parseOptions, positiveInt } from '@iisan/pipeline/cli/args'
import { profileKernels } from '@iisan/tensor-ops/profile'
import { STEP_BENCH_METHODS, randomBaseInputs, stepBenchMethod } from './method-choice.ts'

const { values } = parseOptions(
  { method: { type: 'string', default: 'iisan' }, top: { type: 'string', default: '25' } },
  `usage: npx tsx bench/profile-step.ts [--method ${STEP_BENCH_METHODS.join('|')}] [--top N]`,
)
const method = stepBenchMethod(values.method)
const top = positiveInt('top', values.top)
let protocol
try {
  protocol = protocolFromTsv(readFileSync(path.join(SCIENTIFIC_DIR, 'items.tsv'), 'utf8'), readFileSync(path.join(SCIENTIFIC_DIR, 'users.tsv'), 'utf8'))
} catch (err) {
  fail(`cannot read the Scientific dataset in ${SCIENTIFIC_DIR}: ${(err as Error).message}`)
}
await initBackend()
const { data } = protocol
const N = data.numItems
const settings = defaultTrainingConfig(method)
const inputs = randomBaseInputs(method, N)
const model = new SequentialRecommender(method.modelConfig(N, settings, inputs), inputs)
const optimizers = createModelOptimizers(model, settings)
await model.prepareTraining()
const logProb = logProbabilities(data.trainCounts)
const random = mulberry32(3)
const batch = () => Array.from({ length: 64 }, () => data.trainWindows[Math.floor(random() * data.trainWindows.length)])
for (let i = 0; i < 3; i++) trainStep(model, optimizers, batch(), logProb)

const started = performance.now()
const info = await profileKernels(() => {
  trainStep(model, optimizers, batch(), logProb)
})
const wall = performance.now() - started
const byKernel = new Map<string, { ms: number; calls: number }>()
for (const k of info.kernels) {
  const key = `${k.name} ${k.inputShapes.map((s) => `[${s}]`).join('·')}`
  const entry = byKernel.get(key) ?? { ms: 0, calls: 0 }
  entry.ms += Number(k.kernelTimeMs) || 0
  entry.calls++
  byKernel.set(key, entry)
}
const rows = [...byKernel].sort((a, b) => b[1].ms - a[1].ms)
const total = rows.reduce((s, [, v]) => s + v.ms, 0)
console.log(`wall ${wall.toFixed(0)} ms (profiled), kernel time ${total.toFixed(0)} ms, ${info.kernels.length} kernel calls`)
console.table(rows.slice(0, top).map(([k, v]) => ({ kernel: k.slice(0, 90), calls: v.calls, ms: +v.ms.toFixed(1), share: `${((100 * v.ms) / total).toFixed(1)}%` })))
const byName = new Map<string, number>()
for (const k of info.kernels) byName.set(k.name, (byName.get(k.name) ?? 0) + (Number(k.kernelTimeMs) || 0))
console.table([...byName].sort((a, b) => b[1] - a[1]).slice(0, 15).map(([name, ms]) => ({ name, ms: +ms.toFixed(1) })))

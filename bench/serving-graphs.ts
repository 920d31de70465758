// `npx tsx bench/serving-graphs.ts [--items N] [--batches 1,4,8,16,32,64] [--repeats R]`: what one
// exact recommendation costs inside ONNX Runtime, by batch size: the whole serving graph
// (user encoder, product with every item, exclusions, top k; serving-onnx.ts) with the item
// matrix fed on every run, the same graph holding the rows packed (as the API serves below the
// approximate index's size), and the user-encoder graph alone; the difference between the first
// and the last is the product, the exclusions and the top k. (The
// product graph of serving-onnx.ts is not that part: it hands its whole [B, N] product back to
// JavaScript, for the approximate index's shortlists.) One thread, random
// weights (the cost does not depend on them), D = 64, T = 10, k = 10, 10-item histories. The
// graphs run in turn within each repetition, so a noisy neighbour slows all of them alike.
// Prints µs per request (medians) and writes bench/results/serving-graphs.json.
import fs from 'node:fs'
import path from 'node:path'
import { SequentialRecommender, initBackend, mulberry32, sasRecIdConfig } from '@iisan/model'
import { ServingRuntime } from '@iisan/model/serving-onnx'
import { resolveRuntime } from '@iisan/backbones/onnx/onnx-runtime'
import { parseOptions, positiveInt } from '@iisan/pipeline/cli/args'
import { loadAverage, machine } from './lib/machine.ts'

const REPO = path.resolve(import.meta.dirname, '..')
const USAGE = 'usage: npx tsx bench/serving-graphs.ts [--items N] [--batches 1,4,8,16,32,64] [--repeats R]'
const { values } = parseOptions({ items: { type: 'string', default: '20314' }, batches: { type: 'string', default: '1,4,8,16,32,64' }, repeats: { type: 'string', default: '200' } }, USAGE)
const N = positiveInt('items', values.items)
const repeats = positiveInt('repeats', values.repeats)
const batches = values.batches.split(',').map((b) => positiveInt('batches', b))
const K = 10
const HISTORY = 10

await initBackend()
const rt = await resolveRuntime('onnx')
if (rt.name !== 'onnx') throw new Error('onnxruntime-node does not load here')
const random = mulberry32(7)
const model = new SequentialRecommender(sasRecIdConfig(N))
const { embeddingDim: D, maxSeqLen: T, numHeads } = model.config
// row 0 is padding, as in a served version
const items = Float32Array.from({ length: (N + 1) * D }, (_, i) => (i < D ? 0 : (random() - 0.5) * 0.2))
const runtime = await ServingRuntime.create(rt.ort, model.userEncoder, D, T, numHeads)
const packedRuntime = await ServingRuntime.create(rt.ort, model.userEncoder, D, T, numHeads, items)

/** B histories of 10 random items: left-padded windows [B·T] and exclusions [B·(HISTORY + 1)] (each with a 0). */
function requests(B: number) {
  const windows = new Int32Array(B * T)
  const exclude = new Int32Array(B * (HISTORY + 1))
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < HISTORY; t++) {
      const row = 1 + Math.floor(random() * N)
      windows[b * T + (T - HISTORY) + t] = row
      exclude[b * (HISTORY + 1) + t] = row
    }
  }
  return { windows, exclude }
}

const graphs = {
  recommend: (r: ReturnType<typeof requests>) => runtime.recommend(items, r.windows, r.exclude, K),
  packed: (r: ReturnType<typeof requests>) => packedRuntime.recommend(items, r.windows, r.exclude, K),
  states: (r: ReturnType<typeof requests>) => runtime.states(items, r.windows),
}
type Graph = keyof typeof graphs
const inputs = batches.map((B) => ({ B, ...requests(B) }))
const times = new Map<string, number[]>()
for (let rep = -10; rep < repeats; rep++) {
  for (const input of inputs) {
    for (const graph of Object.keys(graphs) as Graph[]) {
      const started = performance.now()
      graphs[graph](input)
      const us = ((performance.now() - started) * 1000) / input.B
      if (rep >= 0) times.set(`${graph} ${input.B}`, [...(times.get(`${graph} ${input.B}`) ?? []), us])
    }
  }
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
const rows = batches.map((B) => {
  const [recommend, packed, states] = (['recommend', 'packed', 'states'] as const).map((g) => median(times.get(`${g} ${B}`)!))
  const scoring = recommend - states
  // the product's multiply-adds at the rate of the whole scoring part: a floor on the GEMM's own rate
  return { batch: B, recommendUs: recommend, recommendPackedUs: packed, userEncoderUs: states, scoringUs: scoring, scoringGflops: (2 * N * D) / (scoring * 1e3) }
})
const fmt = (x: number) => x.toFixed(1).padStart(8)
console.log(`µs per request (median of ${repeats}), ${N.toLocaleString('en-US')} items, D = ${D}, T = ${T}, k = ${K}, one thread`)
console.log('   batch  whole graph  rows packed  user encoder  product + exclusions + top k  (as GFLOP/s of the product)')
for (const r of rows) {
  console.log(`${String(r.batch).padStart(8)}  ${fmt(r.recommendUs)}     ${fmt(r.recommendPackedUs)}     ${fmt(r.userEncoderUs)}      ${fmt(r.scoringUs)}                   ${fmt(r.scoringGflops)}`)
}
const out = path.join(REPO, 'bench/results/serving-graphs.json')
fs.writeFileSync(
  out,
  `${JSON.stringify(
    {
      generatedAt: new Date().toISOString(),
      command: `npx tsx bench/serving-graphs.ts --items ${N} --batches ${batches.join(',')} --repeats ${repeats}`,
      source: 'measured',
      machine: { ...machine(), loadAverage: loadAverage() },
      setup: `ONNX Runtime, one intra-op thread; ${N} items, D = ${D}, T = ${T}, ${numHeads} heads, ${model.config.numBlocks} blocks, k = ${K}; random weights; 10-item histories; µs per request = a run's time / its batch, median`,
      rows,
    },
    null,
    2,
  )}\n`,
)
console.log(`wrote ${path.relative(process.cwd(), out)}`)
runtime.release()
packedRuntime.release()
model.dispose()

// `npm run bench:train -- --method iisan|sasrec-id --steps N [--json PATH] [--users N] [--threads 1,2] [--states file|memory] [--skip-torch]`
//
// Training-step and evaluation cost on the full Scientific users (real sequences, so batches
// hold the real mix of padding and repeated items) with the paper's configuration: D = 64,
// 2 blocks, 2 heads, T = 10, batch 64; IISAN cached, intra_inter, 7 side layers, r = 64, and
// random base-shaped states (13 × 768 per modality — the cost does not depend on the values).
// Prints a table and writes JSON (default bench/results/train-<method>.json). --threads runs the
// same steps with each number of training threads (methods with a `trainThreads` setting), the
// first count's figures at the top level and each count's under `threads`. --states says where the
// cached states live: a rows file read per batch (the default, as the worker trains) or one array in
// memory (before issue 12); run it once each way to compare peak RSS, since a process's peak is its own.
// For IISAN, when a python3 with torch is found, bench/reference/torch_iisan_step.py times the
// cached step at the authors' shapes in PyTorch on 2 threads in the same run (--skip-torch: not).
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import {
  SequentialRecommender,
  createModelOptimizers,
  defaultTrainingConfig,
  evaluateRanking,
  initBackend,
  logProbabilities,
  mulberry32,
  protocolFromTsv,
  tf,
  trainStep,
  type IisanConfig,
  type ParamGroup,
} from '@iisan/model'
import { SCIENTIFIC_DIR } from '@iisan/pipeline'
import { fail, parseOptions, positiveInt } from '@iisan/pipeline/cli/args'
import { STEP_BENCH_METHODS, randomBaseInputs, stepBenchMethod } from './method-choice.ts'
import { STATES_PLACES, type StatesPlace } from './random-states.ts'
import { runTorchScript } from './lib/torch.ts'
import { loadAverage, machine } from './lib/machine.ts'

const USAGE = `usage: npm run bench:train -- [--method ${STEP_BENCH_METHODS.join('|')}] [--steps N] [--users N] [--json PATH] [--skip-eval] [--skip-torch] [--threads N,M,…] [--states ${STATES_PLACES.join('|')}]`
const { values } = parseOptions(
  {
    method: { type: 'string', default: 'iisan' },
    steps: { type: 'string', default: '20' },
    users: { type: 'string' },
    json: { type: 'string' },
    'skip-eval': { type: 'boolean', default: false },
    'skip-torch': { type: 'boolean', default: false },
    threads: { type: 'string' },
    states: { type: 'string', default: 'file' },
  },
  USAGE,
)
if (!(STATES_PLACES as readonly string[]).includes(values.states!)) fail(`--states must be ${STATES_PLACES.join(' or ')} (got ${JSON.stringify(values.states)})`)
const statesPlace = values.states as StatesPlace
const chosen = stepBenchMethod(values.method)
const method = chosen.name
const steps = positiveInt('steps', values.steps)
const maxUsers = values.users === undefined ? undefined : positiveInt('users', values.users)
const BATCH = 64
const threadCounts = values.threads === undefined ? [undefined] : values.threads.split(',').map((t) => positiveInt('threads', t))
if (values.threads !== undefined && !('trainThreads' in chosen.configProperties)) fail(`--threads: ${method} has no trainThreads setting`)

let protocol
try {
  let usersTsv = readFileSync(path.join(SCIENTIFIC_DIR, 'users.tsv'), 'utf8')
  if (maxUsers !== undefined) usersTsv = usersTsv.split('\n').slice(0, maxUsers).join('\n')
  protocol = protocolFromTsv(readFileSync(path.join(SCIENTIFIC_DIR, 'items.tsv'), 'utf8'), usersTsv)
} catch (err) {
  fail(`cannot read the Scientific dataset in ${SCIENTIFIC_DIR}: ${(err as Error).message}`)
}
const { data } = protocol
// In-batch targets need at least two training sequences.
if (data.stats.usersKept < 2) fail(`${data.stats.usersKept} user(s) with enough interactions${maxUsers !== undefined ? ` in the first ${maxUsers}` : ''}; at least 2 are needed (raise --users)`)
const backend = await initBackend()
const N = data.numItems

const startedInputs = performance.now()
const inputs = randomBaseInputs(chosen, N, statesPlace)
if (inputs.states) console.log(`random states: 2 × ${N} items × 7 side layers of 13 × 768, float16, in ${statesPlace === 'file' ? 'a rows file' : 'memory'}, in ${((performance.now() - startedInputs) / 1000).toFixed(1)} s`)
const logProb = logProbabilities(data.trainCounts)
const stepsPerEpoch = Math.ceil(data.trainWindows.length / BATCH)
const WARMUP = 2

/** steps + WARMUP steps on the same batches for every thread count; the model of the last count is kept for evaluation */
async function measure(threads: number | undefined): Promise<{ model: SequentialRecommender; times: number[]; meanUnique: number }> {
  const settings = defaultTrainingConfig(chosen, threads === undefined ? {} : { trainThreads: threads })
  const model = new SequentialRecommender(chosen.modelConfig(N, settings, inputs), inputs)
  // as train() does: the item encoder's training pass on its faster runtime where it has one
  await model.prepareTraining()
  const optimizers = createModelOptimizers(model, settings)
  const random = mulberry32(7)
  const times: number[] = []
  let uniqueItems = 0
  for (let s = 0; s < steps + WARMUP; s++) {
    const batch = Array.from({ length: BATCH }, () => data.trainWindows[Math.floor(random() * data.trainWindows.length)])
    const t = performance.now()
    trainStep(model, optimizers, batch, logProb)
    const elapsed = (performance.now() - t) / 1000
    if (s >= WARMUP) {
      times.push(elapsed)
      uniqueItems += new Set(batch.flatMap((w) => Array.from(w)).filter((id) => id !== 0)).size
    }
  }
  for (const o of Object.values(optimizers)) o.dispose()
  return { model, times, meanUnique: uniqueItems / steps }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
const runs: { threads: number | undefined; times: number[] }[] = []
let measured: Awaited<ReturnType<typeof measure>> | undefined
for (const threads of threadCounts) {
  measured?.model.dispose()
  measured = await measure(threads)
  runs.push({ threads, times: measured.times })
  if (threads !== undefined) console.log(`${threads} thread(s): median step ${median(measured.times).toFixed(3)} s`)
}
const { model, meanUnique } = measured!
const config = model.config
const times = runs[0].times
const medianStep = median(times)

let evalSeconds: number | null = null
// the evaluation's two parts: every item through the item encoder, then every test user's full ranking
let evalParts: { item_matrix_s: number; ranking_s: number } | null = null
if (!values['skip-eval']) {
  const t = performance.now()
  // as the trainer evaluates: on the item encoder's inference runtime where it has one (ORT for IISAN)
  const matrix = await model.itemMatrixForInference()
  matrix.dataSync()
  const ranked = performance.now()
  await evaluateRanking(model, data.test, matrix)
  matrix.dispose()
  evalSeconds = (performance.now() - t) / 1000
  evalParts = { item_matrix_s: (ranked - t) / 1000, ranking_s: (performance.now() - ranked) / 1000 }
}

const san = inputs.states ? sanFlops(config as IisanConfig, meanUnique) : { executed: 0, naive: 0 }
const userSide = userSideFlops(BATCH, config.maxSeqLen, config.embeddingDim)
const gflopsPerStep = san.executed + userSide
const result = {
  method,
  backend,
  // where the item side's training pass ran (IISAN's SAN: ONNX Runtime wherever it loads)
  training_runtime: model.itemEncoder.trainingRuntime ?? 'tfjs',
  machine: { ...machine(), loadAverage: loadAverage() },
  generated_at: new Date().toISOString(),
  users: data.stats.usersKept,
  items: N,
  steps,
  batch_size: BATCH,
  mean_unique_items_per_batch: meanUnique,
  states: inputs.states ? statesPlace : null,
  median_step_s: medianStep,
  steps_per_epoch: stepsPerEpoch,
  epoch_s: medianStep * stepsPerEpoch,
  eval_s: evalSeconds,
  eval_parts: evalParts,
  peak_rss_mb: process.resourceUsage().maxRSS / 1024,
  // the wasm heap only grows: its size is the peak tensor memory of the run
  wasm_heap_mb: backend === 'wasm' ? (tf.backend() as unknown as { wasm: { HEAPU8: Uint8Array } }).wasm.HEAPU8.length / 2 ** 20 : null,
  trainable_params: model.params.count(),
  gflops_per_step: gflopsPerStep,
  gflops_per_step_layer_by_layer: san.naive + userSide,
  achieved_gflops: gflopsPerStep / medianStep,
  step_times_s: times,
  ...(values.threads === undefined
    ? {}
    : { threads: runs.map((r) => ({ threads: r.threads, median_step_s: median(r.times), ratio_to_first: median(r.times) / medianStep, step_times_s: r.times })) }),
}
console.table({
  [method]: {
    backend,
    'SAN on': result.training_runtime,
    cores: result.machine.cores,
    states: result.states ?? '-',
    'median step (s)': +medianStep.toFixed(3),
    'epoch (s)': +(medianStep * stepsPerEpoch).toFixed(1),
    'eval (s)': evalSeconds === null ? '-' : +evalSeconds.toFixed(1),
    'peak RSS (MB)': Math.round(result.peak_rss_mb),
    'trainable params': result.trainable_params,
    'GFLOP/step': +gflopsPerStep.toFixed(2),
    'GFLOP/s': +result.achieved_gflops.toFixed(1),
  },
})
// the authors' step on this CPU, as near as we can run it: a PyTorch rewrite of their step, for
// the methods one exists for (IISAN's cached step: every B·(T+1) slot through the SAN), 2 threads,
// the same steps count; optional
const TORCH_STEPS: Partial<Record<string, string>> = { iisan: 'bench/reference/torch_iisan_step.py' }
const TORCH_STEP = TORCH_STEPS[method]
const torchStep =
  TORCH_STEP && !values['skip-torch']
    ? runTorchScript<{ torch: string; threads: number; trainableParams: number; slotsPerStep: number; medianStepSeconds: number; stepTimesSeconds: number[] }>(TORCH_STEP, ['--threads', '2', '--steps', String(steps)])
    : null
if (torchStep?.source === 'measured') {
  console.log(`\nPyTorch ${torchStep.torch} reference (${TORCH_STEP}: the cached step at the authors' shapes, ${torchStep.slotsPerStep} slots, ${torchStep.threads} threads), same run:`)
  console.table({ [method]: { 'ours (s)': +medianStep.toFixed(3), 'PyTorch (s)': +torchStep.medianStepSeconds.toFixed(3), 'ours / PyTorch': `${(medianStep / torchStep.medianStepSeconds).toFixed(2)}×`, 'PyTorch params': torchStep.trainableParams } })
} else if (torchStep) console.log(`PyTorch reference skipped: ${torchStep.reason}`)
const resultWithReference = { ...result, torch_reference: torchStep, ratio_to_torch: torchStep?.source === 'measured' ? medianStep / torchStep.medianStepSeconds : null }
const out = values.json ?? `bench/results/train-${method}.json`
mkdirSync(path.dirname(out), { recursive: true })
writeFileSync(out, JSON.stringify(resultWithReference, null, 2))
console.log(`wrote ${out}`)

/**
 * Matmul FLOPs of one SAN + fusion step on n unique items, as executed: every SANB costs 3× its
 * forward (forward, input gradient, weight gradient); the F→P pair runs reassociated
 * (san.ts linearPair): 3 products of d×d×D and 3 of n×d×D instead of n×d×d ones.
 * `naive` is the same step computed layer by layer (the PyTorch formulation).
 */
function sanFlops(c: IisanConfig, n: number): { executed: number; naive: number } {
  const K = c.sideLayers.length
  const d = c.text.width
  const D = c.embeddingDim
  const towers = c.modality === 'intra_inter' ? 3 : c.modality === 'intra' ? 2 : 1
  const sanbs = 3 * K * (2 * n * d * c.reduction * 2)
  const fusion = 3 * 2 * n * towers * D * D
  const pairExecuted = 3 * 2 * d * d * D + 3 * 2 * n * d * D
  const pairNaive = 3 * (2 * n * d * d + 2 * n * d * D)
  return { executed: (towers * (sanbs + pairExecuted) + fusion) / 1e9, naive: (towers * (sanbs + pairNaive) + fusion) / 1e9 }
}

/** User encoder + in-batch logits, forward and backward. */
function userSideFlops(B: number, T: number, D: number): number {
  const rows = B * T
  const perBlock = 4 * 2 * rows * D * D + 2 * 2 * rows * D * 4 * D + 2 * 2 * B * T * T * D
  const logits = 2 * rows * D * B * (T + 1)
  return (3 * (2 * perBlock + logits)) / 1e9
}

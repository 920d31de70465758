// `npm run bench:methods [-- --quick] [--size demo|base|both] [--users N] [--steps N] [--epochs N]
//   [--batch N] [--content-batch N] [--methods a,b,…] [--cache-sample N]`
// `npm run bench:methods -- --merge FILE [--methods a,b,…]`: runs nothing; merges the rows of
//   another run's methods.json (another worktree or machine) into bench/results, as a run would
//   (every size of FILE unless --size says which).
//
// Every registered training method (METHODS), side by side in one run, on the same batches of real
// Scientific sequences (the first --users users; the seeded batch order `train` itself uses) with
// the same backbones. Two sizes:
//   demo — the generated demo BERT/ViT pair (d 64, 4 layers); whole epochs through `train`
//          (validation and test HR@10 / NDCG@10); cached-states methods read states built by the
//          same demo backbones, stored as float16 like the embedding cache (that one-off build is
//          timed separately: the cost IISAN pays once);
//   base — bert-base / vit-b-16 shapes with random weights; timed steps only (a base step of a
//          method that runs the backbones takes minutes here); cached-states methods read random
//          base-shaped states and the cache build is extrapolated from a measured sample.
// Scientific has no images: every item gets a deterministic synthetic 224×224 RGB pattern (PNG,
// one of 64, chosen by item index) so that the image backbone runs.
//
// Each method runs in its own child process, one after the other: its peak RSS is its own (the
// wasm heap only grows, so methods sharing a process would inherit each other's peaks), and a
// method that dies (out of wasm memory) fails alone. Prints a table per size and the FFT / IISAN
// ratios next to the paper's reference figures; writes bench/results/methods.json (a run of one
// size keeps the other size's section, a run of some methods the other methods' rows of its size,
// each row labelled with its run) and bench/results/methods.svg, whose tables and chart show every
// row. --quick (3 steps, demo only) writes its files to the temp folder instead.
import { fork } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import cliProgress from 'cli-progress'
import { IMAGE_SIDE, PATTERNS, syntheticImage } from './lib/synthetic-images.ts'
import {
  METHODS,
  SequentialRecommender,
  createModelOptimizers,
  defaultSideLayers,
  defaultTrainingConfig,
  getMethod,
  initBackend,
  keepLayers,
  logProbabilities,
  protocolFromTsv,
  sideLayersFor,
  tf,
  train,
  trainStep,
  Mulberry32,
  type AnyTrainingMethod,
  type CachedStates,
  type MethodInputs,
  type ModalityStates,
  type ProtocolData,
} from '@iisan/model'
import { tpme, PAPER_TPME_WEIGHTS } from '@iisan/model/tpme'
import { ensureDefaultBackbones, loadImageBackbone, loadTextBackbone, readModelConfig } from '@iisan/backbones'
import { bertHfConfig, demoVocabText, vitHfConfig, writeRandomBert, writeRandomVit } from '@iisan/backbones/default'
import { float32ToFloat16 } from '@iisan/safetensors'
import { profileKernels } from '@iisan/tensor-ops/profile'
import { loadItemContent } from '@iisan/pipeline/training/item-content'
import { SCIENTIFIC_DIR } from '@iisan/pipeline/dataset/sample'
import { errorMessage, fail, parseOptions, positiveInt } from '@iisan/pipeline/cli/args'
import { mergeRows, type EarlierRun, type RunLabel } from './lib/methods-merge.ts'
import { randomBaseStates } from './random-states.ts'
import { machine as benchMachine } from './lib/machine.ts'
import { median } from './lib/stats.ts'

const CHILD_ENV = 'IISAN_BENCH_METHODS_CHILD'
const RESULTS = 'bench/results'
const WARMUP = 2
const SEED = 42
/**
 * The paper's reference figures, not measured here: FFT vs IISAN on the authors' A6000 (IISAN,
 * SIGIR 2024, abstract): 443 s → 22 s per epoch and 47 GB → 3 GB GPU memory.
 */
const PAPER_REFERENCE = { over: 'fft', under: 'iisan', epochSeconds: [443, 22], gpuMemoryGb: [47, 3] } as const

type Size = 'demo' | 'base'
interface Dirs {
  text: string
  image: string
}

interface MethodSpec {
  kind: 'method'
  size: Size
  method: string
  mode: 'epochs' | 'steps'
  /** this method's users per step */
  batch: number
  /** the shared batch: step s of every method takes the first `batch` windows of the shared step s */
  sharedBatch: number
  steps: number
  epochs: number
  users: number
  dirs: Dirs
  /** where cached-states methods read: a states folder built by the cache child, or random base-shaped states */
  states: { kind: 'folder'; dir: string } | { kind: 'random' }
}

interface CacheSpec {
  kind: 'cache'
  size: Size
  users: number
  dirs: Dirs
  out: string
  /** null: encode every item (demo); else time this many items and extrapolate to the catalogue */
  sample: number | null
}

type ChildSpec = MethodSpec | CacheSpec

interface Progress {
  type: 'progress'
  done: number
  total: number
  phase: string
}

interface EpochFigures {
  epoch: number
  trainLoss: number
  seconds: number
  evalSeconds: number
  validation: { hr10: number; ndcg10: number }
}

interface MethodResult {
  method: string
  reads: string
  batch: number
  mode: 'epochs' | 'steps'
  users: number
  items: number
  trainWindows: number
  warmupSteps: number
  timedSteps: number
  medianStepSeconds: number
  stepSeconds: number[]
  /** the child's CPU time (user + system) per step, median over the timed steps: less sensitive than wall time to other processes on the machine */
  medianStepCpuSeconds: number
  /** os.loadavg()[0] when training started and ended (the machine may be shared) */
  loadAverage: [number, number]
  stepLosses: number[]
  stepsPerEpoch: number
  epochSeconds: number
  epochSecondsKind: 'measured' | 'extrapolated'
  meanUniqueItemsPerBatch: number
  epochs: EpochFigures[] | null
  bestEpoch: number | null
  validation: { hr10: number; ndcg10: number } | null
  test: { hr10: number; ndcg10: number } | null
  /** max of tf.memory().numBytes sampled before and after every step */
  sampledPeakTensorBytes: number
  /** tf.profile's peak over the kernels of one whole step (forward, backward and Adam) */
  stepPeakTensorBytes: number
  wasmHeapBytes: number | null
  /** the child process's maxRSS: loading its inputs, training and evaluation */
  peakRssBytes: number
  /** process.memoryUsage().rss sampled before and after every step */
  trainRssPeakBytes: number
  trainableParams: number
  inputSeconds: number
  tensorsAtFirstTimedStep: number
  tensorsAtLastStep: number
  /** epochs: the last epoch's mean loss below the first's; steps: the last third's mean below the first third's (null: under 30 steps, too few to tell on different batches) */
  lossFalls: boolean | null
}

interface CacheResult {
  measured: boolean
  items: number
  sampleItems: number
  textSeconds: number
  imageSeconds: number
  loadSeconds: number
  textItemsPerSecond: number
  imageItemsPerSecond: number
  totalSeconds: number
  peakRssBytes: number
  stateBytes: number | null
}

const now = () => performance.now() / 1000
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length)
const MB = 2 ** 20

// ---------------------------------------------------------------------------------------------
// Shared by parent and children

function loadScientific(users: number) {
  const usersTsv = fs.readFileSync(path.join(SCIENTIFIC_DIR, 'users.tsv'), 'utf8').split('\n').slice(0, users).join('\n')
  return protocolFromTsv(fs.readFileSync(path.join(SCIENTIFIC_DIR, 'items.tsv'), 'utf8'), usersTsv)
}

/** The epoch order `train` uses (trainer.ts: Fisher–Yates with Mulberry32(seed)). */
function shuffledOrder(n: number, seed: number): number[] {
  const random = new Mulberry32(seed)
  const order = Array.from({ length: n }, (_, i) => i)
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(random.next() * (i + 1))
    ;[order[i], order[j]] = [order[j], order[i]]
  }
  return order
}

/** Step s: the first `batch` windows of the s-th shared batch of train's first-epoch order (wrapping around). */
function batchAt(data: ProtocolData, order: number[], s: number, batch: number, sharedBatch: number): Int32Array[] {
  const n = order.length
  return Array.from({ length: Math.min(batch, n) }, (_, j) => data.trainWindows[order[(s * sharedBatch + j) % n]])
}

// ---------------------------------------------------------------------------------------------
// Children

function send(message: object): void {
  process.send?.(message)
}

function progress(done: number, total: number, phase: string): void {
  send({ type: 'progress', done, total, phase } satisfies Progress)
}

function writeStates(dir: string, modality: string, states: ModalityStates): number {
  const data = states.data as Uint16Array
  fs.writeFileSync(path.join(dir, `${modality}.f16`), new Uint8Array(data.buffer, data.byteOffset, data.byteLength))
  fs.writeFileSync(path.join(dir, `${modality}.rows`), new Uint8Array(states.rowOf.buffer, states.rowOf.byteOffset, states.rowOf.byteLength))
  fs.writeFileSync(path.join(dir, `${modality}.json`), JSON.stringify({ numLayers: states.numLayers, width: states.width, layers: states.layers }))
  return data.byteLength
}

function readStates(dir: string): CachedStates {
  const read = (modality: 'text' | 'image'): ModalityStates => {
    const meta = JSON.parse(fs.readFileSync(path.join(dir, `${modality}.json`), 'utf8')) as { numLayers: number; width: number; layers?: number[] }
    const bytes = fs.readFileSync(path.join(dir, `${modality}.f16`))
    const rows = fs.readFileSync(path.join(dir, `${modality}.rows`))
    const data = new Uint16Array(bytes.byteLength / 2)
    new Uint8Array(data.buffer).set(bytes)
    const rowOf = new Int32Array(rows.byteLength / 4)
    new Uint8Array(rowOf.buffer).set(rows)
    return { ...meta, data, rowOf }
  }
  return { text: read('text'), image: read('image') }
}

/** The cache's work for this catalogue: every title through the text backbone, every image through the image backbone, float16. */
async function buildCache(spec: CacheSpec): Promise<CacheResult> {
  await initBackend()
  const { data, titles } = loadScientific(spec.users)
  const N = data.numItems
  const n = spec.sample === null ? N : Math.min(spec.sample, N)
  const items = titles.slice(1, n + 1)
  const images = await Promise.all(items.map((_, i) => syntheticImage(i + 1)))
  const total = 2 * n
  progress(0, total, 'loading backbones')
  let started = now()
  const text = await loadTextBackbone(spec.dirs.text)
  const image = await loadImageBackbone(spec.dirs.image)
  const loadSeconds = now() - started
  if (spec.sample !== null) {
    // kernel set-up and allocation outside the timed sample
    await text.encodeTexts(items.slice(0, 2))
    await image.encodeImages(images.slice(0, 1))
  }
  started = now()
  const textBatch = spec.sample === null ? 64 : n
  const encoded = await text.encodeTexts(items, { batchSize: textBatch, onProgress: (done) => progress(done, total, 'text states') })
  const textSeconds = now() - started
  started = now()
  const imageBatch = spec.sample === null ? 64 : 4
  const encodedImages = await image.encodeImages(images, { batchSize: imageBatch, onProgress: (done) => progress(n + done, total, 'image states') })
  const imageSeconds = now() - started
  const failed = encodedImages.filter((r) => !r.ok)
  if (failed.length) throw new Error(`${failed.length} synthetic image(s) failed to encode: ${(failed[0] as { error: string }).error}`)
  let stateBytes: number | null = null
  if (spec.sample === null) {
    // as the trainer holds them (pipeline/cache-states.ts): float16, the SAN's side layers only
    const identity = Int32Array.from({ length: N + 1 }, (_, i) => i - 1)
    const textLayers = defaultSideLayers(text.numLayers)
    const textStates = keepLayers({ numLayers: text.numLayers, width: text.hiddenSize, data: float32ToFloat16(encoded.clsPerLayer), rowOf: identity }, textLayers)
    const perImage = (image.numLayers + 1) * image.hiddenSize
    const imageValues = new Float32Array(N * perImage)
    encodedImages.forEach((r, i) => r.ok && imageValues.set(r.cls, i * perImage))
    const imageStates = keepLayers(
      { numLayers: image.numLayers, width: image.hiddenSize, data: float32ToFloat16(imageValues), rowOf: identity },
      sideLayersFor(textLayers, text.numLayers, image.numLayers),
    )
    fs.mkdirSync(spec.out, { recursive: true })
    stateBytes = writeStates(spec.out, 'text', textStates) + writeStates(spec.out, 'image', imageStates)
  }
  text.dispose()
  image.dispose()
  const textItemsPerSecond = n / textSeconds
  const imageItemsPerSecond = n / imageSeconds
  return {
    measured: spec.sample === null,
    items: N,
    sampleItems: n,
    textSeconds: spec.sample === null ? textSeconds : N / textItemsPerSecond,
    imageSeconds: spec.sample === null ? imageSeconds : N / imageItemsPerSecond,
    loadSeconds,
    textItemsPerSecond,
    imageItemsPerSecond,
    totalSeconds: loadSeconds + (spec.sample === null ? textSeconds + imageSeconds : N / textItemsPerSecond + N / imageItemsPerSecond),
    peakRssBytes: process.resourceUsage().maxRSS * 1024,
    stateBytes,
  }
}

/** What the method reads, built according to its `reads`. */
async function methodInputs(method: AnyTrainingMethod, spec: MethodSpec, data: ProtocolData, titles: string[]): Promise<MethodInputs> {
  const reads = method.reads
  switch (reads) {
    case 'item-ids':
      return {}
    case 'cached-states': {
      if (spec.states.kind === 'folder') return { states: readStates(spec.states.dir) }
      const text = readModelConfig(spec.dirs.text)
      const image = readModelConfig(spec.dirs.image)
      const textLayers = defaultSideLayers(text.numLayers)
      return {
        states: {
          text: randomBaseStates(data.numItems, 1, { numLayers: text.numLayers, width: text.hiddenSize, layers: textLayers }),
          image: randomBaseStates(data.numItems, 2, { numLayers: image.numLayers, width: image.hiddenSize, layers: sideLayersFor(textLayers, text.numLayers, image.numLayers) }),
        },
      }
    }
    case 'item-content': {
      const { content, backbones } = await loadItemContent(
        { titles, images: titles.map((_, i) => (i === 0 ? null : () => syntheticImage(i))) },
        spec.dirs,
        ({ done, total }) => progress(0, 1, `preparing images ${done}/${total}`),
      )
      return { content, backbones }
    }
    default: {
      const unknown: never = reads
      throw new Error(`bench:methods cannot build inputs for items read as ${String(unknown)}`)
    }
  }
}

async function runMethod(spec: MethodSpec): Promise<MethodResult> {
  const backend = await initBackend()
  const { data, titles } = loadScientific(spec.users)
  const method = getMethod(spec.method)
  progress(0, 1, 'loading inputs')
  let started = now()
  const inputs = await methodInputs(method, spec, data, titles)
  const inputSeconds = now() - started
  const settings = defaultTrainingConfig(method, { batchSize: spec.batch, maxEpochs: spec.epochs, patience: spec.epochs, seed: SEED })
  progress(0, 1, 'building the model')
  const model = new SequentialRecommender(method.modelConfig(data.numItems, settings, inputs), inputs)
  const logProb = logProbabilities(data.trainCounts)
  const order = shuffledOrder(data.trainWindows.length, SEED)
  const stepsPerEpoch = Math.ceil(data.trainWindows.length / spec.batch)

  let sampledPeakTensorBytes = 0
  let trainRssPeakBytes = 0
  const sample = () => {
    sampledPeakTensorBytes = Math.max(sampledPeakTensorBytes, tf.memory().numBytes)
    trainRssPeakBytes = Math.max(trainRssPeakBytes, process.memoryUsage().rss)
  }
  const stepSeconds: number[] = []
  const stepCpuSeconds: number[] = []
  const stepLosses: number[] = []
  let tensorsAtFirstTimedStep = 0
  let cpuAtStart = process.cpuUsage()
  const cpuSince = () => {
    const d = process.cpuUsage(cpuAtStart)
    return (d.user + d.system) / 1e6
  }
  const recordStep = (seconds: number, loss: number) => {
    stepSeconds.push(seconds)
    stepCpuSeconds.push(cpuSince())
    stepLosses.push(loss)
    if (stepSeconds.length === WARMUP + 1) tensorsAtFirstTimedStep = tf.memory().numTensors
  }
  /** One whole step under tf.profile: its peak tensor bytes (tfjs keeps no peak counter otherwise). */
  const profiledStep = async (optimizers: ReturnType<typeof createModelOptimizers>, batch: Int32Array[]) => {
    const info = await profileKernels(() => trainStep(model, optimizers, batch, logProb))
    return { peakBytes: info.peakBytes, loss: info.result as unknown as number }
  }

  let epochs: EpochFigures[] | null = null
  let result: Awaited<ReturnType<typeof train>> | null = null
  let stepPeakTensorBytes = 0
  let epochSeconds: number
  const loadAtStart = os.loadavg()[0]
  started = now()
  if (spec.mode === 'epochs') {
    const total = stepsPerEpoch * spec.epochs
    let stepStart = 0
    progress(0, total, 'epoch 1')
    result = await train(model, data, settings, {
      shouldCancel: () => {
        sample()
        stepStart = now()
        cpuAtStart = process.cpuUsage()
        return false
      },
      onStep: (r) => {
        recordStep(now() - stepStart, r.loss)
        sample()
        progress((r.epoch - 1) * stepsPerEpoch + r.step, total, r.step === r.stepsPerEpoch ? `evaluating epoch ${r.epoch}` : `epoch ${r.epoch}`)
      },
      onEpoch: (e) => progress(e.epoch * stepsPerEpoch, total, e.epoch < spec.epochs ? `epoch ${e.epoch + 1}` : 'testing'),
    })
    epochs = result.epochs.map((e) => ({ epoch: e.epoch, trainLoss: e.trainLoss, seconds: e.seconds, evalSeconds: e.evalSeconds, validation: { hr10: e.validation.hr10, ndcg10: e.validation.ndcg10 } }))
    epochSeconds = result.secondsPerEpoch
    progress(total, total, 'profiling one step')
    // after training, with throwaway optimisers (their Adam slots are created inside the step, as in steady state)
    const optimizers = createModelOptimizers(model, settings)
    stepPeakTensorBytes = (await profiledStep(optimizers, batchAt(data, order, 0, spec.batch, spec.sharedBatch))).peakBytes
    Object.values(optimizers).forEach((o) => o?.dispose())
  } else {
    const optimizers = createModelOptimizers(model, settings)
    // as train() does: the item encoder's training pass on its faster runtime where it has one
    await model.prepareTraining()
    const total = WARMUP + spec.steps
    progress(0, total, 'warm-up')
    for (let s = 0; s < total; s++) {
      const batch = batchAt(data, order, s, spec.batch, spec.sharedBatch)
      sample()
      const t = now()
      cpuAtStart = process.cpuUsage()
      let loss: number
      if (s === WARMUP - 1) {
        // the last warm-up step runs under tf.profile (not timed: profiling slows every kernel)
        const profiled = await profiledStep(optimizers, batch)
        stepPeakTensorBytes = profiled.peakBytes
        loss = profiled.loss
      } else {
        loss = trainStep(model, optimizers, batch, logProb)
      }
      recordStep(now() - t, loss)
      sample()
      progress(s + 1, total, s + 1 < WARMUP ? 'warm-up' : 'timed steps')
      await new Promise((resolve) => setImmediate(resolve))
    }
    Object.values(optimizers).forEach((o) => o?.dispose())
    epochSeconds = NaN
  }
  const timedSeconds = stepSeconds.slice(WARMUP)
  const medianStepSeconds = median(timedSeconds)
  if (spec.mode === 'steps') epochSeconds = medianStepSeconds * stepsPerEpoch
  const uniquePerBatch = Array.from({ length: spec.mode === 'epochs' ? stepsPerEpoch : WARMUP + spec.steps }, (_, s) => {
    const batch = spec.mode === 'epochs' ? order.slice(s * spec.batch, (s + 1) * spec.batch).map((u) => data.trainWindows[u]) : batchAt(data, order, s, spec.batch, spec.sharedBatch)
    return new Set(batch.flatMap((w) => Array.from(w)).filter((id) => id !== 0)).size
  })
  const third = Math.max(1, Math.floor(stepLosses.length / 3))
  const lossFalls =
    epochs && epochs.length > 1
      ? epochs[epochs.length - 1].trainLoss < epochs[0].trainLoss
      : stepLosses.length >= 30
        ? mean(stepLosses.slice(-third)) < mean(stepLosses.slice(0, third))
        : null
  const out: MethodResult = {
    method: method.name,
    reads: method.reads,
    batch: spec.batch,
    mode: spec.mode,
    users: data.stats.usersKept,
    items: data.numItems,
    trainWindows: data.trainWindows.length,
    warmupSteps: WARMUP,
    timedSteps: timedSeconds.length,
    medianStepSeconds,
    stepSeconds,
    medianStepCpuSeconds: median(stepCpuSeconds.slice(WARMUP)),
    loadAverage: [loadAtStart, os.loadavg()[0]],
    stepLosses,
    stepsPerEpoch,
    epochSeconds,
    epochSecondsKind: spec.mode === 'epochs' ? 'measured' : 'extrapolated',
    meanUniqueItemsPerBatch: mean(uniquePerBatch),
    epochs,
    bestEpoch: result?.bestEpoch ?? null,
    validation: result ? { hr10: result.validation.hr10, ndcg10: result.validation.ndcg10 } : null,
    test: result ? { hr10: result.test.hr10, ndcg10: result.test.ndcg10 } : null,
    sampledPeakTensorBytes,
    stepPeakTensorBytes,
    wasmHeapBytes: backend === 'wasm' ? (tf.backend() as unknown as { wasm: { HEAPU8: Uint8Array } }).wasm.HEAPU8.length : null,
    peakRssBytes: process.resourceUsage().maxRSS * 1024,
    trainRssPeakBytes,
    trainableParams: model.params.count(),
    inputSeconds,
    tensorsAtFirstTimedStep,
    tensorsAtLastStep: tf.memory().numTensors,
    lossFalls,
  }
  model.dispose()
  return out
}

async function child(specFile: string): Promise<void> {
  const spec = JSON.parse(fs.readFileSync(specFile, 'utf8')) as ChildSpec
  try {
    const result = spec.kind === 'cache' ? await buildCache(spec) : await runMethod(spec)
    await new Promise<void>((resolve) => process.send!({ type: 'result', result }, () => resolve()))
    process.exit(0)
  } catch (err) {
    await new Promise<void>((resolve) => process.send!({ type: 'error', error: errorMessage(err) }, () => resolve()))
    process.exit(1)
  }
}

// ---------------------------------------------------------------------------------------------
// Parent

interface Row extends Partial<MethodResult> {
  method: string
  reads: string
  batch: number
  failed?: string
  wallSeconds: number
  /** the run that measured this row (a run of some methods keeps the others' rows: lib/methods-merge.ts) */
  run?: RunLabel
}

interface SizeReport {
  size: Size
  date: string
  command: string
  machine: ReturnType<typeof machine>
  users: number
  items: number
  trainWindows: number
  mode: 'epochs' | 'steps'
  epochs: number | null
  steps: number | null
  sharedBatch: number
  backbones: { text: string; image: string }
  backboneSetupSeconds: number
  cacheBuild: (CacheResult & { failed?: undefined }) | { failed: string }
  rows: (Row & { tpme?: number; timeNorm?: number; paramsNorm?: number; memoryNorm?: number })[]
  ratios: ReturnType<typeof paperRatios>
  notes: string[]
  wallSeconds: number
}

function machine() {
  return { ...benchMachine(), tfBackend: 'wasm' }
}

function runChild<T>(spec: ChildSpec, work: string, onProgress: (p: Progress) => void): Promise<T> {
  const file = path.join(work, `spec-${spec.kind}-${spec.kind === 'method' ? spec.method : 'cache'}-${spec.size}.json`)
  fs.writeFileSync(file, JSON.stringify(spec))
  return new Promise((resolve, reject) => {
    const proc = fork(import.meta.filename, [], { env: { ...process.env, [CHILD_ENV]: file, TF_BACKEND: 'wasm', TF_BACKEND_QUIET: '1' }, silent: true })
    let output = ''
    let phase = 'starting'
    const keep = (chunk: Buffer) => {
      output = (output + chunk.toString()).slice(-20_000)
    }
    proc.stdout?.on('data', keep)
    proc.stderr?.on('data', keep)
    let settled = false
    proc.on('message', (m: { type: string; result?: T; error?: string } & Partial<Progress>) => {
      if (m.type === 'progress') {
        phase = `${m.phase} (${m.done}/${m.total})`
        onProgress(m as Progress)
      }
      else if (m.type === 'result') {
        settled = true
        resolve(m.result as T)
      } else if (m.type === 'error') {
        settled = true
        reject(new Error(`${m.error} (while ${phase})`))
      }
    })
    proc.on('exit', (code, signal) => {
      if (settled) return
      const tail = output.trim().split('\n').slice(-3).join(' | ')
      reject(new Error(`child exited with ${signal ?? `code ${code}`} while ${phase}${tail ? `: ${tail}` : ''}`))
    })
  })
}

function fmt(x: number | null | undefined, digits: number): string | number {
  return x === null || x === undefined || Number.isNaN(x) ? '-' : +x.toFixed(digits)
}

function paperRatios(rows: Row[]) {
  const over = rows.find((r) => r.method === PAPER_REFERENCE.over && !r.failed)
  const under = rows.find((r) => r.method === PAPER_REFERENCE.under && !r.failed)
  const ratio = (key: 'medianStepSeconds' | 'medianStepCpuSeconds' | 'epochSeconds' | 'peakRssBytes' | 'stepPeakTensorBytes') => (over && under ? over[key]! / under[key]! : null)
  return {
    of: `${PAPER_REFERENCE.over} / ${PAPER_REFERENCE.under}`,
    batches: over && under ? `${over.batch} / ${under.batch} users per step` : null,
    timePerStep: ratio('medianStepSeconds'),
    cpuTimePerStep: ratio('medianStepCpuSeconds'),
    timePerEpoch: ratio('epochSeconds'),
    peakRss: ratio('peakRssBytes'),
    stepPeakTensorBytes: ratio('stepPeakTensorBytes'),
    paperReference: {
      note: "the paper's reference figures (authors' A6000 GPU, IISAN SIGIR 2024), not measured here",
      timePerEpoch: PAPER_REFERENCE.epochSeconds[0] / PAPER_REFERENCE.epochSeconds[1],
      gpuMemory: PAPER_REFERENCE.gpuMemoryGb[0] / PAPER_REFERENCE.gpuMemoryGb[1],
      figures: `${PAPER_REFERENCE.epochSeconds[0]} s vs ${PAPER_REFERENCE.epochSeconds[1]} s per epoch; ${PAPER_REFERENCE.gpuMemoryGb[0]} GB vs ${PAPER_REFERENCE.gpuMemoryGb[1]} GB GPU memory`,
    },
  }
}

/** 'this run', or when an earlier run measured the row, its start (UTC) */
function runOf(report: SizeReport, row: Row): string {
  return !row.run || row.run.date === report.date ? 'this run' : `${row.run.date.slice(0, 16).replace('T', ' ')}Z`
}

function printSize(report: SizeReport): void {
  const epochsRun = report.mode === 'epochs'
  console.log(
    `\n== ${report.size}: ${report.backbones.text} + ${report.backbones.image}; ${report.users} Scientific users, ${report.items} items; ` +
      (epochsRun ? `${report.epochs} epoch(s) through train()` : `${report.steps} timed steps after ${WARMUP} warm-up`) +
      ` (${(report.wallSeconds / 60).toFixed(1)} min)`,
  )
  const table = Object.fromEntries(
    report.rows.map((r) => [
      r.method,
      r.failed
        ? { run: runOf(report, r), reads: r.reads, batch: r.batch, 'failed': r.failed.slice(0, 80) }
        : {
            run: runOf(report, r),
            reads: r.reads,
            batch: r.batch,
            params: r.trainableParams,
            's/step': fmt(r.medianStepSeconds, r.medianStepSeconds! < 1 ? 3 : 1),
            'cpu s/step': fmt(r.medianStepCpuSeconds, r.medianStepCpuSeconds! < 1 ? 3 : 1),
            's/epoch': `${fmt(r.epochSeconds, 1)}${r.epochSecondsKind === 'extrapolated' ? ' (extrap.)' : ''}`,
            ...(epochsRun ? { 'eval s': fmt(mean(r.epochs!.map((e) => e.evalSeconds)), 1) } : {}),
            'RSS MB': Math.round(r.peakRssBytes! / MB),
            'tensor MB (sampled)': fmt(r.sampledPeakTensorBytes! / MB, 1),
            'step peak tensor MB': fmt(r.stepPeakTensorBytes! / MB, 1),
            TPME: fmt(r.tpme, 3),
            ...(epochsRun
              ? {
                  'val HR@10': fmt(r.validation!.hr10, 4),
                  'val NDCG@10': fmt(r.validation!.ndcg10, 4),
                  'test HR@10': fmt(r.test!.hr10, 4),
                  'test NDCG@10': fmt(r.test!.ndcg10, 4),
                  'loss/epoch': r.epochs!.map((e) => e.trainLoss.toFixed(3)).join('→'),
                }
              : { 'loss first→last': `${r.stepLosses![0].toFixed(3)}→${r.stepLosses![r.stepLosses!.length - 1].toFixed(3)}` }),
          },
    ]),
  )
  console.table(table)
  const c = report.cacheBuild
  if (!('totalSeconds' in c)) console.log(`cache build: ${c.failed}`)
  else
    console.log(
      `cache build (cached-states methods pay it once): ${c.totalSeconds.toFixed(1)} s ${c.measured ? 'measured' : `extrapolated from ${c.sampleItems} items`} for ${c.items} items ` +
        `(text ${c.textSeconds.toFixed(1)} s at ${c.textItemsPerSecond.toFixed(1)} items/s, image ${c.imageSeconds.toFixed(1)} s at ${c.imageItemsPerSecond.toFixed(1)} items/s, loading ${c.loadSeconds.toFixed(1)} s)` +
        (c.stateBytes ? `, ${(c.stateBytes / MB).toFixed(1)} MB float16 states` : ''),
    )
  const q = report.ratios
  const x = (v: number | null) => (v === null ? '-' : `${v.toFixed(1)}×`)
  console.log(
    `${q.of} (${q.batches ?? 'not both run'}): time/step ${x(q.timePerStep)} (CPU time ${x(q.cpuTimePerStep)}), time/epoch ${x(q.timePerEpoch)}, peak RSS ${x(q.peakRss)}, step peak tensor bytes ${x(q.stepPeakTensorBytes)}` +
      ` — paper's reference figures (A6000, not measured here): time/epoch ${q.paperReference.timePerEpoch.toFixed(1)}×, GPU memory ${q.paperReference.gpuMemory.toFixed(1)}×`,
  )
  for (const note of report.notes) console.log(`  · ${note}`)
}

/** TPME (paper weights) over the rows that ran. */
function scored(rows: Row[]): SizeReport['rows'] {
  const ok = rows.filter((r) => !r.failed)
  const scores = ok.length ? tpme(ok.map((r) => ({ id: r.method, secondsPerEpoch: r.epochSeconds!, trainableParams: r.trainableParams!, peakMemoryMb: r.peakRssBytes! / MB })), PAPER_TPME_WEIGHTS) : []
  return rows.map((r) => {
    const s = scores.find((x) => x.id === r.method)
    return s ? { ...r, tpme: s.tpme, timeNorm: s.timeNorm, paramsNorm: s.paramsNorm, memoryNorm: s.memoryNorm } : r
  })
}

/**
 * A size's report with its rows merged into the earlier file's rows of that size (bench/lib/
 * methods-merge.ts): the methods it measured replace theirs, the others stay, labelled with their
 * run; TPME and the paper ratios are recomputed over all rows, and the earlier notes on a kept
 * method (and its cache build, when this run built none) come along.
 */
function withEarlierRows(report: SizeReport, earlier: EarlierFile): SizeReport {
  const section = earlier.sizes?.[report.size]
  const rows = mergeRows(report.rows, { date: report.date, command: report.command }, section, earlier, METHODS.map((m) => m.name))
  const kept = rows.filter((r) => r.run.date !== report.date)
  const notes = [...report.notes]
  if (kept.length) {
    notes.push(
      `Rows kept from earlier runs (measured then, under that run's load; TPME and the ratios are over all rows): ` +
        kept.map((r) => `${r.method} (${r.run.date.slice(0, 16)}Z, \`${r.run.command}\`${r.run.loadAverage ? `, load ${r.run.loadAverage.map((l) => l.toFixed(1)).join('–')}` : ''})`).join('; ') +
        '.',
    )
    const about = (note: string) => kept.some((r) => note.startsWith(`${r.method}: `) || note.startsWith(`${r.method} failed: `))
    notes.push(...(section?.notes ?? []).filter(about).map((note) => `(earlier run) ${note}`))
  }
  // a run without cached-states methods builds no cache: the kept rows' build figures stay
  const cacheBuild = 'totalSeconds' in report.cacheBuild || !section ? report.cacheBuild : section.cacheBuild
  return { ...report, cacheBuild, rows: scored(rows), ratios: paperRatios(rows), notes }
}

/** A results file as far as a later run reads it (its size sections keep the other methods' rows). */
type EarlierFile = EarlierRun<never> & { sizes?: Partial<Record<Size, SizeReport>> }

async function runSize(size: Size, o: Options, work: string, earlier: EarlierFile): Promise<SizeReport> {
  const startedSize = now()
  const { data } = loadScientific(o.users)
  if (data.stats.usersKept < 2) fail(`${data.stats.usersKept} user(s) with enough interactions in the first ${o.users}; at least 2 are needed (raise --users)`)
  const methods = METHODS.filter((m) => !o.methods || o.methods.includes(m.name))
  const mode = size === 'demo' && !o.quick ? 'epochs' : 'steps'
  const contentBatch = o.contentBatch ?? (size === 'base' ? 4 : o.batch)

  console.log(`\n${size}: preparing the backbones…`)
  let started = now()
  let dirs: Dirs
  let backboneNames: { text: string; image: string }
  if (size === 'demo') {
    dirs = await ensureDefaultBackbones(path.join(work, 'demo'))
    backboneNames = { text: 'demo BERT (d 64, 4 layers)', image: 'demo ViT (d 64, 4 layers, 32×32 input)' }
  } else {
    dirs = { text: path.join(work, 'bert-base'), image: path.join(work, 'vit-base') }
    writeRandomBert(dirs.text, bertHfConfig({}), demoVocabText(), 'bench-methods')
    writeRandomVit(dirs.image, vitHfConfig({}), 'bench-methods')
    backboneNames = { text: 'bert-base shape (random weights)', image: 'vit-b-16 shape (random weights)' }
  }
  const backboneSetupSeconds = now() - started

  const bars = new cliProgress.MultiBar(
    {
      format: ' {name} |{bar}| {value}/{total} {elapsed} {phase}',
      barsize: 24,
      hideCursor: true,
      clearOnComplete: false,
      stopOnComplete: false,
      noTTYOutput: true,
      notTTYSchedule: 60_000,
    },
    cliProgress.Presets.shades_classic,
  )
  const label = (s: string) => s.padEnd(16)
  const needsCache = methods.some((m) => m.reads === 'cached-states')
  const cacheBar = needsCache ? bars.create(1, 0, { name: label('cache build'), phase: 'waiting', elapsed: '' }) : null
  const methodBars = new Map(methods.map((m) => [m.name, bars.create(1, 0, { name: label(m.name), phase: 'waiting', elapsed: '' })]))
  const clock = (seconds: number) => `${Math.floor(seconds / 60)}m${String(Math.round(seconds % 60)).padStart(2, '0')}s`
  /** Called as a child starts: its bar shows the child's own elapsed time. */
  const onProgress = (bar: cliProgress.SingleBar | null | undefined) => {
    const since = now()
    return (p: Progress) => {
      if (!bar) return
      bar.setTotal(p.total)
      bar.update(p.done, { phase: p.phase, elapsed: clock(now() - since) })
    }
  }

  let cacheBuild: SizeReport['cacheBuild'] = { failed: 'not needed: no cached-states method selected' }
  const statesDir = path.join(work, `states-${size}`)
  if (needsCache) {
    try {
      const spec: CacheSpec = { kind: 'cache', size, users: o.users, dirs, out: statesDir, sample: size === 'demo' ? null : o.cacheSample }
      cacheBuild = await runChild<CacheResult>(spec, work, onProgress(cacheBar))
      cacheBar?.update({ phase: 'done' })
    } catch (err) {
      cacheBuild = { failed: errorMessage(err) }
      cacheBar?.update({ phase: `failed: ${errorMessage(err).slice(0, 60)}` })
    }
  }

  const rows: Row[] = []
  for (const method of methods) {
    const batch = method.reads === 'item-content' ? contentBatch : o.batch
    const spec: MethodSpec = {
      kind: 'method',
      size,
      method: method.name,
      mode,
      batch,
      sharedBatch: o.batch,
      steps: o.steps,
      epochs: o.epochs,
      users: o.users,
      dirs,
      states: size === 'demo' ? { kind: 'folder', dir: statesDir } : { kind: 'random' },
    }
    const bar = methodBars.get(method.name)
    started = now()
    try {
      if (method.reads === 'cached-states' && size === 'demo' && 'failed' in cacheBuild && cacheBuild.failed) throw new Error(`no cached states: ${cacheBuild.failed}`)
      const result = await runChild<MethodResult>(spec, work, onProgress(bar))
      rows.push({ ...result, wallSeconds: now() - started })
      bar?.update({ phase: `done: ${result.medianStepSeconds.toFixed(3)} s/step` })
    } catch (err) {
      rows.push({ method: method.name, reads: method.reads, batch, failed: errorMessage(err), wallSeconds: now() - started })
      bar?.update({ phase: `failed: ${errorMessage(err).slice(0, 60)}` })
    }
  }
  bars.stop()

  const ok = rows.filter((r) => !r.failed)

  const notes = [
    `Scientific has no images: every item gets a synthetic ${IMAGE_SIDE}×${IMAGE_SIDE} RGB pattern (one of ${PATTERNS}, by item index), PNG-encoded and read through loadItemContent's images loader (decode + Pillow resize + normalise), so the image backbone runs.`,
    `Every method sees the same batches: train()'s seeded order (seed ${SEED}), ${o.batch} users per step` +
      (contentBatch !== o.batch ? `; methods reading item-content take the first ${contentBatch} users of each of those batches (smaller batches at base size: a base step runs BERT-base and ViT-B/16 forward and backward)` : '') +
      '. Rates and other settings: each method\'s paper defaults (defaultTrainingConfig); the batch size overrides them (e.g. iisan\'s 64).',
    mode === 'epochs'
      ? `s/step: median over the steps of ${o.epochs} epoch(s) after the first ${WARMUP}; s/epoch measured by train() (training only; evaluation separate).`
      : `s/step: median over ${o.steps} timed steps after ${WARMUP} warm-up steps; s/epoch extrapolated = steps per epoch at the method's batch × median step.`,
    'tensor MB (sampled): max of tf.memory().numBytes sampled before and after every step (tfjs keeps no peak counter; between steps only the parameters and Adam slots are alive). step peak tensor MB: tf.profile over one whole step (forward, backward, Adam), the peak of the engine\'s byte count at kernel boundaries.',
    'RSS MB: the maxRSS of the method\'s own child process (loading its inputs, training and evaluation); TPME (paper weights 0.45/0.1/0.45) over the methods that ran, from s/epoch, trainable parameters and RSS.',
    size === 'demo'
      ? 'cached-states methods read states the demo backbones encoded once (float16, the SAN\'s side layers only, as the trainer holds them); that build is timed separately above.'
      : 'Base size: random weights at bert-base / vit-b-16 shapes; cached-states methods read random base-shaped float16 states (the step cost does not depend on the values); the cache build is extrapolated from a measured sample.',
  ]
  for (const r of ok) {
    if (r.lossFalls === false) notes.push(`${r.method}: the training loss did not fall (${r.epochs && r.epochs.length > 1 ? `epochs ${r.epochs.map((e) => e.trainLoss.toFixed(3)).join(' → ')}` : 'mean of the last third of the steps ≥ the first third'}).`)
    if (r.tensorsAtLastStep! > r.tensorsAtFirstTimedStep! + 5 && mode === 'steps') notes.push(`${r.method}: live tensors grew from ${r.tensorsAtFirstTimedStep} to ${r.tensorsAtLastStep} over the timed steps (a leak?).`)
    if (r.timedSteps! < 10) notes.push(`${r.method}: only ${r.timedSteps} timed steps (fewer than 10).`)
  }
  if (ok.some((r) => r.lossFalls === null)) notes.push(`Loss trend not judged: ${WARMUP + o.steps} steps on different batches are too few to tell (the table shows the first and last step's loss).`)
  for (const r of rows) if (r.failed) notes.push(`${r.method} failed: ${r.failed}`)
  const loads = ok.flatMap((r) => r.loadAverage!)
  if (loads.length)
    notes.push(
      `cpu s/step: the child's own CPU time per step (median), less sensitive than wall time to other load; the 1-minute load average ranged ${Math.min(...loads).toFixed(1)}–${Math.max(...loads).toFixed(1)} on ${os.cpus().length} cores during training` +
        (Math.max(...loads) > os.cpus().length + 0.5 ? ' (the machine was shared: wall times are inflated where the load exceeded the cores)' : '') +
        '.',
    )

  const report = withEarlierRows(
    {
      size,
      date: new Date().toISOString(),
      command: commandLine(),
      machine: machine(),
      users: data.stats.usersKept,
      items: data.numItems,
      trainWindows: data.trainWindows.length,
      mode,
      epochs: mode === 'epochs' ? o.epochs : null,
      steps: mode === 'steps' ? o.steps : null,
      sharedBatch: o.batch,
      backbones: backboneNames,
      backboneSetupSeconds,
      cacheBuild,
      rows,
      ratios: paperRatios(rows),
      notes,
      wallSeconds: now() - startedSize,
    },
    earlier,
  )
  if (size === 'base') fs.rmSync(path.join(work, 'bert-base'), { recursive: true, force: true })
  if (size === 'base') fs.rmSync(path.join(work, 'vit-base'), { recursive: true, force: true })
  printSize(report)
  return report
}

function commandLine(): string {
  const args = process.argv.slice(2)
  return `npm run bench:methods${args.length ? ` -- ${args.join(' ')}` : ''}`
}

// ---- chart ----------------------------------------------------------------------------------

const READS_COLOURS: Record<string, string> = { 'item-ids': '#868e96', 'cached-states': '#3b5bdb', 'item-content': '#e67700' }

function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
}

/** Horizontal bars on a log axis, one panel. */
function logPanel(x0: number, y0: number, width: number, title: string, unit: string, rows: { y: number; values: { v: number; colour: string; h: number; dy: number; label: string }[] }[], height: number): string {
  const all = rows.flatMap((r) => r.values.map((v) => v.v)).filter((v) => v > 0 && Number.isFinite(v))
  if (all.length === 0) return ''
  const lo = Math.floor(Math.log10(Math.min(...all)) - 0.3)
  const hi = Math.ceil(Math.log10(Math.max(...all)) + 0.05)
  const xOf = (v: number) => x0 + ((Math.log10(v) - lo) / (hi - lo)) * width
  let out = `<text x="${x0}" y="${y0 - 8}" font-weight="bold">${escapeXml(title)}</text>`
  for (let e = lo; e <= hi; e++) {
    const x = xOf(10 ** e)
    const tick = 10 ** e >= 1 ? `${10 ** e}` : (10 ** e).toFixed(-e)
    out += `<line x1="${x.toFixed(1)}" y1="${y0}" x2="${x.toFixed(1)}" y2="${y0 + height}" stroke="#dee2e6"/><text x="${x.toFixed(1)}" y="${y0 + height + 14}" text-anchor="middle" fill="#495057">${tick}${e === hi ? ` ${unit}` : ''}</text>`
  }
  for (const r of rows) {
    for (const v of r.values) {
      if (!(v.v > 0) || !Number.isFinite(v.v)) continue
      const w = Math.max(1, xOf(v.v) - x0)
      out += `<rect x="${x0}" y="${(r.y + v.dy).toFixed(1)}" width="${w.toFixed(1)}" height="${v.h}" fill="${v.colour}"><title>${escapeXml(v.label)}</title></rect>`
      out += `<text x="${(x0 + w + 4).toFixed(1)}" y="${(r.y + v.dy + v.h - 1).toFixed(1)}" font-size="10" fill="#343a40">${escapeXml(v.label)}</text>`
    }
  }
  return out
}

function chart(reports: SizeReport[]): string {
  const width = 1080
  const labelWidth = 150
  const panelWidth = 330
  const rowHeight = 30
  let y = 40
  let body = ''
  for (const report of reports) {
    const rows = report.rows
    const blockTop = y + 34
    body += `<text x="10" y="${y + 6}" font-size="14" font-weight="bold">${report.size}: ${escapeXml(report.backbones.text)} + ${escapeXml(report.backbones.image)}; ${report.users} users, ${report.mode === 'epochs' ? `${report.epochs} epoch(s)` : `${report.steps} timed steps`} (${report.date.slice(0, 10)})</text>`
    const timeRows = rows.map((r, i) => ({
      y: blockTop + i * rowHeight,
      values: r.failed
        ? []
        : [{ v: r.medianStepSeconds!, colour: READS_COLOURS[r.reads] ?? '#000', h: 16, dy: 4, label: `${r.medianStepSeconds! < 1 ? r.medianStepSeconds!.toFixed(3) : r.medianStepSeconds!.toFixed(1)} s (batch ${r.batch})` }],
    }))
    const memoryRows = rows.map((r, i) => ({
      y: blockTop + i * rowHeight,
      values: r.failed
        ? []
        : [
            { v: r.peakRssBytes! / MB, colour: READS_COLOURS[r.reads] ?? '#000', h: 12, dy: 2, label: `RSS ${Math.round(r.peakRssBytes! / MB)} MB` },
            { v: r.stepPeakTensorBytes! / MB, colour: '#adb5bd', h: 10, dy: 16, label: `step tensors ${(r.stepPeakTensorBytes! / MB).toFixed(1)} MB` },
          ],
    }))
    const height = rows.length * rowHeight
    rows.forEach((r, i) => {
      const from = runOf(report, r)
      body += `<text x="${labelWidth - 8}" y="${blockTop + i * rowHeight + 17}" text-anchor="end">${escapeXml(r.method)}${from === 'this run' ? '' : `<tspan x="${labelWidth - 8}" dy="11" font-size="9" fill="#868e96">run ${escapeXml(from)}</tspan>`}</text>`
      if (r.failed) body += `<text x="${labelWidth + 4}" y="${blockTop + i * rowHeight + 17}" fill="#c92a2a">failed: ${escapeXml(r.failed.slice(0, 60))}</text>`
    })
    body += logPanel(labelWidth, blockTop, panelWidth, 'time per step (log scale)', 's', timeRows, height)
    body += logPanel(labelWidth + panelWidth + 150, blockTop, panelWidth, 'peak memory (log scale)', 'MB', memoryRows, height)
    y = blockTop + height + 40
  }
  const legend = Object.entries(READS_COLOURS)
    .map(([reads, colour], i) => `<rect x="${10 + i * 170}" y="${y}" width="12" height="12" fill="${colour}"/><text x="${28 + i * 170}" y="${y + 11}">reads ${reads}</text>`)
    .join('')
  const grey = `<rect x="${10 + 3 * 170}" y="${y}" width="12" height="12" fill="#adb5bd"/><text x="${28 + 3 * 170}" y="${y + 11}">peak tensor bytes in one step (tf.profile)</text>`
  const height = y + 30
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="20" font-size="15" font-weight="bold">Training methods side by side on tfjs-wasm (${escapeXml(machine().cpu)}, ${machine().cores} cores): time per step and peak process RSS</text>
${body}${legend}${grey}
</svg>\n`
}

// ---- main -----------------------------------------------------------------------------------

interface Options {
  quick: boolean
  sizes: Size[]
  users: number
  steps: number
  epochs: number
  batch: number
  contentBatch: number | null
  methods: string[] | null
  cacheSample: number
  /** a methods.json to merge in instead of running */
  merge: string | null
}

function options(): Options {
  const usage =
    'usage: npm run bench:methods -- [--quick] [--size demo|base|both] [--users N] [--steps N] [--epochs N] [--batch N] [--content-batch N] [--methods a,b] [--cache-sample N]\n' +
    '       npm run bench:methods -- --merge FILE [--size demo|base|both] [--methods a,b]   (merge another run\'s results file into bench/results without running)'
  const { values } = parseOptions(
    {
      quick: { type: 'boolean', default: false },
      size: { type: 'string' },
      users: { type: 'string', default: '1000' },
      steps: { type: 'string' },
      epochs: { type: 'string', default: '2' },
      batch: { type: 'string', default: '32' },
      'content-batch': { type: 'string' },
      methods: { type: 'string' },
      'cache-sample': { type: 'string', default: '8' },
      merge: { type: 'string' },
    },
    usage,
  )
  // a run measures the demo size unless told; --merge takes every size of its file unless told
  const size = values.size ?? (values.merge !== undefined ? 'both' : 'demo')
  const sizes: Size[] = size === 'both' ? ['demo', 'base'] : size === 'demo' || size === 'base' ? [size] : fail(`--size must be demo, base or both (got ${JSON.stringify(size)})`)
  if (values.quick && sizes.includes('base')) fail('--quick runs the demo size only (3 steps); drop --size base|both')
  if (values.merge !== undefined && values.quick) fail('--merge writes bench/results; drop --quick')
  const methods = values.methods?.split(',').map((m) => m.trim()).filter(Boolean) ?? null
  for (const m of methods ?? []) if (!METHODS.some((x) => x.name === m)) fail(`unknown method ${JSON.stringify(m)} in --methods (available: ${METHODS.map((x) => x.name).join(', ')})`)
  const batch = positiveInt('batch', values.batch)
  if (batch < 2) fail('--batch must be at least 2 (in-batch negatives)')
  const contentBatch = values['content-batch'] === undefined ? null : positiveInt('content-batch', values['content-batch'])
  if (contentBatch !== null && (contentBatch < 2 || contentBatch > batch)) fail(`--content-batch must be between 2 and --batch (${batch})`)
  return {
    quick: values.quick === true,
    sizes,
    users: positiveInt('users', values.users),
    steps: values.quick ? 3 : positiveInt('steps', values.steps ?? '10'),
    epochs: positiveInt('epochs', values.epochs),
    batch,
    contentBatch,
    methods,
    cacheSample: positiveInt('cache-sample', values['cache-sample']),
    merge: values.merge ?? null,
  }
}

async function main(): Promise<void> {
  const o = options()
  // read before the run: a results file that cannot be merged into fails now, not after hours
  const outDir = o.quick ? path.join(os.tmpdir(), 'iisan-bench-methods-quick') : RESULTS
  const jsonFile = path.join(outDir, 'methods.json')
  // a run of one size keeps the other size's section of an earlier run, and a run of some methods
  // the other methods' rows of its size (runSize); --quick runs start afresh
  const earlier: EarlierFile = !o.quick && fs.existsSync(jsonFile) ? readResults(jsonFile, 'move it away to start a new results file') : {}
  if (o.merge) {
    // the other file's sections (--size, --methods pick), as if that run had been made here (its rows keep their labels)
    const other = readResults(o.merge, 'give a methods.json written by bench:methods')
    const picked = o.sizes.flatMap((size) => {
      const section = other.sizes?.[size]
      if (!section) return []
      const rows = section.rows.filter((r) => !o.methods || o.methods.includes(r.method))
      return rows.length ? [withEarlierRows({ ...section, rows }, earlier)] : []
    })
    if (!picked.length) fail(`${o.merge} has no rows${o.methods ? ` of ${o.methods.join(', ')}` : ''} to merge`)
    picked.forEach(printSize)
    writeResults(outDir, earlier, picked, { quick: false, seconds: 0 })
    return
  }
  const started = now()
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'iisan-bench-methods-'))
  const cleanup = () => fs.rmSync(work, { recursive: true, force: true })
  process.on('SIGINT', () => {
    cleanup()
    process.exit(130)
  })
  const reports: SizeReport[] = []
  try {
    for (const size of o.sizes) reports.push(await runSize(size, o, work, earlier))
  } finally {
    cleanup()
  }
  writeResults(outDir, earlier, reports, { quick: o.quick, seconds: now() - started })
}

function readResults(file: string, hint: string): EarlierFile {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as EarlierFile
  } catch (err) {
    return fail(`${file} is not a readable results file (${errorMessage(err)}); ${hint}`)
  }
}

/** methods.json and methods.svg: the earlier file's sections with this run's (already merged) ones in their place. */
function writeResults(outDir: string, earlier: EarlierFile, reports: SizeReport[], run: { quick: boolean; seconds: number }): void {
  fs.mkdirSync(outDir, { recursive: true })
  const jsonFile = path.join(outDir, 'methods.json')
  const sizes: Partial<Record<Size, SizeReport>> = { ...earlier.sizes }
  for (const r of reports) sizes[r.size] = r
  const totalSeconds = run.seconds
  const out = {
    date: new Date().toISOString(),
    command: commandLine(),
    quick: run.quick,
    machine: machine(),
    runSeconds: totalSeconds,
    tpmeWeights: PAPER_TPME_WEIGHTS,
    paperReference: paperRatios([]).paperReference,
    sizes,
  }
  fs.writeFileSync(jsonFile, `${JSON.stringify(out, null, 2)}\n`)
  const svgFile = path.join(outDir, 'methods.svg')
  fs.writeFileSync(svgFile, chart((['demo', 'base'] as const).flatMap((s) => (sizes[s] ? [sizes[s]!] : []))))
  console.log(`\nwrote ${jsonFile} and ${svgFile}${run.quick ? ' (--quick: not bench/results)' : ''}; total ${(totalSeconds / 60).toFixed(1)} min`)
}

if (process.env[CHILD_ENV]) {
  await child(process.env[CHILD_ENV])
} else {
  await main().catch((err: unknown) => {
    console.error(`error: ${errorMessage(err)}`)
    process.exit(1)
  })
}

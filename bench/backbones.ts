// Backbone throughput: items/s for the text (BERT) and image (ViT) encoders at base size (random
// weights, bert-base / vit-base-patch16-224 shapes) and for the generated demo pair, on both
// inference runtimes: ONNX Runtime (the default; onnxruntime-node on every core) and tfjs (the
// fallback, on the current tfjs backend: wasm here, one core). Each row: warm-up batch, then timed
// batches; the median batch time gives items/s. Images are JPEG-encoded 640×480 so decoding and the PIL resize are
// included. The bert-base text rows run twice: every batch padded to 30 tokens (the shape the
// PyTorch reference times) and with dynamic padding (titles sorted by token length, each batch
// padded to its longest, as the cache build runs them), the latter timed over the whole pool.
// When python3 has torch (PYTHON picks the interpreter), bench/reference/torch_encoder.py times
// torch.nn.TransformerEncoder on the same shapes on 2 threads in the same run, and the three
// figures (tfjs, ONNX Runtime, PyTorch) are printed side by side; torch stays optional. Writes bench/results/backbones.json.
//   npm run bench:backbones [-- --quick]
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'
import sharp from 'sharp'
import { env as ortEnv } from 'onnxruntime-node'
import * as tf from '@tensorflow/tfjs-core'
import {
  ensureBackend,
  ensureDefaultBackbones,
  loadImageBackbone,
  lengthOrder,
  loadTextBackbone,
  rowLengths,
  selectRows,
  type BackboneRuntimeName,
  type ImageBackbone,
  type TextBackbone,
} from '@iisan/backbones'
import { bertHfConfig, demoVocabText, vitHfConfig, writeRandomBert, writeRandomVit } from '@iisan/backbones/default'
import { fail } from './lib/cli.ts'
import { runTorchScript, type TorchRun } from './lib/torch.ts'
import { loadAverage, machine, machineLine } from './lib/machine.ts'
import { median } from './lib/stats.ts'

let quick = false
try {
  quick = parseArgs({ options: { quick: { type: 'boolean', default: false } } }).values.quick === true
} catch (err) {
  fail(`${(err as Error).message} (usage: npm run bench:backbones [-- --quick])`, 2)
}

const RUNTIMES: BackboneRuntimeName[] = ['tfjs', 'onnx']

interface Row {
  model: string
  runtime: BackboneRuntimeName
  modality: 'text' | 'image'
  source: 'measured'
  shape: string
  /** Text rows: 'max_length' = every batch 30 wide; 'longest' = sorted by length, each batch padded to its longest. */
  padding?: 'max_length' | 'longest'
  /** Text rows: mean over items of the width of the batch each was encoded in. */
  meanPaddedLength?: number
  batchSize: number
  timedBatches: number
  loadSeconds: number
  medianBatchSeconds: number
  itemsPerSecond: number
  /** Decode + resize + normalise only, per image (image rows). */
  preprocessMsPerItem?: number
  peakRssMB: number
}

let peakRss = 0
const sampleRss = (): void => {
  peakRss = Math.max(peakRss, process.memoryUsage().rss)
}
const sampler = setInterval(sampleRss, 25)


function titles(n: number): string[] {
  const items = path.resolve(process.cwd(), 'data/scientific/items.tsv')
  if (fs.existsSync(items)) {
    return fs
      .readFileSync(items, 'utf8')
      .split('\n')
      .filter(Boolean)
      .slice(0, n)
      .map((l) => l.split('\t')[1] ?? '')
  }
  // common English words of bert-base-uncased's vocabulary (the first thousand ids are [unused…] and characters)
  const words = demoVocabText().split('\n').slice(2000, 3000)
  return Array.from({ length: n }, (_, i) => Array.from({ length: 12 }, (_, j) => words[(i * 31 + j * 17) % words.length]).join(' '))
}

async function jpegs(n: number): Promise<Buffer[]> {
  const out: Buffer[] = []
  for (let i = 0; i < n; i++) {
    const w = 640
    const h = 480
    const raw = Buffer.alloc(w * h * 3)
    for (let p = 0; p < raw.length; p++) raw[p] = ((p % (w * 3)) * (i + 3) + Math.floor(p / (w * 3)) * 7) & 255
    out.push(await sharp(raw, { raw: { width: w, height: h, channels: 3 } }).jpeg({ quality: 90 }).toBuffer())
  }
  return out
}

/** Mean over items of the width of its batch, when `data` is encoded in batches of batchSize. */
function meanPaddedLength(bb: TextBackbone, data: string[], batchSize: number, padding: 'max_length' | 'longest'): number {
  const tokens = bb.tokenize(data)
  if (padding === 'max_length') return tokens.seqLen
  const order = lengthOrder(rowLengths(tokens))
  let sum = 0
  for (let start = 0; start < order.length; start += batchSize) {
    const rows = order.subarray(start, start + batchSize)
    sum += selectRows(tokens, rows).seqLen * rows.length
  }
  return sum / order.length
}

/**
 * 'max_length': warm-up batch, then `batches` timed calls of one batch each; the median gives
 * items/s. 'longest': the `batches · batchSize` titles in one call (sorted by length across the
 * pool, as a cache build sorts a chunk), timed as a whole, since its batches differ in width.
 */
async function timeText(model: string, bb: TextBackbone, loadSeconds: number, batchSize: number, batches: number, padding: 'max_length' | 'longest'): Promise<Row> {
  const data = titles(batchSize * (batches + 1))
  const options = { batchSize, padding, sortByLength: padding === 'longest' }
  await bb.encodeTexts(data.slice(0, batchSize), options) // warm-up: kernel setup, allocation
  const times: number[] = []
  const pool = data.slice(batchSize)
  if (padding === 'max_length') {
    for (let b = 0; b < batches; b++) {
      const t0 = performance.now()
      await bb.encodeTexts(pool.slice(b * batchSize, (b + 1) * batchSize), options)
      times.push((performance.now() - t0) / 1000)
      sampleRss()
    }
  } else {
    const t0 = performance.now()
    await bb.encodeTexts(pool, options)
    times.push((performance.now() - t0) / 1000 / batches)
    sampleRss()
  }
  const c = bb.config
  return {
    model,
    runtime: bb.runtime,
    modality: 'text',
    source: 'measured',
    shape: `L${c.numLayers} d${c.hiddenSize} h${c.numHeads} ff${c.intermediateSize} seq${padding === 'longest' ? '≤' : ''}${bb.tokenizer.maxLength}`,
    padding,
    meanPaddedLength: meanPaddedLength(bb, pool, batchSize, padding),
    batchSize,
    timedBatches: batches,
    loadSeconds,
    medianBatchSeconds: median(times),
    itemsPerSecond: batchSize / median(times),
    peakRssMB: Math.round(peakRss / 2 ** 20),
  }
}

async function timeImage(model: string, bb: ImageBackbone, loadSeconds: number, batchSize: number, batches: number): Promise<Row> {
  const images = await jpegs(batchSize)
  const t0 = performance.now()
  for (const img of images) await bb.preprocess(img)
  const preprocessMsPerItem = (performance.now() - t0) / images.length
  await bb.encodeImages(images, { batchSize })
  const times: number[] = []
  for (let b = 0; b < batches; b++) {
    const t1 = performance.now()
    const results = await bb.encodeImages(images, { batchSize })
    times.push((performance.now() - t1) / 1000)
    if (results.some((r) => !r.ok)) throw new Error('benchmark image failed to encode')
    sampleRss()
  }
  const c = bb.config
  return {
    model,
    runtime: bb.runtime,
    modality: 'image',
    source: 'measured',
    shape: `L${c.numLayers} d${c.hiddenSize} h${c.numHeads} ff${c.intermediateSize} img${c.imageSize}/p${c.patchSize} seq${c.numPatches + 1}`,
    batchSize,
    timedBatches: batches,
    loadSeconds,
    medianBatchSeconds: median(times),
    itemsPerSecond: batchSize / median(times),
    preprocessMsPerItem,
    peakRssMB: Math.round(peakRss / 2 ** 20),
  }
}

interface TorchRow {
  model: 'bert' | 'vit'
  shape: string
  batchSize: number
  warmupBatches: number
  timedBatches: number
  medianBatchSeconds: number
  itemsPerSecond: number
}

type TorchReference = TorchRun<{ torch: string; threads: number; blas: string | null; libblas: string | null; rows: TorchRow[] }>

const TORCH_SCRIPT = 'bench/reference/torch_encoder.py'

/** Runs the PyTorch reference (2 threads, same shapes as the base rows); never required. */
function torchReference(): TorchReference {
  return runTorchScript(TORCH_SCRIPT, ['--threads', '2', ...(quick ? ['--quick'] : [])])
}

async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const t0 = performance.now()
  const value = await fn()
  return [value, (performance.now() - t0) / 1000]
}

/**
 * Mean padded length over the whole catalogue (data/scientific/items.tsv when present) for the
 * ways titles reach the encoder: fixed 30; dynamic padding in catalogue order (batches of 32);
 * a cache build (chunks of 64 in id order, each sorted by length, forward groups of 16); one
 * sorted pass over everything (scripts/cache-states, batches of 32).
 */
function catalogueLengths(bb: TextBackbone): Record<string, number> & { items: number } {
  const all = titles(Number.POSITIVE_INFINITY) // the catalogue file exists (checked by the caller)
  const tokens = bb.tokenize(all)
  const lengths = rowLengths(tokens)
  const padded = (chunk: number, batch: number, sort: boolean): number => {
    let sum = 0
    for (let c = 0; c < all.length; c += chunk) {
      const ids = Int32Array.from({ length: Math.min(chunk, all.length - c) }, (_, i) => c + i)
      const order = sort ? Int32Array.from(lengthOrder(ids.map((i) => lengths[i])), (j) => ids[j]) : ids
      for (let b = 0; b < order.length; b += batch) {
        const rows = order.subarray(b, b + batch)
        sum += Math.max(...Array.from(rows, (i) => lengths[i])) * rows.length
      }
    }
    return sum / all.length
  }
  return {
    items: all.length,
    meanTokens: lengths.reduce((a, b) => a + b, 0) / all.length,
    fixed: tokens.seqLen,
    dynamicUnsortedBatch32: padded(32, 32, false),
    cacheBuildChunk64Group16: padded(64, 16, true),
    sortedAllBatch32: padded(all.length, 32, true),
  }
}

async function main(): Promise<void> {
  const backend = await ensureBackend()
  const ortVersion = ortEnv.versions.node ?? ortEnv.versions.common
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'iisan-bench-backbones-'))
  const rows: Row[] = []
  let paddedLength: ReturnType<typeof catalogueLengths> | undefined
  try {
    const demo = await ensureDefaultBackbones(path.join(work, 'demo'))
    const bertBase = path.join(work, 'bert-base')
    writeRandomBert(bertBase, bertHfConfig({}), demoVocabText(), 'bench')
    const vitBase = path.join(work, 'vit-base')
    writeRandomVit(vitBase, vitHfConfig({}), 'bench')
    for (const runtime of RUNTIMES) {
      {
        const [bb, s] = await timed(() => loadTextBackbone(demo.text, { runtime }))
        // demo-bert has bert-base-uncased's vocabulary, so the same token counts
        if (!paddedLength && fs.existsSync(path.resolve(process.cwd(), 'data/scientific/items.tsv'))) paddedLength = catalogueLengths(bb)
        rows.push(await timeText('demo-bert', bb, s, 128, quick ? 2 : 8, 'max_length'))
        rows.push(await timeText('demo-bert', bb, s, 128, quick ? 2 : 8, 'longest'))
        bb.dispose()
      }
      {
        const [bb, s] = await timed(() => loadImageBackbone(demo.image, { runtime }))
        rows.push(await timeImage('demo-vit', bb, s, 64, quick ? 2 : 4))
        bb.dispose()
      }
      {
        const [bb, s] = await timed(() => loadTextBackbone(bertBase, { runtime }))
        rows.push(await timeText('bert-base (random)', bb, s, 32, quick ? 2 : 4, 'max_length'))
        rows.push(await timeText('bert-base (random)', bb, s, 32, quick ? 2 : 4, 'longest'))
        bb.dispose()
      }
      {
        const [bb, s] = await timed(() => loadImageBackbone(vitBase, { runtime }))
        rows.push(await timeImage('vit-base-patch16-224 (random)', bb, s, 4, quick ? 1 : 3))
        bb.dispose()
      }
    }
  } finally {
    fs.rmSync(work, { recursive: true, force: true })
    clearInterval(sampler)
  }

  const reference = torchReference()
  const torchRow = (m: 'bert' | 'vit'): TorchRow | undefined => (reference.source === 'measured' ? reference.rows.find((r) => r.model === m) : undefined)
  // one line per base-size shape: both runtimes of ours beside PyTorch
  const comparison = rows
    .filter((r) => r.runtime === 'onnx' && (r.model.startsWith('bert-base') || r.model.startsWith('vit-base')))
    .map((r) => {
      const t = torchRow(r.modality === 'text' ? 'bert' : 'vit')
      const tfjs = rows.find((o) => o.runtime === 'tfjs' && o.model === r.model && o.padding === r.padding)
      return {
        ours: `${r.model}${r.padding ? `, ${r.padding === 'longest' ? `dynamic padding (mean ${r.meanPaddedLength?.toFixed(1)} tokens)` : 'padded to 30'}` : ''}`,
        tfjsItemsPerSecond: tfjs?.itemsPerSecond ?? null,
        onnxItemsPerSecond: r.itemsPerSecond,
        torch: t ? `torch ${t.shape} batch ${t.batchSize}` : null,
        torchItemsPerSecond: t?.itemsPerSecond ?? null,
        onnxOverTfjs: tfjs ? r.itemsPerSecond / tfjs.itemsPerSecond : null,
        onnxOverTorch: t ? r.itemsPerSecond / t.itemsPerSecond : null,
      }
    })

  console.log(`\nbackbones on ONNX Runtime ${ortVersion} (${os.availableParallelism()} threads) and tfjs ${backend} (${machineLine()}, node ${process.version})`)
  console.table(
    rows.map((r) => ({
      model: r.model,
      runtime: r.runtime,
      shape: r.shape,
      batch: r.batchSize,
      'median batch s': r.medianBatchSeconds.toFixed(3),
      'items/s': r.itemsPerSecond.toFixed(1),
      'mean padded len': r.meanPaddedLength?.toFixed(1) ?? '',
      'preprocess ms/img': r.preprocessMsPerItem?.toFixed(1) ?? '',
      'load s': r.loadSeconds.toFixed(2),
      'peak RSS MB': r.peakRssMB,
    })),
  )
  if (paddedLength) {
    const p = paddedLength
    console.log(
      `\nmean padded length over ${p.items} titles (${p.meanTokens.toFixed(1)} real tokens each): fixed ${p.fixed}; dynamic, catalogue order, batches of 32: ${p.dynamicUnsortedBatch32.toFixed(1)}; ` +
        `cache build (chunks of 64 sorted, groups of 16): ${p.cacheBuildChunk64Group16.toFixed(1)}; one sorted pass, batches of 32: ${p.sortedAllBatch32.toFixed(1)}`,
    )
  }
  if (reference.source === 'measured') {
    console.log(`\nPyTorch ${reference.torch} reference (${reference.script}: torch.nn.TransformerEncoder, ${reference.threads} threads, BLAS ${reference.libblas ?? reference.blas ?? '?'}), same run, same shapes:`)
    console.table(
      comparison.map((c) => ({
        ours: c.ours,
        'tfjs items/s': c.tfjsItemsPerSecond?.toFixed(2) ?? '',
        'ORT items/s': c.onnxItemsPerSecond.toFixed(2),
        torch: c.torch ?? '',
        'torch items/s': c.torchItemsPerSecond?.toFixed(2) ?? '',
        'ORT / tfjs': c.onnxOverTfjs === null ? '' : `${c.onnxOverTfjs.toFixed(2)}×`,
        'ORT / torch': c.onnxOverTorch === null ? '' : `${c.onnxOverTorch.toFixed(2)}×`,
      })),
    )
  } else {
    console.log(`PyTorch reference skipped: ${reference.reason}`)
  }
  const out = path.resolve(process.cwd(), 'bench/results/backbones.json')
  fs.mkdirSync(path.dirname(out), { recursive: true })
  fs.writeFileSync(
    out,
    `${JSON.stringify({ date: new Date().toISOString(), backend, onnxruntime: ortVersion, machine: { ...machine(), loadAverage: loadAverage() }, tensorsAtEnd: tf.memory().numTensors, rows, meanPaddedLength: paddedLength, torchReference: reference, comparison }, null, 2)}\n`,
  )
  console.log(`wrote ${path.relative(process.cwd(), out)}`)
}

main().catch((err: unknown) => {
  clearInterval(sampler)
  fail(err instanceof Error ? err.message : String(err), 1)
})

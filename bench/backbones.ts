// Backbone throughput: items/s for the text (BERT) and image (ViT) encoders at base size (random
// weights, bert-base / vit-base-patch16-224 shapes) and for the generated demo pair, on the
// current tfjs backend (wasm here). Each row: warm-up batch, then timed batches; the median batch
// time gives items/s. Images are JPEG-encoded 640×480 so decoding and the PIL resize are
// included. Writes bench/results/backbones.json.
//   npm run bench:backbones [-- --quick]
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'
import sharp from 'sharp'
import * as tf from '@tensorflow/tfjs-core'
import {
  ensureBackend,
  ensureDefaultBackbones,
  loadImageBackbone,
  loadTextBackbone,
  type ImageBackbone,
  type TextBackbone,
} from '@iisan/backbones'
import { bertHfConfig, demoVocabText, vitHfConfig, writeRandomBert, writeRandomVit } from '@iisan/backbones/default'

/** One line on stderr: a wrong argument (or a failed run) prints no stack trace. */
function fail(message: string, code: number): never {
  console.error(`error: ${message.split('\n').map((l) => l.trim()).filter(Boolean).join(' ')}`)
  process.exit(code)
}

let quick = false
try {
  quick = parseArgs({ options: { quick: { type: 'boolean', default: false } } }).values.quick === true
} catch (err) {
  fail(`${(err as Error).message} (usage: npm run bench:backbones [-- --quick])`, 2)
}

interface Row {
  model: string
  modality: 'text' | 'image'
  shape: string
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

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

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

async function timeText(model: string, bb: TextBackbone, loadSeconds: number, batchSize: number, batches: number): Promise<Row> {
  const data = titles(batchSize * (batches + 1))
  await bb.encodeTexts(data.slice(0, batchSize), { batchSize }) // warm-up: kernel setup, allocation
  const times: number[] = []
  for (let b = 1; b <= batches; b++) {
    const t0 = performance.now()
    await bb.encodeTexts(data.slice(b * batchSize, (b + 1) * batchSize), { batchSize })
    times.push((performance.now() - t0) / 1000)
    sampleRss()
  }
  const c = bb.config
  return {
    model,
    modality: 'text',
    shape: `L${c.numLayers} d${c.hiddenSize} h${c.numHeads} ff${c.intermediateSize} seq${bb.tokenizer.maxLength}`,
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
    modality: 'image',
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

async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const t0 = performance.now()
  const value = await fn()
  return [value, (performance.now() - t0) / 1000]
}

async function main(): Promise<void> {
  const backend = await ensureBackend()
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'iisan-bench-backbones-'))
  const rows: Row[] = []
  try {
    const demo = await ensureDefaultBackbones(path.join(work, 'demo'))
    {
      const [bb, s] = await timed(() => loadTextBackbone(demo.text))
      rows.push(await timeText('demo-bert', bb, s, 128, quick ? 2 : 8))
      bb.dispose()
    }
    {
      const [bb, s] = await timed(() => loadImageBackbone(demo.image))
      rows.push(await timeImage('demo-vit', bb, s, 64, quick ? 2 : 4))
      bb.dispose()
    }
    {
      const dir = path.join(work, 'bert-base')
      writeRandomBert(dir, bertHfConfig({}), demoVocabText(), 'bench')
      const [bb, s] = await timed(() => loadTextBackbone(dir))
      fs.rmSync(dir, { recursive: true })
      rows.push(await timeText('bert-base (random)', bb, s, 32, quick ? 1 : 3))
      bb.dispose()
    }
    {
      const dir = path.join(work, 'vit-base')
      writeRandomVit(dir, vitHfConfig({}), 'bench')
      const [bb, s] = await timed(() => loadImageBackbone(dir))
      fs.rmSync(dir, { recursive: true })
      rows.push(await timeImage('vit-base-patch16-224 (random)', bb, s, 4, quick ? 1 : 3))
      bb.dispose()
    }
  } finally {
    fs.rmSync(work, { recursive: true, force: true })
    clearInterval(sampler)
  }

  console.log(`\nbackbones on tfjs ${backend} (${os.cpus()[0]?.model ?? 'cpu'}, ${os.cpus().length} cores, node ${process.version})`)
  console.table(
    rows.map((r) => ({
      model: r.model,
      shape: r.shape,
      batch: r.batchSize,
      'median batch s': r.medianBatchSeconds.toFixed(3),
      'items/s': r.itemsPerSecond.toFixed(1),
      'preprocess ms/img': r.preprocessMsPerItem?.toFixed(1) ?? '',
      'load s': r.loadSeconds.toFixed(2),
      'peak RSS MB': r.peakRssMB,
    })),
  )
  const out = path.resolve(process.cwd(), 'bench/results/backbones.json')
  fs.mkdirSync(path.dirname(out), { recursive: true })
  fs.writeFileSync(
    out,
    `${JSON.stringify({ date: new Date().toISOString(), backend, node: process.version, cpu: os.cpus()[0]?.model, cores: os.cpus().length, tensorsAtEnd: tf.memory().numTensors, rows }, null, 2)}\n`,
  )
  console.log(`wrote ${path.relative(process.cwd(), out)}`)
}

main().catch((err: unknown) => {
  clearInterval(sampler)
  fail(err instanceof Error ? err.message : String(err), 1)
})

// npm run backbone -- <command>
//   hidden-states --model DIR (--texts FILE | --images FILE...) [--json PATH] [--weights FILE] [--batch-size N]
//   make-default  --out DIR [--force]
//   fingerprint   --model DIR [--weights FILE]
//   download      HUB_ID [--revision REV] [--cache-dir DIR] [--endpoint URL]
// --model also takes a hub id (bert-base-uncased) once it is downloaded.
// Failures print one line to stderr and exit 1 (usage errors point at --help); stack traces are
// for bugs, not for a wrong path or option.
import fs from 'node:fs'
import path from 'node:path'
import { parseArgs } from 'node:util'
import cliProgress from 'cli-progress'
import { readModelConfig } from './config.ts'
import { loadTextBackbone } from './text-backbone.ts'
import { loadImageBackbone } from './image-backbone.ts'
import { ensureDefaultBackbones, makeDefaultBackbones } from './default.ts'
import { fingerprintBackbone } from './fingerprint.ts'
import { downloadBackbone, type DownloadEvent } from './hub.ts'
import { defaultBackboneCacheDir, formatHubRef, hubEndpoint, resolveBackboneSpec } from './hub-cache.ts'

class UsageError extends Error {}

const USAGE = `usage:
  backbone hidden-states --model DIR (--texts FILE | --images FILE...) [--json PATH] [--weights FILE] [--batch-size N]
  backbone make-default --out DIR [--force]
  backbone fingerprint --model DIR [--weights FILE]
  backbone download HUB_ID [--revision REV] [--cache-dir DIR] [--endpoint URL]
--model takes a checkpoint folder or a downloaded hub id. Downloads go to BACKBONE_CACHE_DIR
(default ~/.cache/iisan/backbones) from HF_ENDPOINT (default https://huggingface.co); HF_TOKEN for gated models.`

function progressBar(total: number): { update(done: number): void; stop(): void } {
  if (!process.stderr.isTTY || total < 2) return { update: () => {}, stop: () => {} }
  const bar = new cliProgress.SingleBar({ stream: process.stderr, format: '{bar} {value}/{total} items | {eta_formatted}' }, cliProgress.Presets.shades_classic)
  bar.start(total, 0)
  return { update: (done) => bar.update(done), stop: () => bar.stop() }
}

/** [n, L + 1, d] flat → [layer][input][d] nested. */
function layerMajor(flat: Float32Array, n: number, layers: number, d: number): number[][][] {
  const out: number[][][] = []
  for (let l = 0; l < layers; l++) {
    const rows: number[][] = []
    for (let i = 0; i < n; i++) rows.push(Array.from(flat.subarray((i * layers + l) * d, (i * layers + l + 1) * d)))
    out.push(rows)
  }
  return out
}

async function hiddenStates(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    options: {
      model: { type: 'string' },
      texts: { type: 'string' },
      images: { type: 'string', multiple: true },
      json: { type: 'string' },
      weights: { type: 'string' },
      'batch-size': { type: 'string' },
    },
    // `--images a.jpg b.jpg …`: parseArgs binds only the first file to --images.
    allowPositionals: true,
  })
  if (positionals.length && !values.images?.length) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`)
  if (values.images) values.images.push(...positionals)
  if (!values.model) throw new UsageError('--model DIR is required')
  if (!values.texts === !values.images?.length) throw new UsageError('give exactly one of --texts FILE or --images FILE...')
  const rawBatch = values['batch-size']
  const batchSize = rawBatch !== undefined ? Number(rawBatch) : undefined
  if (batchSize !== undefined && !(/^\d+$/.test(rawBatch!.trim()) && Number.isSafeInteger(batchSize) && batchSize > 0)) {
    throw new UsageError(`--batch-size must be a positive integer (got ${JSON.stringify(rawBatch)})`)
  }
  values.model = modelDir(values.model)
  const config = readModelConfig(values.model)
  let result: Record<string, unknown>
  if (values.texts) {
    if (config.modelType !== 'bert') throw new UsageError(`--texts needs a BERT folder; ${values.model} is ${config.modelType}`)
    let text: string
    try {
      text = fs.readFileSync(values.texts, 'utf8')
    } catch (err) {
      throw new Error(`cannot read texts file ${values.texts}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`)
    }
    const titles = text.split('\n').map((l) => l.replace(/\r$/, ''))
    if (titles[titles.length - 1] === '') titles.pop()
    const backbone = await loadTextBackbone(values.model, { weightsFile: values.weights })
    const bar = progressBar(titles.length)
    const enc = await backbone.encodeTexts(titles, { batchSize, onProgress: (done) => bar.update(done) })
    bar.stop()
    backbone.dispose()
    const ids: number[][] = []
    for (let i = 0; i < enc.n; i++) ids.push(Array.from(enc.inputIds.subarray(i * enc.seqLen, (i + 1) * enc.seqLen)))
    result = {
      model_type: 'bert',
      fingerprint: backbone.fingerprint,
      num_layers: enc.numLayers,
      hidden_size: enc.hiddenSize,
      texts: titles,
      input_ids: ids,
      cls_per_layer: layerMajor(enc.clsPerLayer, enc.n, enc.numLayers + 1, enc.hiddenSize),
    }
  } else {
    if (config.modelType !== 'vit') throw new UsageError(`--images needs a ViT folder; ${values.model} is ${config.modelType}`)
    const files = values.images!
    const backbone = await loadImageBackbone(values.model, { weightsFile: values.weights })
    const bar = progressBar(files.length)
    const encoded = await backbone.encodeImages(files, { batchSize, onProgress: (done) => bar.update(done) })
    bar.stop()
    backbone.dispose()
    const failed = encoded.findIndex((r) => !r.ok)
    if (failed >= 0) {
      const r = encoded[failed] as { ok: false; error: string }
      throw new Error(r.error)
    }
    const L1 = backbone.numLayers + 1
    const d = backbone.hiddenSize
    const flat = new Float32Array(files.length * L1 * d)
    encoded.forEach((r, i) => flat.set((r as { cls: Float32Array }).cls, i * L1 * d))
    result = {
      model_type: 'vit',
      fingerprint: backbone.fingerprint,
      num_layers: backbone.numLayers,
      hidden_size: d,
      images: files,
      cls_per_layer: layerMajor(flat, files.length, L1, d),
    }
  }
  const json = `${JSON.stringify(result)}\n`
  if (values.json) {
    fs.mkdirSync(path.dirname(path.resolve(values.json)), { recursive: true })
    fs.writeFileSync(values.json, json)
  } else {
    process.stdout.write(json)
  }
}

async function makeDefault(args: string[]): Promise<void> {
  const { values } = parseArgs({ args, options: { out: { type: 'string' }, force: { type: 'boolean' } } })
  if (!values.out) throw new UsageError('--out DIR is required')
  const paths = values.force ? await makeDefaultBackbones(values.out) : await ensureDefaultBackbones(values.out)
  console.log(`text backbone:  ${paths.text} (${fingerprintBackbone(paths.text)})`)
  console.log(`image backbone: ${paths.image} (${fingerprintBackbone(paths.image)})`)
}

async function fingerprint(args: string[]): Promise<void> {
  const { values } = parseArgs({ args, options: { model: { type: 'string' }, weights: { type: 'string' } } })
  if (!values.model) throw new UsageError('--model DIR is required')
  console.log(fingerprintBackbone(modelDir(values.model), { weightsFile: values.weights }))
}

/** A folder, or a hub id's folder in the download cache (the loader explains one not downloaded). */
function modelDir(spec: string): string {
  const resolved = resolveBackboneSpec(spec)
  if (resolved.kind === 'disabled') throw new UsageError(`--model ${spec} names no backbone`)
  return resolved.dir
}

const mb = (bytes: number): string =>
  bytes < 1024 ? `${bytes} B` : bytes < 2 ** 20 ? `${(bytes / 1024).toFixed(1)} KB` : bytes < 2 ** 30 ? `${(bytes / 2 ** 20).toFixed(1)} MB` : `${(bytes / 2 ** 30).toFixed(2)} GB`

/** Bars on a terminal, one line per file otherwise (CI logs, pipes). */
function downloadProgress(): { onProgress(e: DownloadEvent): void; stop(): void } {
  if (!process.stderr.isTTY) {
    return {
      onProgress(e) {
        if (e.type === 'plan') process.stderr.write(`${e.repo} @ ${e.commit.slice(0, 12)} → ${e.dir}\n`)
        else if (e.type === 'file') {
          const how = e.state === 'present' ? 'present' : e.state === 'resume' ? `resuming at ${mb(e.offset)}` : 'downloading'
          process.stderr.write(`  ${e.path} (${mb(e.size)}): ${how}\n`)
        } else if (e.type === 'retry') process.stderr.write(`  ${e.path}: broken off at ${mb(e.offset)} (${e.error}); resuming (attempt ${e.attempt})\n`)
        else if (e.type === 'verified') process.stderr.write(`  ${e.path}: verified\n`)
      },
      stop() {},
    }
  }
  const bars = new cliProgress.MultiBar(
    { stream: process.stderr, format: '{file} {bar} {percentage}% | {done}/{size} | {eta_formatted}', hideCursor: true, clearOnComplete: false },
    cliProgress.Presets.shades_classic,
  )
  const open = new Map<string, cliProgress.SingleBar>()
  return {
    onProgress(e) {
      if (e.type === 'plan') bars.log(`${e.repo} @ ${e.commit.slice(0, 12)} → ${e.dir}\n`)
      else if (e.type === 'file') {
        const file = e.path.padEnd(28)
        open.set(e.path, bars.create(e.size, e.offset, { file, done: mb(e.offset), size: mb(e.size) }))
      } else if (e.type === 'bytes') open.get(e.path)?.update(e.done, { done: mb(e.done) })
      else if (e.type === 'retry') bars.log(`${e.path}: broken off at ${mb(e.offset)} (${e.error}); resuming (attempt ${e.attempt})\n`)
    },
    stop: () => bars.stop(),
  }
}

async function download(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    options: { revision: { type: 'string' }, 'cache-dir': { type: 'string' }, endpoint: { type: 'string' } },
    allowPositionals: true,
  })
  if (positionals.length !== 1) throw new UsageError('give one hub id, e.g. bert-base-uncased or google/vit-base-patch16-224')
  const [spec] = positionals
  const at = spec.indexOf('@')
  const repo = at >= 0 ? spec.slice(0, at) : spec
  const revision = values.revision ?? (at >= 0 ? spec.slice(at + 1) : undefined)
  const progress = downloadProgress()
  let result
  try {
    result = await downloadBackbone(repo, {
      revision,
      cacheDir: values['cache-dir'] ? path.resolve(values['cache-dir']) : defaultBackboneCacheDir(),
      endpoint: values.endpoint ?? hubEndpoint(),
      onProgress: progress.onProgress,
    })
  } finally {
    progress.stop()
  }
  // Loadable, not only complete: parse the config and tokenizer, check and hash every tensor.
  const fingerprint = fingerprintBackbone(result.dir)
  const variable = readModelConfig(result.dir).modelType === 'bert' ? 'TEXT_BACKBONE' : 'IMAGE_BACKBONE'
  const id = formatHubRef({ repo: result.repo, revision: result.revision })
  process.stderr.write(`${result.transferred ? `downloaded ${mb(result.transferred)}` : 'already downloaded'}; fingerprint ${fingerprint.slice(0, 12)}. Use it with ${variable}=${id}${values['cache-dir'] ? ` BACKBONE_CACHE_DIR=${path.resolve(values['cache-dir'])}` : ''}\n`)
  console.log(result.dir)
}

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv
  if (command === 'hidden-states') return hiddenStates(rest)
  if (command === 'make-default') return makeDefault(rest)
  if (command === 'fingerprint') return fingerprint(rest)
  if (command === 'download') return download(rest)
  if (command === undefined || command === '--help' || command === '-h') {
    console.log(USAGE)
    return
  }
  throw new UsageError(`unknown command ${JSON.stringify(command)}`)
}

main(process.argv.slice(2)).catch((err: unknown) => {
  const message = err instanceof Error ? err.message : String(err)
  // parseArgs' own errors (unknown option, missing value, stray argument) are usage errors too.
  const usage = err instanceof UsageError || String((err as { code?: unknown })?.code).startsWith('ERR_PARSE_ARGS')
  process.stderr.write(`backbone: ${message.split('\n')[0]}${usage ? ' (usage: npm run backbone -- --help)' : ''}\n`)
  process.exitCode = 1
})

// `npm run cache-states -- [--data DIR] [--out DIR] [--text-model DIR] [--batch-size N]`
// Runs the frozen text backbone over a catalogue once and writes the per-layer [CLS] states as a
// states folder (text.safetensors, float16) that `npm run train -- --method iisan --states DIR`
// trains on. Without --text-model the generated demo BERT is used (random weights: fine for
// exercising the pipeline, not for quality). Scientific ships no images, so no image file is
// written and every item is trained as text-only. Bad arguments or inputs print one `error: …`
// line and exit 2.
import { mkdirSync, readFileSync } from 'node:fs'
import path from 'node:path'
import cliProgress from 'cli-progress'
import { decodeHTML } from 'entities'
import { ensureDefaultBackbones, loadTextBackbone } from '@iisan/backbones'
import { initBackend } from '@iisan/model/backend'
import { parseItemsTsv } from '@iisan/model/data'
import { SCIENTIFIC_DIR, statesFilePath, writeStatesFile } from '@iisan/pipeline'
import { float32ToFloat16 } from '@iisan/safetensors'
import { errorMessage, fail, parseOptions, positiveInt } from '@iisan/pipeline/cli/args'

const USAGE = 'usage: npm run cache-states -- [--data DIR] [--out DIR] [--text-model DIR] [--batch-size N]'

async function main(): Promise<void> {
  const { values } = parseOptions(
    {
      data: { type: 'string', default: SCIENTIFIC_DIR },
      out: { type: 'string', default: 'artifacts/states/scientific' },
      'text-model': { type: 'string' },
      'batch-size': { type: 'string', default: '128' },
    },
    USAGE,
  )
  const batchSize = positiveInt('batch-size', values['batch-size'])

  let items
  try {
    items = parseItemsTsv(readFileSync(path.join(values.data!, 'items.tsv'), 'utf8'))
  } catch (e) {
    fail(`cannot read ${values.data}/items.tsv: ${errorMessage(e)}`)
  }
  if (items.length === 0) fail(`${values.data}/items.tsv has no items`)
  await initBackend()
  let modelDir: string
  try {
    modelDir = values['text-model'] ?? (await ensureDefaultBackbones('artifacts/backbones')).text
  } catch (e) {
    fail(`cannot create the demo backbones in artifacts/backbones: ${errorMessage(e)}`)
  }
  let backbone
  try {
    backbone = await loadTextBackbone(modelDir)
  } catch (e) {
    fail(`cannot load the text backbone in ${modelDir}: ${errorMessage(e)}`)
  }
  console.log(`text backbone ${modelDir}: L = ${backbone.numLayers}, d = ${backbone.hiddenSize}, fingerprint ${backbone.fingerprint.slice(0, 12)}…`)
  const bar = new cliProgress.SingleBar({ format: 'encoding titles |{bar}| {value}/{total}  {eta_formatted} left' }, cliProgress.Presets.shades_classic)
  bar.start(items.length, 0)
  const started = performance.now()
  let encoded
  try {
    encoded = await backbone.encodeTexts(
      items.map((i) => decodeHTML(i.title)),
      { batchSize, onProgress: (done) => bar.update(done) },
    )
  } finally {
    bar.stop()
  }
  const seconds = (performance.now() - started) / 1000
  const file = statesFilePath(values.out!, 'text')
  try {
    mkdirSync(values.out!, { recursive: true })
    writeStatesFile(file, {
      modality: 'text',
      fingerprint: backbone.fingerprint,
      numLayers: backbone.numLayers,
      width: backbone.hiddenSize,
      itemKeys: items.map((i) => i.externalId),
      data: float32ToFloat16(encoded.clsPerLayer),
    })
  } catch (e) {
    fail(`cannot write ${file}: ${errorMessage(e)}`)
  }
  backbone.dispose()
  console.log(`${items.length} items in ${seconds.toFixed(1)} s (${(items.length / seconds).toFixed(0)} items/s) → ${file}`)
}

process.on('uncaughtException', (e) => fail(errorMessage(e)))
process.on('unhandledRejection', (e) => fail(errorMessage(e)))
main().catch((e: unknown) => fail(errorMessage(e)))

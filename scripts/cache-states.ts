// `npm run cache-states -- [--data DIR] [--out DIR] [--text-model DIR] [--users N]`
// Runs the frozen text backbone over a catalogue once and writes the per-layer [CLS] states as a
// states folder (text.safetensors, float16) that `npm run train -- --method iisan --states DIR`
// trains on. Without --text-model the generated demo BERT is used (random weights: fine for
// exercising the pipeline, not for quality). Scientific ships no images, so no image file is
// written and every item is trained as text-only.
import { mkdirSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { parseArgs } from 'node:util'
import cliProgress from 'cli-progress'
import { decodeHTML } from 'entities'
import { ensureDefaultBackbones, loadTextBackbone } from '@iisan/backbones'
import { initBackend } from '@iisan/model/backend'
import { parseItemsTsv } from '@iisan/model/data'
import { SCIENTIFIC_DIR, statesFilePath, writeStatesFile } from '@iisan/pipeline'
import { float32ToFloat16 } from '@iisan/safetensors'

function fail(message: string): never {
  console.error(`error: ${message}`)
  process.exit(2)
}

const { values } = parseArgs({
  options: {
    data: { type: 'string', default: SCIENTIFIC_DIR },
    out: { type: 'string', default: 'artifacts/states/scientific' },
    'text-model': { type: 'string' },
    'batch-size': { type: 'string', default: '128' },
  },
})

await initBackend()
let items
try {
  items = parseItemsTsv(readFileSync(path.join(values.data!, 'items.tsv'), 'utf8'))
} catch (e) {
  fail(`cannot read ${values.data}/items.tsv: ${(e as Error).message}`)
}
const modelDir = values['text-model'] ?? (await ensureDefaultBackbones('artifacts/backbones')).text
let backbone
try {
  backbone = await loadTextBackbone(modelDir)
} catch (e) {
  fail(`cannot load the text backbone in ${modelDir}: ${(e as Error).message}`)
}
console.log(`text backbone ${modelDir}: L = ${backbone.numLayers}, d = ${backbone.hiddenSize}, fingerprint ${backbone.fingerprint.slice(0, 12)}…`)
const bar = new cliProgress.SingleBar({ format: 'encoding titles |{bar}| {value}/{total}  {eta_formatted} left' }, cliProgress.Presets.shades_classic)
bar.start(items.length, 0)
const started = performance.now()
const encoded = await backbone.encodeTexts(
  items.map((i) => decodeHTML(i.title)),
  { batchSize: Number(values['batch-size']), onProgress: (done) => bar.update(done) },
)
bar.stop()
const seconds = (performance.now() - started) / 1000
mkdirSync(values.out!, { recursive: true })
const file = statesFilePath(values.out!, 'text')
writeStatesFile(file, {
  modality: 'text',
  fingerprint: backbone.fingerprint,
  numLayers: backbone.numLayers,
  width: backbone.hiddenSize,
  itemKeys: items.map((i) => i.externalId),
  data: float32ToFloat16(encoded.clsPerLayer),
})
backbone.dispose()
console.log(`${items.length} items in ${seconds.toFixed(1)} s (${(items.length / seconds).toFixed(0)} items/s) → ${file}`)

// Regenerates packages/backbones/assets/demo-vocab.txt from the Scientific items file:
//   npx tsx test/fixtures-gen/make-demo-vocab.ts [/path/to/items.tsv]
// (tab-separated: item id, title). The asset is committed; the demo backbone reads only it.
import fs from 'node:fs'
import path from 'node:path'
import { buildDemoVocab, DEMO_VOCAB_TITLES } from '../../packages/backbones/src/demo-vocab.ts'

const items = process.argv[2] ?? path.resolve(process.cwd(), 'data/scientific/items.tsv')
const titles = fs
  .readFileSync(items, 'utf8')
  .split('\n')
  .filter(Boolean)
  .slice(0, DEMO_VOCAB_TITLES)
  .map((line) => line.split('\t')[1] ?? '')
const out = path.resolve(import.meta.dirname, '../../packages/backbones/assets/demo-vocab.txt')
fs.writeFileSync(out, buildDemoVocab(titles))
console.log(`wrote ${out} (${fs.readFileSync(out, 'utf8').split('\n').length - 1} tokens)`)

// The demo BERT's WordPiece vocabulary. It is built once from product titles (the first 5,000
// of the Amazon "Scientific" items) and committed as assets/demo-vocab.txt, so machines without
// the dataset generate the identical demo backbone. Every printable ASCII character and its
// `##` continuation is included, so any ASCII word tokenises without [UNK].
import { BertTokenizer } from './tokenizer.ts'

export const DEMO_VOCAB_TITLES = 5000
export const DEMO_VOCAB_MIN_COUNT = 2

const SPECIALS = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']

/** Frequent English suffixes, so unseen inflections split into word + ##suffix. */
const SUFFIXES = ['s', 'es', 'ed', 'er', 'ers', 'ing', 'ly', 'al', 'ic', 'ion', 'ions', 'able', 'ness', 'ment', 'less', 'ful', 'ity', 'ive', 'ous', 'ist', 'ism', 'meter', 'scope', 'graph', 'logy', 'mm', 'ml', 'cm', 'pcs', 'pack']

export function buildDemoVocab(titles: Iterable<string>, minCount = DEMO_VOCAB_MIN_COUNT): string {
  const basic = BertTokenizer.fromVocab(`${SPECIALS.join('\n')}\n`)
  const counts = new Map<string, number>()
  for (const title of titles) {
    for (const word of basic.basicTokenize(title)) counts.set(word, (counts.get(word) ?? 0) + 1)
  }
  const tokens: string[] = [...SPECIALS]
  const seen = new Set(tokens)
  const add = (t: string): void => {
    if (!seen.has(t)) {
      seen.add(t)
      tokens.push(t)
    }
  }
  const chars: string[] = []
  for (let code = 33; code <= 126; code++) {
    const ch = String.fromCharCode(code)
    if (ch.toLowerCase() === ch) chars.push(ch)
  }
  for (const ch of chars) add(ch)
  for (const ch of chars) if (/[a-z0-9]/.test(ch)) add(`##${ch}`)
  for (const s of SUFFIXES) add(`##${s}`)
  const words = [...counts.entries()]
    .filter(([w, c]) => c >= minCount && [...w].length > 1)
    .sort(([a, ca], [b, cb]) => cb - ca || (a < b ? -1 : a > b ? 1 : 0))
  for (const [w] of words) add(w)
  return `${tokens.join('\n')}\n`
}

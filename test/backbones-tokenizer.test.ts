// WordPiece ids must equal HF's exactly: the 315 tokenizer_cases (300 Scientific titles + edge
// cases: accents, CJK, control chars, emoji, literal special tokens, overlong words, empty input).
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { BertTokenizer } from '@iisan/backbones'
import { demoVocabText } from '@iisan/backbones/default'
import { fixtureDir, tempDir } from './fixtures-gen/backbone-fixtures.ts'

interface Case {
  text: string
  input_ids: number[]
  attention_mask: number[]
  tokens: string[]
}

const cases = JSON.parse(fs.readFileSync(path.join(fixtureDir('bert-tiny-a'), 'tokenizer_cases.json'), 'utf8')) as Case[]
const vocabText = fs.readFileSync(path.join(fixtureDir('bert-tiny-a'), 'vocab.txt'), 'utf8')
const dirs: string[] = []

afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true })
})

describe('BERT uncased WordPiece', () => {
  it('has 315 cases', () => {
    expect(cases).toHaveLength(315)
  })

  it('matches every case from vocab.txt (ids, mask, tokens)', () => {
    const tok = BertTokenizer.fromDir(fixtureDir('bert-tiny-a'))
    const batch = tok.encodeBatch(cases.map((c) => c.text))
    const mismatches: string[] = []
    cases.forEach((c, i) => {
      const ids = Array.from(batch.inputIds.subarray(i * 30, (i + 1) * 30))
      const mask = Array.from(batch.attentionMask.subarray(i * 30, (i + 1) * 30))
      const tokens = ids.filter((_, j) => mask[j]).map((id) => tok.idToToken(id))
      if (JSON.stringify([ids, mask, tokens]) !== JSON.stringify([c.input_ids, c.attention_mask, c.tokens])) mismatches.push(JSON.stringify(c.text))
    })
    expect(mismatches).toEqual([])
  })

  it('gives the same ids from a tokenizer.json (preferred when present)', () => {
    const dir = tempDir('tokjson')
    dirs.push(dir)
    const vocab: Record<string, number> = {}
    vocabText
      .split('\n')
      .slice(0, -1)
      .forEach((t, i) => (vocab[t] = i))
    const special = (content: string) => ({ id: vocab[content], content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })
    // The layout of bert-base-uncased's hub tokenizer.json.
    const tokenizerJson = {
      version: '1.0',
      truncation: null,
      padding: null,
      added_tokens: ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'].map(special),
      normalizer: { type: 'BertNormalizer', clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true },
      pre_tokenizer: { type: 'BertPreTokenizer' },
      post_processor: {
        type: 'TemplateProcessing',
        single: [{ SpecialToken: { id: '[CLS]', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '[SEP]', type_id: 0 } }],
        pair: [],
        special_tokens: { '[CLS]': { id: '[CLS]', ids: [101], tokens: ['[CLS]'] }, '[SEP]': { id: '[SEP]', ids: [102], tokens: ['[SEP]'] } },
      },
      decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
      model: { type: 'WordPiece', unk_token: '[UNK]', continuing_subword_prefix: '##', max_input_chars_per_word: 100, vocab },
    }
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(tokenizerJson))
    const tok = BertTokenizer.fromDir(dir)
    expect(tok.descriptor.source).toBe('tokenizer.json')
    const batch = tok.encodeBatch(cases.map((c) => c.text))
    expect(Array.from(batch.inputIds)).toEqual(cases.flatMap((c) => c.input_ids))
  })

  it('truncates to [CLS] + pieces[:maxLength-2] + [SEP] and pads with [PAD]', () => {
    const tok = BertTokenizer.fromVocab(vocabText)
    const long = Array.from({ length: 50 }, (_, i) => `word${i}`).join(' ')
    const b = tok.encodeBatch([long, 'hi'], 8)
    const pieces = tok.encodePieces(long)
    expect(Array.from(b.inputIds.subarray(0, 8))).toEqual([101, ...pieces.slice(0, 6), 102])
    expect(Array.from(b.inputIds.subarray(8))).toEqual([101, tok.encodePieces('hi')[0], 102, 0, 0, 0, 0, 0])
    expect(Array.from(b.attentionMask)).toEqual([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
  })
})

// its provenance (bert-base-uncased's vocab.txt) and an unseen catalogue: test/backbones-vocab.test.ts
describe('demo vocabulary', () => {
  it('tokenises ASCII titles without [UNK]', () => {
    const tok = BertTokenizer.fromVocab(demoVocabText())
    const unk = tok.encodePieces('[UNK]')[0]
    const ids = tok.encodePieces('Zyxwvut-9000 Ultra Centrifuge, 1.5mL tubes (autoclavable) #42 ~$19.99')
    expect(ids).not.toContain(unk)
    expect(tok.vocabSize).toBeGreaterThan(4000)
  })
})

// BERT WordPiece tokenisation through @huggingface/tokenizers (pure JS, the same pipeline as the
// Rust `tokenizers` crate: it reproduces HF's ids on all 315 fixture cases). A folder with only
// vocab.txt gets the tokenizer.json that transformers' BertTokenizerFast converter would build.
// Truncation and padding are done here rather than by the library: IISAN's input is always
// `[CLS] pieces[:maxLength-2] [SEP]` right-padded with [PAD], attention mask 1/0.
import fs from 'node:fs'
import path from 'node:path'
import { createHash } from 'node:crypto'
import { Tokenizer } from '@huggingface/tokenizers'
import { BackboneConfigError, readJsonFile } from './config.ts'

export const DEFAULT_MAX_LENGTH = 30

/** Row-major [n, seqLen] token ids and mask for a batch of texts. */
export interface TextBatch {
  n: number
  seqLen: number
  inputIds: Int32Array
  attentionMask: Int32Array
}

/** What decides the ids; part of the backbone fingerprint. */
export interface TokenizerDescriptor {
  source: 'tokenizer.json' | 'vocab.txt'
  sha256: string
  lowercase: boolean
  maxLength: number
}

export interface TokenizerOptions {
  lowercase?: boolean
  stripAccents?: boolean | null
  handleChineseChars?: boolean
  maxLength?: number
}

const SPECIAL_TOKENS = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']

export class BertTokenizer {
  readonly clsId: number
  readonly sepId: number
  readonly padId: number
  readonly vocabSize: number

  private constructor(
    private readonly tokenizer: Tokenizer,
    readonly descriptor: TokenizerDescriptor,
  ) {
    const id = (token: string): number => {
      const value = tokenizer.token_to_id(token)
      if (value === undefined) throw new BackboneConfigError(`tokenizer vocabulary has no ${token} token`)
      return value
    }
    this.clsId = id('[CLS]')
    this.sepId = id('[SEP]')
    this.padId = id('[PAD]')
    let max = 0
    for (const v of tokenizer.get_vocab(true).values()) max = Math.max(max, v)
    this.vocabSize = max + 1
  }

  /** Prefers tokenizer.json (exactly what the hub ships), else vocab.txt + tokenizer_config.json. */
  static fromDir(dir: string, maxLength = DEFAULT_MAX_LENGTH): BertTokenizer {
    const configFile = path.join(dir, 'tokenizer_config.json')
    const tokConfig = fs.existsSync(configFile) ? readJsonFile(configFile, 'tokenizer config') : {}
    const jsonFile = path.join(dir, 'tokenizer.json')
    if (fs.existsSync(jsonFile)) {
      const text = fs.readFileSync(jsonFile, 'utf8')
      let json: Record<string, unknown>
      try {
        json = JSON.parse(text)
      } catch (err) {
        throw new BackboneConfigError(`${jsonFile} is not valid JSON: ${(err as Error).message}`)
      }
      const model = json.model as { type?: string } | undefined
      if (model?.type !== 'WordPiece') throw new BackboneConfigError(`${jsonFile}: expected a WordPiece model, got ${model?.type}`)
      // The library insists these keys exist; hand-written files may omit them. Post-processing is
      // irrelevant (we add [CLS]/[SEP] ourselves) and decoding is never used.
      json.post_processor ??= null
      json.decoder ??= { type: 'WordPiece', prefix: '##', cleanup: true }
      json.normalizer ??= null
      json.pre_tokenizer ??= null
      json.added_tokens ??= []
      const normalizer = json.normalizer as { lowercase?: boolean } | undefined
      const descriptor: TokenizerDescriptor = {
        source: 'tokenizer.json',
        sha256: sha256(text),
        lowercase: normalizer?.lowercase ?? true,
        maxLength,
      }
      return new BertTokenizer(construct(json, tokConfig, jsonFile), descriptor)
    }
    const vocabFile = path.join(dir, 'vocab.txt')
    if (!fs.existsSync(vocabFile)) throw new BackboneConfigError(`backbone folder ${dir} has neither tokenizer.json nor vocab.txt`)
    const vocabText = fs.readFileSync(vocabFile, 'utf8')
    return BertTokenizer.fromVocab(vocabText, {
      lowercase: tokConfig.do_lower_case !== false,
      stripAccents: typeof tokConfig.strip_accents === 'boolean' ? tokConfig.strip_accents : null,
      handleChineseChars: tokConfig.tokenize_chinese_chars !== false,
      maxLength,
    })
  }

  /** vocab.txt: one token per line, id = line number. */
  static fromVocab(vocabText: string, options: TokenizerOptions = {}): BertTokenizer {
    const lines = vocabText.split('\n')
    if (lines[lines.length - 1] === '') lines.pop()
    const vocab: Record<string, number> = {}
    lines.forEach((line, i) => {
      const token = line.replace(/\r$/, '')
      // transformers' load_vocab keeps the last id of a duplicated line; the fast converter keeps
      // that mapping, so do the same.
      vocab[token] = i
    })
    const missing = SPECIAL_TOKENS.filter((t) => t !== '[MASK]' && !(t in vocab))
    if (missing.length) throw new BackboneConfigError(`vocab.txt lacks special tokens ${missing.join(', ')}`)
    const lowercase = options.lowercase ?? true
    const json = {
      version: '1.0',
      added_tokens: SPECIAL_TOKENS.filter((t) => t in vocab).map((t) => ({
        id: vocab[t],
        content: t,
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: false,
        special: true,
      })),
      normalizer: {
        type: 'BertNormalizer',
        clean_text: true,
        handle_chinese_chars: options.handleChineseChars ?? true,
        // null = follow `lowercase`, exactly as BertTokenizer does for uncased vocabularies.
        strip_accents: options.stripAccents ?? null,
        lowercase,
      },
      pre_tokenizer: { type: 'BertPreTokenizer' },
      post_processor: { type: 'BertProcessing', sep: ['[SEP]', vocab['[SEP]']], cls: ['[CLS]', vocab['[CLS]']] },
      decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
      model: { type: 'WordPiece', unk_token: '[UNK]', continuing_subword_prefix: '##', max_input_chars_per_word: 100, vocab },
    }
    const descriptor: TokenizerDescriptor = {
      source: 'vocab.txt',
      sha256: sha256(JSON.stringify([vocabText, options.stripAccents ?? null, options.handleChineseChars ?? true])),
      lowercase,
      maxLength: options.maxLength ?? DEFAULT_MAX_LENGTH,
    }
    return new BertTokenizer(construct(json, { do_lower_case: lowercase }, 'vocab.txt'), descriptor)
  }

  get maxLength(): number {
    return this.descriptor.maxLength
  }

  /** WordPiece ids without special tokens or truncation. */
  encodePieces(text: string): number[] {
    return this.tokenizer.encode(text, { add_special_tokens: false }).ids
  }

  /** Normalised, pre-tokenised words (before WordPiece), e.g. for building a vocabulary. */
  basicTokenize(text: string): string[] {
    const normalized = this.tokenizer.normalizer ? this.tokenizer.normalizer.normalize(text) : text
    return this.tokenizer.pre_tokenizer ? this.tokenizer.pre_tokenizer.pre_tokenize_text(normalized) : normalized.split(/\s+/).filter(Boolean)
  }

  idToToken(id: number): string | undefined {
    return this.tokenizer.id_to_token(id)
  }

  /** `[CLS] pieces[:maxLength-2] [SEP]`, right-padded to maxLength. */
  encodeBatch(texts: string[], maxLength = this.maxLength): TextBatch {
    if (maxLength < 2) throw new RangeError('maxLength must be at least 2')
    const n = texts.length
    const inputIds = new Int32Array(n * maxLength).fill(this.padId)
    const attentionMask = new Int32Array(n * maxLength)
    for (let i = 0; i < n; i++) {
      const pieces = this.encodePieces(texts[i]).slice(0, maxLength - 2)
      const row = i * maxLength
      inputIds[row] = this.clsId
      for (let j = 0; j < pieces.length; j++) inputIds[row + 1 + j] = pieces[j]
      inputIds[row + 1 + pieces.length] = this.sepId
      attentionMask.fill(1, row, row + pieces.length + 2)
    }
    return { n, seqLen: maxLength, inputIds, attentionMask }
  }
}

/** Tokens per row, [CLS] and [SEP] included: the attention mask's row sums. */
export function rowLengths(batch: TextBatch): Int32Array {
  const { n, seqLen, attentionMask } = batch
  const lengths = new Int32Array(n)
  for (let i = 0; i < n; i++) {
    let len = 0
    for (let t = i * seqLen; t < (i + 1) * seqLen; t++) len += attentionMask[t]
    lengths[i] = len
  }
  return lengths
}

/**
 * Row indices, longest first (ties keep input order): batches cut from this order hold titles of
 * similar length, so padding each batch to its longest adds few [PAD] tokens.
 */
export function lengthOrder(lengths: ArrayLike<number>): Int32Array {
  const order = Int32Array.from({ length: lengths.length }, (_, i) => i)
  return order.sort((a, b) => lengths[b] - lengths[a] || a - b)
}

/**
 * Rows `rows` of a batch as a batch of their own, padded to `seqLen` — by default to the longest
 * of them (transformers' padding='longest'). Right padding only drops trailing [PAD] columns, and
 * the attention mask gives padded keys zero weight, so every real position's hidden states are
 * the same at any padded length (within float rounding).
 */
export function selectRows(batch: TextBatch, rows: ArrayLike<number>, seqLen?: number): TextBatch {
  let longest = 0
  for (let j = 0; j < rows.length; j++) {
    const from = rows[j] * batch.seqLen
    for (let t = longest; t < batch.seqLen; t++) if (batch.attentionMask[from + t]) longest = t + 1
  }
  const out = seqLen ?? longest
  if (out < longest || out > batch.seqLen) throw new RangeError(`cannot pad rows of up to ${longest} tokens to ${out} (batch width ${batch.seqLen})`)
  const n = rows.length
  const inputIds = new Int32Array(n * out)
  const attentionMask = new Int32Array(n * out)
  for (let j = 0; j < n; j++) {
    const from = rows[j] * batch.seqLen
    inputIds.set(batch.inputIds.subarray(from, from + out), j * out)
    attentionMask.set(batch.attentionMask.subarray(from, from + out), j * out)
  }
  return { n, seqLen: out, inputIds, attentionMask }
}

function construct(json: object, config: object, source: string): Tokenizer {
  try {
    return new Tokenizer(json, config)
  } catch (err) {
    throw new BackboneConfigError(`cannot build a tokenizer from ${source}: ${(err as Error).message}`)
  }
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex')
}

// Dynamic padding of text batches (issue 12): each forward batch is padded to its longest title
// and titles are batched by token length. The attention mask makes padding irrelevant, so every
// real position's hidden state is the one fixed 30-token padding gives (within 1e-5), and the
// states come back in input order after the length sort. Tiny fixture BERT, on both runtimes
// (ONNX Runtime and tfjs-wasm).
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ensureBackend, lengthOrder, loadTextBackbone, rowLengths, selectRows, type TextBackbone } from '@iisan/backbones'
import { fixtureDir, itemMajor, readExpected, worstError, type BertExpected } from './fixtures-gen/backbone-fixtures.ts'

const TOL = 1e-5

// The fixture titles (up to the full 30 tokens) plus short ones, so batches differ in width.
const titles = [...readExpected<BertExpected>('bert-tiny-a').texts, 'pla', 'Carbide end mill', 'a b c d e f g h', 'oscilloscope probe 100 MHz']

const worstAbs = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  expect(a.length).toBe(b.length)
  let worst = 0
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]))
  return worst
}

describe.each(['onnx', 'tfjs'] as const)('%s: dynamic padding', (runtime) => {
  let bert: TextBackbone

  beforeAll(async () => {
    await ensureBackend()
    bert = await loadTextBackbone(fixtureDir('bert-tiny-a'), { runtime })
  })

  afterAll(() => bert?.dispose())

  it('pads to the longest title of the batch and sorts by token count, longest first', () => {
    const batch = bert.tokenize(titles)
    const lengths = rowLengths(batch)
    expect(Math.max(...lengths)).toBe(30)
    expect(Math.min(...lengths)).toBeLessThan(6)
    const order = lengthOrder(lengths)
    expect([...order].sort((a, b) => a - b)).toEqual(titles.map((_, i) => i))
    for (let j = 1; j < order.length; j++) expect(lengths[order[j - 1]]).toBeGreaterThanOrEqual(lengths[order[j]])
    const short = order.subarray(order.length - 3)
    const part = selectRows(batch, short)
    expect(part.seqLen).toBe(Math.max(...Array.from(short, (i) => lengths[i])))
    short.forEach((row, j) => {
      expect(Array.from(part.inputIds.subarray(j * part.seqLen, (j + 1) * part.seqLen))).toEqual(Array.from(batch.inputIds.subarray(row * 30, row * 30 + part.seqLen)))
      expect(Array.from(part.attentionMask.subarray(j * part.seqLen, (j + 1) * part.seqLen))).toEqual(Array.from(batch.attentionMask.subarray(row * 30, row * 30 + part.seqLen)))
    })
    expect(() => selectRows(batch, short, part.seqLen - 1)).toThrow(RangeError)
  })

  it('leaves every real position of every layer unchanged, within 1e-5', async () => {
    const fixed = await bert.hiddenStates(titles) // [L + 1, n, 30, d]
    const tokens = bert.tokenize(titles)
    const lengths = rowLengths(tokens)
    // the short titles alone: a batch far narrower than 30
    const rows = Int32Array.from(titles.keys()).filter((i) => lengths[i] < 12)
    expect(rows.length).toBeGreaterThanOrEqual(3)
    const narrow = selectRows(tokens, rows)
    expect(narrow.seqLen).toBeLessThan(12)
    const dyn = await bert.hiddenStates(narrow) // [L + 1, rows, narrow.seqLen, d]
    const { numLayers, hiddenSize: d } = bert
    let worst = 0
    for (let layer = 0; layer <= numLayers; layer++) {
      rows.forEach((item, j) => {
        for (let t = 0; t < lengths[item]; t++) {
          const a = ((layer * titles.length + item) * 30 + t) * d
          const b = ((layer * rows.length + j) * narrow.seqLen + t) * d
          worst = Math.max(worst, worstAbs(dyn.hiddenStates.subarray(b, b + d), fixed.hiddenStates.subarray(a, a + d)))
        }
      })
    }
    expect(worst).toBeLessThanOrEqual(TOL)
  })

  it('encodeTexts: the same [CLS] states as fixed padding for every item, in input order', async () => {
    const fixed = await bert.encodeTexts(titles, { batchSize: 3, padding: 'max_length', sortByLength: false })
    const dynamic = await bert.encodeTexts(titles, { batchSize: 3 })
    expect(dynamic.seqLen).toBe(30)
    expect(Array.from(dynamic.inputIds)).toEqual(Array.from(fixed.inputIds))
    expect(Array.from(dynamic.attentionMask)).toEqual(Array.from(fixed.attentionMask))
    expect(worstAbs(dynamic.clsPerLayer, fixed.clsPerLayer)).toBeLessThanOrEqual(TOL)
    // each item alone (no other titles in its batch) gives its own row: the sort is undone
    const perItem = (bert.numLayers + 1) * bert.hiddenSize
    for (const i of [0, 2, titles.length - 4, titles.length - 1]) {
      const alone = await bert.encodeTexts([titles[i]])
      expect(worstAbs(dynamic.clsPerLayer.subarray(i * perItem, (i + 1) * perItem), alone.clsPerLayer)).toBeLessThanOrEqual(TOL)
    }
    // and the float64 reference fixture still holds for the fixture titles (1e-4, as backbones.test.ts)
    const expected = itemMajor(readExpected<BertExpected>('bert-tiny-a').cls_per_layer)
    expect(worstError(dynamic.clsPerLayer.subarray(0, expected.length), expected)).toBeLessThanOrEqual(1e-4)
  })

  it('reports progress in items done, whatever the order', async () => {
    const seen: number[] = []
    await bert.encodeTexts(titles, { batchSize: 4, onProgress: (done, total) => seen.push(done, total) })
    expect(seen).toEqual([4, 11, 8, 11, 11, 11])
  })
})

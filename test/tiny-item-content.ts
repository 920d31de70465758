// Item content for tiny random backbones (BERT vocab 50, ViT 32×32 images), shared by the tests of
// the fine-tuning baselines' item tower (backbone-towers.test.ts, two-pass-step.test.ts).
import { mulberry32, type ItemContent } from '@iisan/model'

/** Items 1..numItems: titles of 3–5 tokens (ids 4..48 after a [CLS] of 2), random 3×32×32 images for `withImage` only. */
export function tinyItemContent(numItems: number, seqLen: number, withImage: number[], seed = 3): ItemContent {
  const random = mulberry32(seed)
  const inputIds = new Int32Array((numItems + 1) * seqLen)
  const attentionMask = new Int32Array((numItems + 1) * seqLen)
  for (let item = 1; item <= numItems; item++) {
    const length = 3 + (item % 3)
    for (let t = 0; t < length; t++) {
      inputIds[item * seqLen + t] = t === 0 ? 2 : 4 + Math.floor(random() * 45)
      attentionMask[item * seqLen + t] = 1
    }
  }
  const images = new Map(withImage.map((item) => [item, Float32Array.from({ length: 3 * 32 * 32 }, () => random() * 2 - 1)]))
  return { numItems, text: { inputIds, attentionMask, seqLen }, image: (i) => images.get(i) ?? null }
}

// Shared by test/backbones*.test.ts: reads the reference fixtures in test/fixtures/backbones and
// turns their raw uint8 images into encoded files, so tests exercise the decode path too.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import sharp from 'sharp'

export const FIXTURES = path.resolve(import.meta.dirname, '../fixtures/backbones')

export const fixtureDir = (name: string): string => path.join(FIXTURES, name)

export interface BertExpected {
  texts: string[]
  input_ids: number[][]
  attention_mask: number[][]
  hidden_states: number[][][][]
  cls_per_layer: number[][][]
}

export interface VitExpected {
  images_u8_hwc: number[][][][]
  image_sizes_hw: [number, number][]
  resized_u8_hwc: number[][][][]
  pixel_values: number[][][][]
  hidden_states: number[][][][]
  cls_per_layer: number[][][]
  last_hidden_state: number[][][]
}

export function readExpected<T>(name: string): T {
  return JSON.parse(fs.readFileSync(path.join(fixtureDir(name), 'expected.json'), 'utf8')) as T
}

/** Worst |got − exp| / max(1, |exp|) — the fixtures' tolerance measure (must be ≤ 1e-4). */
export function worstError(got: ArrayLike<number>, expected: ArrayLike<number>): number {
  if (got.length !== expected.length) throw new Error(`length ${got.length} ≠ expected ${expected.length}`)
  let worst = 0
  for (let i = 0; i < expected.length; i++) {
    const e = Math.abs(got[i] - expected[i]) / Math.max(1, Math.abs(expected[i]))
    if (!(e <= worst)) worst = Number.isNaN(e) ? Infinity : e
  }
  return worst
}

/** Lossless PNG of fixture image i. */
export function fixturePng(exp: VitExpected, i: number): Promise<Buffer> {
  const [h, w] = exp.image_sizes_hw[i]
  return sharp(Buffer.from(exp.images_u8_hwc[i].flat(2)), { raw: { width: w, height: h, channels: 3 } })
    .png()
    .toBuffer()
}

/** [L + 1][n][d] → [n, L + 1, d] flat, the layout encodeTexts/encodeImages return. */
export function itemMajor(clsPerLayer: number[][][]): Float32Array {
  const L1 = clsPerLayer.length
  const n = clsPerLayer[0].length
  const d = clsPerLayer[0][0].length
  const out = new Float32Array(n * L1 * d)
  for (let l = 0; l < L1; l++) for (let i = 0; i < n; i++) out.set(clsPerLayer[l][i], (i * L1 + l) * d)
  return out
}

export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `iisan-${prefix}-`))
}

/** Copies a fixture folder's small files (not the weights) into dir. */
export function copyFixtureMeta(name: string, dir: string, skip: string[] = []): void {
  for (const f of fs.readdirSync(fixtureDir(name))) {
    if (f.endsWith('.safetensors') || f === 'expected.json' || f === 'tokenizer_cases.json' || skip.includes(f)) continue
    fs.copyFileSync(path.join(fixtureDir(name), f), path.join(dir, f))
  }
}

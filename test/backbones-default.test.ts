// The generated demo backbone pair: deterministic, idempotent, self-healing, usable.
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import sharp from 'sharp'
import { ensureDefaultBackbones, fingerprintBackbone, loadImageBackbone, loadTextBackbone } from '@iisan/backbones'
import { tempDir } from './fixtures-gen/backbone-fixtures.ts'

// Pinned: the fingerprint is the hidden-state cache key, so the generator must write the same
// bytes on every machine. Changing the generator on purpose means bumping GENERATOR_VERSION
// and these values.
const DEMO_BERT_FINGERPRINT = '418e447e9c0a8ce85f1ac6ea78755e46fbdbdaeca928964e77e5f509d3cbd37f'
const DEMO_VIT_FINGERPRINT = '2c72aefa63f4dc183ce3559dee61ce00aef7583eb46de9800d9ca39f931879a7'

const roots: string[] = []
const root = (): string => {
  const d = tempDir('demo')
  roots.push(d)
  return d
}
afterAll(() => {
  for (const d of roots) fs.rmSync(d, { recursive: true, force: true })
})

const cosine = (a: Float32Array, b: Float32Array): number => {
  let ab = 0
  let aa = 0
  let bb = 0
  for (let i = 0; i < a.length; i++) {
    ab += a[i] * b[i]
    aa += a[i] * a[i]
    bb += b[i] * b[i]
  }
  return ab / Math.sqrt(aa * bb)
}

describe('ensureDefaultBackbones', () => {
  const dir = root()

  it('writes HF-layout folders with the pinned fingerprints', async () => {
    const paths = await ensureDefaultBackbones(dir)
    expect(paths).toEqual({ text: path.join(dir, 'demo-bert'), image: path.join(dir, 'demo-vit') })
    expect(fs.readdirSync(paths.text).sort()).toEqual(['README.md', 'config.json', 'iisan-demo.json', 'model.safetensors', 'tokenizer_config.json', 'vocab.txt'])
    expect(fs.readdirSync(paths.image).sort()).toEqual(['README.md', 'config.json', 'iisan-demo.json', 'model.safetensors', 'preprocessor_config.json'])
    expect(fingerprintBackbone(paths.text)).toBe(DEMO_BERT_FINGERPRINT)
    expect(fingerprintBackbone(paths.image)).toBe(DEMO_VIT_FINGERPRINT)
  })

  it('reuses current folders and rewrites damaged ones', async () => {
    const paths = await ensureDefaultBackbones(dir)
    const weights = path.join(paths.text, 'model.safetensors')
    const before = fs.statSync(weights).mtimeMs
    await new Promise((r) => setTimeout(r, 20))
    await ensureDefaultBackbones(dir)
    expect(fs.statSync(weights).mtimeMs).toBe(before)

    fs.truncateSync(weights, 1000)
    fs.writeFileSync(path.join(paths.image, 'config.json'), '{"model_type": "vit", "hidden_size": 8}')
    await ensureDefaultBackbones(dir)
    expect(fingerprintBackbone(paths.text)).toBe(DEMO_BERT_FINGERPRINT)
    expect(fingerprintBackbone(paths.image)).toBe(DEMO_VIT_FINGERPRINT)
    expect(fs.readdirSync(dir).filter((f) => f.startsWith('.tmp'))).toEqual([])
  })

  it('loads as a small pair with input-dependent features', async () => {
    const paths = await ensureDefaultBackbones(dir)
    const text = await loadTextBackbone(paths.text)
    const image = await loadImageBackbone(paths.image)
    expect([text.numLayers, text.hiddenSize, image.numLayers, image.hiddenSize]).toEqual([4, 64, 4, 64])
    expect(text.fingerprint).toBe(DEMO_BERT_FINGERPRINT)
    expect(image.fingerprint).toBe(DEMO_VIT_FINGERPRINT)

    const titles = ['Digital Caliper 150mm Stainless Steel', 'Borosilicate Glass Beaker Set 50ml 100ml 250ml', 'Digital Caliper 150mm Stainless Steel']
    const enc = await text.encodeTexts(titles)
    const L1 = 5
    const last = (i: number): Float32Array => enc.clsPerLayer.slice((i * L1 + 4) * 64, (i * L1 + 5) * 64)
    expect(Array.from(last(0))).toEqual(Array.from(last(2)))
    expect(cosine(last(0), last(1))).toBeLessThan(0.95)

    const png = (seed: number): Promise<Buffer> =>
      sharp(Buffer.from(Array.from({ length: 40 * 30 * 3 }, (_, i) => (i * seed * 7919) % 256)), { raw: { width: 40, height: 30, channels: 3 } })
        .png()
        .toBuffer()
    const results = await image.encodeImages([await png(1), await png(2)])
    const cls = results.map((r) => {
      if (!r.ok) throw new Error(r.error)
      expect(r.cls).toHaveLength(L1 * 64)
      return r.cls.slice(4 * 64)
    })
    expect(cosine(cls[0], cls[1])).toBeLessThan(0.95)
    text.dispose()
    image.dispose()
  })

  it('is deterministic across folders', async () => {
    const other = await ensureDefaultBackbones(root())
    for (const f of ['model.safetensors', 'vocab.txt', 'config.json']) {
      expect(fs.readFileSync(path.join(other.text, f)).equals(fs.readFileSync(path.join(dir, 'demo-bert', f)))).toBe(true)
    }
    expect(fs.readFileSync(path.join(other.image, 'model.safetensors')).equals(fs.readFileSync(path.join(dir, 'demo-vit', 'model.safetensors')))).toBe(true)
  })
})

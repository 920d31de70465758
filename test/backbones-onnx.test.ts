// The ONNX Runtime backbones (issue 12) against the tfjs ones on the demo pair (the small
// generated BERT with bert-base-uncased's vocabulary, and ViT, that the platform starts with);
// how the runtime is chosen (BACKBONE_RUNTIME); the fallback where the addon does not load (a
// child process whose imports of onnxruntime-node fail); and what a checkpoint the graph cannot
// take gives. The float64 reference fixtures are checked on both runtimes in backbones.test.ts.
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import sharp from 'sharp'
import { BackboneConfigError, ensureDefaultBackbones, loadImageBackbone, loadTextBackbone, requestedRuntime, type DefaultBackbonePaths } from '@iisan/backbones'
import { copyFixtureMeta, fixtureDir, tempDir } from './fixtures-gen/backbone-fixtures.ts'
import { REPO_ROOT } from './helpers/db.ts'

const TOL = 1e-4
let demo: DefaultBackbonePaths
const roots: string[] = []

beforeAll(async () => {
  const root = tempDir('onnx-demo')
  roots.push(root)
  demo = await ensureDefaultBackbones(root)
})

afterAll(() => {
  for (const d of roots) fs.rmSync(d, { recursive: true, force: true })
})

const worstAbs = (a: Float32Array, b: Float32Array): number => {
  expect(a.length).toBe(b.length)
  let worst = 0
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]))
  return worst
}

describe('demo backbones: ONNX Runtime states equal the tfjs ones', () => {
  it('text: every layer at every position, and the [CLS] rows with dynamic padding', async () => {
    const titles = ['Carbide end mill 6 mm', 'pla', 'Digital oscilloscope, 100 MHz, 2 channels, with probes and a carrying case', 'a b c d e f g h']
    const onnx = await loadTextBackbone(demo.text, { runtime: 'onnx' })
    const tfjs = await loadTextBackbone(demo.text, { runtime: 'tfjs' })
    expect([onnx.runtime, tfjs.runtime]).toEqual(['onnx', 'tfjs'])
    expect(onnx.fingerprint).toBe(tfjs.fingerprint)

    const a = await onnx.hiddenStates(titles)
    const b = await tfjs.hiddenStates(titles)
    expect(a.hiddenStates.length).toBe((onnx.numLayers + 1) * titles.length * a.seqLen * onnx.hiddenSize)
    const worst = worstAbs(a.hiddenStates, b.hiddenStates)
    console.log(`demo-bert: worst |onnx − tfjs| over all positions ${worst.toExponential(2)}`)
    expect(worst).toBeLessThanOrEqual(TOL)

    // batches of 3 → the ragged last batch is 1 wide; each batch padded to its longest title
    const ca = await onnx.encodeTexts(titles, { batchSize: 3 })
    const cb = await tfjs.encodeTexts(titles, { batchSize: 3 })
    expect(worstAbs(ca.clsPerLayer, cb.clsPerLayer)).toBeLessThanOrEqual(TOL)
    onnx.dispose()
    tfjs.dispose()
  })

  it('image: every layer, last_hidden_state, and the [CLS] rows from image files', async () => {
    const onnx = await loadImageBackbone(demo.image, { runtime: 'onnx' })
    const tfjs = await loadImageBackbone(demo.image, { runtime: 'tfjs' })
    const images = await Promise.all(
      [0, 1, 2].map((i) => {
        const raw = Buffer.alloc(96 * 64 * 3)
        for (let p = 0; p < raw.length; p++) raw[p] = (p * (i + 5) + (p >> 7) * 13) & 255
        return sharp(raw, { raw: { width: 96, height: 64, channels: 3 } }).png().toBuffer()
      }),
    )
    const pixels = await Promise.all(images.map((img) => onnx.preprocess(img)))
    const plane = pixels[0].pixelValues.length
    const batch = new Float32Array(plane * pixels.length)
    pixels.forEach((p, i) => batch.set(p.pixelValues, i * plane))
    const a = await onnx.hiddenStates(batch, pixels.length)
    const b = await tfjs.hiddenStates(batch, pixels.length)
    const worst = worstAbs(a.hiddenStates, b.hiddenStates)
    console.log(`demo-vit: worst |onnx − tfjs| over all positions ${worst.toExponential(2)}`)
    expect(worst).toBeLessThanOrEqual(TOL)
    expect(worstAbs(a.lastHiddenState, b.lastHiddenState)).toBeLessThanOrEqual(TOL)

    const ra = await onnx.encodeImages([...images, Buffer.from('not an image')], { batchSize: 2 })
    const rb = await tfjs.encodeImages(images, { batchSize: 2 })
    expect(ra.map((r) => r.ok)).toEqual([true, true, true, false])
    rb.forEach((r, i) => {
      const o = ra[i]
      if (!r.ok || !o.ok) throw new Error('encoding failed')
      expect(worstAbs(o.cls, r.cls)).toBeLessThanOrEqual(TOL)
    })
    onnx.dispose()
    tfjs.dispose()
  })
})

describe('choosing the runtime', () => {
  it('BACKBONE_RUNTIME: onnx or tfjs, any case; unset means the default; anything else is refused by name', () => {
    expect(requestedRuntime({})).toBeUndefined()
    expect(requestedRuntime({ BACKBONE_RUNTIME: '' })).toBeUndefined()
    expect(requestedRuntime({ BACKBONE_RUNTIME: 'ONNX' })).toBe('onnx')
    expect(requestedRuntime({ BACKBONE_RUNTIME: 'tfjs' })).toBe('tfjs')
    expect(() => requestedRuntime({ BACKBONE_RUNTIME: 'torch' })).toThrow(BackboneConfigError)
    expect(() => requestedRuntime({ BACKBONE_RUNTIME: 'torch' })).toThrow(/BACKBONE_RUNTIME=torch is not supported \(expected onnx or tfjs\)/)
  })

  it('defaults to ONNX Runtime where its addon loads (here)', async () => {
    const saved = process.env.BACKBONE_RUNTIME
    delete process.env.BACKBONE_RUNTIME
    try {
      const bb = await loadTextBackbone(fixtureDir('bert-tiny-a'))
      expect(bb.runtime).toBe('onnx')
      bb.dispose()
      process.env.BACKBONE_RUNTIME = 'tfjs'
      const tf = await loadImageBackbone(fixtureDir('vit-tiny-a'))
      expect(tf.runtime).toBe('tfjs')
      tf.dispose()
    } finally {
      if (saved === undefined) delete process.env.BACKBONE_RUNTIME
      else process.env.BACKBONE_RUNTIME = saved
    }
  })
})

describe('a platform where onnxruntime-node does not load', () => {
  const run = (runtime: string) =>
    spawnSync(
      process.execPath,
      [
        '--import',
        './test/helpers/without-onnxruntime.mjs',
        '--import',
        'tsx',
        '--input-type=module',
        '-e',
        `import { loadTextBackbone } from '@iisan/backbones'
const bb = await loadTextBackbone(${JSON.stringify(fixtureDir('bert-tiny-a'))})
const enc = await bb.encodeTexts(['a title'])
console.log(JSON.stringify({ runtime: bb.runtime, values: enc.clsPerLayer.length }))`,
      ],
      { cwd: REPO_ROOT, encoding: 'utf8', env: { ...process.env, BACKBONE_RUNTIME: runtime } },
    )

  it('by default: one warning naming the reason, then the backbones run on tfjs', () => {
    const r = run('')
    expect(r.status, r.stderr).toBe(0)
    const c = JSON.parse(fs.readFileSync(path.join(fixtureDir('bert-tiny-a'), 'config.json'), 'utf8'))
    expect(JSON.parse(r.stdout.trim().split('\n').pop()!)).toEqual({ runtime: 'tfjs', values: (c.num_hidden_layers + 1) * c.hidden_size })
    const warnings = r.stderr.split('\n').filter((l) => l.startsWith('backbones:'))
    expect(warnings).toEqual([expect.stringMatching(/onnxruntime-node does not load \(no onnxruntime-node binary for this platform\); running the backbones on tfjs/)])
  })

  it('BACKBONE_RUNTIME=onnx: an error, not a silent fallback', () => {
    const r = run('onnx')
    expect(r.status).not.toBe(0)
    expect(r.stderr).toMatch(/BACKBONE_RUNTIME=onnx\), but onnxruntime-node does not load here: no onnxruntime-node binary/)
  })
})

describe('checkpoints the ONNX graph cannot take give a clear error', () => {
  it('an unsupported activation or a missing tensor, before any graph is built', async () => {
    const dir = tempDir('onnx-bad')
    roots.push(dir)
    copyFixtureMeta('bert-tiny-a', dir)
    const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'))
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...config, hidden_act: 'gelu_pytorch_tanh' }))
    fs.copyFileSync(path.join(fixtureDir('bert-tiny-a'), 'model.safetensors'), path.join(dir, 'model.safetensors'))
    await expect(loadTextBackbone(dir, { runtime: 'onnx' })).rejects.toThrow(/hidden_act "gelu_pytorch_tanh" is not supported/)
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...config, num_hidden_layers: config.num_hidden_layers + 1 }))
    await expect(loadTextBackbone(dir, { runtime: 'onnx' })).rejects.toThrow(/missing tensor "encoder\.layer\.\d+\.attention\.self\.query\.weight"/)
  })

  it('token ids outside the vocabulary and a wrong pixel count name the problem', async () => {
    const text = await loadTextBackbone(fixtureDir('bert-tiny-a'), { runtime: 'onnx' })
    const batch = text.tokenize(['a title'])
    batch.inputIds[1] = text.config.vocabSize
    await expect(text.hiddenStates(batch)).rejects.toThrow(/token id \d+ is outside the embedding table/)
    text.dispose()
    const image = await loadImageBackbone(fixtureDir('vit-tiny-a'), { runtime: 'onnx' })
    await expect(image.hiddenStates(new Float32Array(10), 1)).rejects.toThrow(/pixel array has 10 values/)
    image.dispose()
  })
})
